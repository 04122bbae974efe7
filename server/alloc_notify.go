package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/structs"
)

// Pushing allocation changes to nodes. A node does not keep a blocking
// query parked on its server (a handler goroutine, its stack and a yamux
// stream per node, for ever); instead, when the FSM applies a write to a
// node's allocations, the server holding that node's session tells the
// node (Client.AllocsChanged, carrying the node's allocation index) and
// the node pulls (Node.GetClientAllocs with no wait). Every server applies
// the log, so each tells the nodes bound to it: no leader coordination. A
// push that is lost is made good by the allocation index on the next
// heartbeat or registration answer.

// allocNotifyWorkers bounds the notifications in flight on one server:
// placing a job of 10,000 allocations starts at most this many goroutines,
// and they exist only while notifications are queued.
const allocNotifyWorkers = 16

// allocNotifyTimeout bounds one notification call.
const allocNotifyTimeout = 5 * time.Second

// allocNotifier coalesces and sends allocation-change notifications. Per
// node at most one is in flight and one pending (the pending one carries
// the highest index announced since); enqueue never blocks.
type allocNotifier struct {
	ctx    context.Context
	send   func(ctx context.Context, nodeID string, idx uint64) error
	logger hclog.Logger

	mu       sync.Mutex
	closed   bool
	pending  map[string]uint64 // index to announce, per node not yet sent
	inflight map[string]bool   // nodes with a notification in flight
	queue    []string          // pending nodes not in flight, in order
	workers  int
	wg       sync.WaitGroup

	sent      atomic.Uint64 // notifications sent
	coalesced atomic.Uint64 // announcements folded into a pending one
	failed    atomic.Uint64 // notifications that failed (left to heartbeats)
}

func newAllocNotifier(ctx context.Context, logger hclog.Logger, send func(ctx context.Context, nodeID string, idx uint64) error) *allocNotifier {
	return &allocNotifier{
		ctx:      ctx,
		send:     send,
		logger:   logger,
		pending:  map[string]uint64{},
		inflight: map[string]bool{},
	}
}

// enqueue announces that node's allocations changed at idx. It returns at
// once; a worker sends the notification.
func (n *allocNotifier) enqueue(nodeID string, idx uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	if p, ok := n.pending[nodeID]; ok {
		n.pending[nodeID] = max(p, idx)
		n.coalesced.Add(1)
		return
	}
	n.pending[nodeID] = idx
	if n.inflight[nodeID] {
		return // requeued when the one in flight is done
	}
	n.queue = append(n.queue, nodeID)
	if n.workers < allocNotifyWorkers {
		n.workers++
		n.wg.Add(1)
		go n.work()
	}
}

// work sends queued notifications until none is left.
func (n *allocNotifier) work() {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		if n.closed || len(n.queue) == 0 {
			n.workers--
			n.mu.Unlock()
			return
		}
		nodeID := n.queue[0]
		n.queue[0] = ""
		n.queue = n.queue[1:]
		if len(n.queue) == 0 {
			n.queue = nil // let a burst's backing array go
		}
		idx := n.pending[nodeID]
		delete(n.pending, nodeID)
		n.inflight[nodeID] = true
		n.mu.Unlock()

		ctx, cancel := context.WithTimeout(n.ctx, allocNotifyTimeout)
		err := n.send(ctx, nodeID, idx)
		cancel()
		if err != nil {
			n.failed.Add(1)
			if n.ctx.Err() == nil {
				n.logger.Debug("allocation change notification failed; the node catches up on its next heartbeat", "node_id", nodeID, "index", idx, "error", err)
			}
		} else {
			n.sent.Add(1)
		}

		n.mu.Lock()
		delete(n.inflight, nodeID)
		if _, ok := n.pending[nodeID]; ok && !n.closed {
			n.queue = append(n.queue, nodeID)
		}
		n.mu.Unlock()
	}
}

// stop drops what is queued and waits for the workers; the notifier's
// context must be done (or the calls in flight end by their timeout).
func (n *allocNotifier) stop() {
	n.mu.Lock()
	n.closed = true
	n.queue = nil
	clear(n.pending)
	n.mu.Unlock()
	n.wg.Wait()
}

// allocsUpserted is the state store's hook (StateStore.allocsUpserted),
// called from the FSM's apply: it queues a notification for every node
// of allocs whose session is bound here, and nothing for the others.
func (s *Server) allocsUpserted(allocs []*structs.Allocation, idx uint64) {
	var last string
	for _, a := range allocs {
		if a.NodeID == "" || a.NodeID == last {
			continue
		}
		last = a.NodeID
		if s.sessions.get(a.NodeID) == nil {
			continue
		}
		s.allocNotify.enqueue(a.NodeID, idx)
	}
}

// allocsRestored is the FSM's hook after a snapshot replaced the state
// (a follower far behind, a restart): the allocation writes in between
// were never applied here one by one, so every node bound here is told
// its index (a node that has it already does not pull).
func (s *Server) allocsRestored() {
	for _, id := range s.sessions.nodes() {
		s.allocNotify.enqueue(id, s.store.NodeAllocIndex(id))
	}
}

// notifyAllocsChanged sends Client.AllocsChanged on the node's session, if
// it is still bound here.
func (s *Server) notifyAllocsChanged(ctx context.Context, nodeID string, idx uint64) error {
	sess := s.sessions.get(nodeID)
	if sess == nil {
		return nil
	}
	return sess.Call(ctx, structs.MethodClientAllocsChanged, &structs.AllocsChangedRequest{Index: idx}, &structs.GenericResponse{})
}
