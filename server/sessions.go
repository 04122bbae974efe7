package server

import (
	"sync"
	"sync/atomic"

	"tether/rpc"
	"tether/structs"
)

// sessionRegistry maps node IDs to the live session each node dialed in on.
// A session binds to one node, once; when a node has several sessions the
// newest binding wins; a binding is dropped the moment its session closes.
// Entries are keyed by session identity, never by address text.
type sessionRegistry struct {
	mu     sync.Mutex
	byNode map[string]*rpc.Session
	bound  map[uint64]string // session ID → node ID
	index  map[uint64]uint64 // session ID → state index of its binding

	// Counters for odd branches.
	rebinds      atomic.Uint64 // a node's binding moved to a newer session
	staleDropped atomic.Uint64 // bindings dropped because their session closed
}

func newSessionRegistry() *sessionRegistry {
	return &sessionRegistry{
		byNode: make(map[string]*rpc.Session),
		bound:  make(map[uint64]string),
		index:  make(map[uint64]uint64),
	}
}

// bind binds sess to nodeID at state index idx (the raft index of the
// registration, or of the state the binding server had: it orders the
// bindings of one node across servers, see routing.go). It refuses a
// session already bound to another node; binding the same pair again only
// raises its index. The returned bool is true when this call created the
// binding (the caller then watches the session for close).
func (r *sessionRegistry) bind(nodeID string, sess *rpc.Session, idx uint64) (bool, error) {
	if sess == nil || sess.IsClosed() {
		return false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if owner, ok := r.bound[sess.ID()]; ok {
		if owner != nodeID {
			return false, structs.NewError(403, "session already bound to another node")
		}
		// Already bound: make sure it is still the node's current session
		// (a newer one may have taken over; the older does not take back).
		if idx > r.index[sess.ID()] {
			r.index[sess.ID()] = idx
		}
		return false, nil
	}
	r.bound[sess.ID()] = nodeID
	r.index[sess.ID()] = idx
	if old, ok := r.byNode[nodeID]; ok && old != sess {
		r.rebinds.Add(1)
	}
	r.byNode[nodeID] = sess
	return true, nil
}

// unbind removes sess; if it is its node's current session, the node loses
// its path until it binds another.
func (r *sessionRegistry) unbind(sess *rpc.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	nodeID, ok := r.bound[sess.ID()]
	if !ok {
		return
	}
	delete(r.bound, sess.ID())
	delete(r.index, sess.ID())
	if r.byNode[nodeID] == sess {
		delete(r.byNode, nodeID)
		r.staleDropped.Add(1)
	}
}

// get returns the node's live session, or nil.
func (r *sessionRegistry) get(nodeID string) *rpc.Session {
	r.mu.Lock()
	sess := r.byNode[nodeID]
	r.mu.Unlock()
	if sess != nil && sess.IsClosed() {
		r.unbind(sess)
		return nil
	}
	return sess
}

// lookup returns the node's live session and the index of its binding, or
// nil.
func (r *sessionRegistry) lookup(nodeID string) (*rpc.Session, uint64) {
	sess := r.get(nodeID)
	if sess == nil {
		return nil, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return sess, r.index[sess.ID()]
}

// nodeOf returns the node bound to sess, or "".
func (r *sessionRegistry) nodeOf(sess *rpc.Session) string {
	if sess == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bound[sess.ID()]
}

// count returns how many nodes have a live session here.
func (r *sessionRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byNode)
}
