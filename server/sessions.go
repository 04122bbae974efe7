package server

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"tether/rpc"
	"tether/structs"
)

// sessionShards splits the registry so that calls to different nodes do
// not meet on one lock: every client call a server makes reads it.
const sessionShards = 64

// sessionRegistry maps node IDs to the live session each node dialed in on.
// A session binds to one node, once; when a node has several sessions the
// newest binding wins; a binding is dropped the moment its session closes.
// Entries are keyed by session identity, never by address text. The
// zero value is not usable; call newSessionRegistry.
type sessionRegistry struct {
	seed   maphash.Seed
	shards [sessionShards]sessionShard
	bound  sync.Map // session ID (uint64) → node ID (string)
	n      atomic.Int64

	// Counters for odd branches.
	rebinds      atomic.Uint64 // a node's binding moved to a newer session
	bindings     atomic.Uint64 // bindings created (a node's new session here)
	staleDropped atomic.Uint64 // bindings dropped because their session closed
}

// sessionShard holds the bindings of the nodes that hash to it.
type sessionShard struct {
	mu     sync.Mutex
	byNode map[string]binding
	_      [40]byte // keep neighbouring shards' locks off one cache line
}

// binding is a node's current session and the state index of its binding
// (the raft index of the registration, or of the state the binding server
// had: it orders the bindings of one node across servers, see routing.go).
type binding struct {
	sess *rpc.Session
	idx  uint64
}

func newSessionRegistry() *sessionRegistry {
	r := &sessionRegistry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].byNode = make(map[string]binding)
	}
	return r
}

func (r *sessionRegistry) shard(nodeID string) *sessionShard {
	return &r.shards[maphash.String(r.seed, nodeID)%sessionShards]
}

// bind binds sess to nodeID at state index idx. It refuses a session
// already bound to another node; binding the same pair again only raises
// its index (a newer session of the node may have taken over since; the
// older does not take back). The returned bool is true when this call
// created the binding (the caller then watches the session for close).
func (r *sessionRegistry) bind(nodeID string, sess *rpc.Session, idx uint64) (bool, error) {
	if sess == nil || sess.IsClosed() {
		return false, nil
	}
	owner, loaded := r.bound.LoadOrStore(sess.ID(), nodeID)
	if loaded && owner.(string) != nodeID {
		return false, structs.NewError(403, "session already bound to another node")
	}
	sh := r.shard(nodeID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, had := sh.byNode[nodeID]
	if loaded {
		if old.sess == sess && idx > old.idx {
			sh.byNode[nodeID] = binding{sess: sess, idx: idx}
		}
		return false, nil
	}
	if had && old.sess != sess {
		r.rebinds.Add(1)
	}
	if !had {
		r.n.Add(1)
	}
	r.bindings.Add(1)
	sh.byNode[nodeID] = binding{sess: sess, idx: idx}
	return true, nil
}

// unbind removes sess; if it is its node's current session, the node loses
// its path until it binds another.
func (r *sessionRegistry) unbind(sess *rpc.Session) {
	v, ok := r.bound.LoadAndDelete(sess.ID())
	if !ok {
		return
	}
	nodeID := v.(string)
	sh := r.shard(nodeID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.byNode[nodeID].sess == sess {
		delete(sh.byNode, nodeID)
		r.n.Add(-1)
		r.staleDropped.Add(1)
	}
}

// lookup returns the node's live session and the index of its binding, or
// nil.
func (r *sessionRegistry) lookup(nodeID string) (*rpc.Session, uint64) {
	sh := r.shard(nodeID)
	sh.mu.Lock()
	b := sh.byNode[nodeID]
	sh.mu.Unlock()
	if b.sess != nil && b.sess.IsClosed() {
		r.unbind(b.sess)
		return nil, 0
	}
	return b.sess, b.idx
}

// get returns the node's live session, or nil.
func (r *sessionRegistry) get(nodeID string) *rpc.Session {
	sess, _ := r.lookup(nodeID)
	return sess
}

// nodeOf returns the node bound to sess, or "".
func (r *sessionRegistry) nodeOf(sess *rpc.Session) string {
	if sess == nil {
		return ""
	}
	v, _ := r.bound.Load(sess.ID())
	s, _ := v.(string)
	return s
}

// nodes returns the IDs of the nodes bound here, one shard at a time.
func (r *sessionRegistry) nodes() []string {
	out := make([]string, 0, r.count())
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for id := range sh.byNode {
			out = append(out, id)
		}
		sh.mu.Unlock()
	}
	return out
}

// count returns how many nodes have a live session here.
func (r *sessionRegistry) count() int { return int(r.n.Load()) }

// nodeIDs returns the nodes bound here, one shard lock at a time.
func (r *sessionRegistry) nodeIDs() []string {
	ids := make([]string, 0, r.count())
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for id := range sh.byNode {
			ids = append(ids, id)
		}
		sh.mu.Unlock()
	}
	return ids
}
