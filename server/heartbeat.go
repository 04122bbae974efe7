package server

import (
	"math/rand/v2"
	"sync"
	"time"
)

// heartbeats keeps one timer per node on the leader; a node whose timer
// fires is marked down by onExpire. Timers are reset by registrations and
// heartbeats.
//
// The TTL handed to a node grows with the fleet, Nomad's way: max(minTTL,
// nodes/rate), plus a random stagger of up to one TTL, so the leader sees
// about rate heartbeats a second whatever the number of nodes. The lock is
// one mutex around a map: a reset is a map lookup and a timer reset, and at
// rate heartbeats a second (50 by default) it is nowhere near contended;
// the node count is len of that map, O(1).
type heartbeats struct {
	minTTL   time.Duration
	rate     int
	grace    time.Duration
	failover time.Duration
	onExpire func(nodeID string)

	mu      sync.Mutex
	nodes   map[string]*nodeTimer
	leading bool // armAll ran: this leader's view of the TTLs is complete
	stopped bool
}

// nodeTimer is the leader's in-memory state of one node.
type nodeTimer struct {
	t *time.Timer

	// unchangedAt is the commit index at which this leader last accepted
	// a registration of the node without writing it (0: none). See
	// registerNodeLeader: two such registrations must not share an index.
	unchangedAt uint64
}

func newHeartbeats(cfg *Config, onExpire func(string)) *heartbeats {
	return &heartbeats{
		minTTL:   cfg.MinHeartbeatTTL,
		rate:     cfg.MaxHeartbeatsPerSecond,
		grace:    cfg.HeartbeatGrace,
		failover: cfg.FailoverHeartbeatTTL,
		onExpire: onExpire,
		nodes:    make(map[string]*nodeTimer),
	}
}

// heartbeatTTL is the TTL, before stagger, for a fleet of n nodes:
// max(minTTL, n/rate). A rate of zero or less means minTTL.
func heartbeatTTL(minTTL time.Duration, rate, n int) time.Duration {
	if rate <= 0 || n <= 0 {
		return minTTL
	}
	if d := time.Duration(n) * time.Second / time.Duration(rate); d > minTTL {
		return d
	}
	return minTTL
}

// staggerTTL adds a random stagger of up to one TTL: the result is in
// [ttl, 2·ttl). Nodes registered in one burst (a leader change, a server
// restart) so spread their heartbeats instead of arriving in step.
func staggerTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return ttl
	}
	return ttl + rand.N(ttl)
}

// reset (re)arms the node's timer and returns the TTL to hand the node:
// the fleet's TTL with stagger; the timer fires after that plus grace.
// Only the leader keeps timers; after stop it arms nothing and returns
// the minimum TTL.
func (h *heartbeats) reset(nodeID string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.nodes)
	if _, ok := h.nodes[nodeID]; !ok {
		n++ // count the node being armed
	}
	ttl := staggerTTL(heartbeatTTL(h.minTTL, h.rate, n))
	h.armLocked(nodeID, ttl+h.grace)
	return ttl
}

// armLocked (re)arms the node's timer to fire after d.
func (h *heartbeats) armLocked(nodeID string, d time.Duration) *nodeTimer {
	if h.stopped {
		return nil
	}
	if nt, ok := h.nodes[nodeID]; ok {
		nt.t.Reset(d)
		return nt
	}
	nt := &nodeTimer{}
	nt.t = time.AfterFunc(d, func() { h.expire(nodeID, nt) })
	h.nodes[nodeID] = nt
	return nt
}

// failoverTTL is the TTL a new leader gives every known node: the
// configured FailoverHeartbeatTTL, but never less than the longest TTL
// the old leader may have handed out for n nodes (2·TTL with stagger)
// plus grace, so a large fleet is not marked down before its nodes could
// have heartbeated even once.
func (h *heartbeats) failoverTTL(n int) time.Duration {
	d := h.failover
	if longest := 2*heartbeatTTL(h.minTTL, h.rate, n) + h.grace; d < longest {
		d = longest
	}
	return d
}

// armAll arms every listed node at the failover TTL and marks the
// leader's view complete. It runs once per term, before the leader
// accepts unchanged registrations without a write.
func (h *heartbeats) armAll(nodeIDs []string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.failoverTTL(len(nodeIDs))
	for _, id := range nodeIDs {
		h.armLocked(id, d)
	}
	h.leading = !h.stopped
	return d
}

// resetUnchanged is reset for a registration that the leader accepts
// without a write, at commit index commit. It reports false, and changes
// nothing, when that may not be: the leader's view is not complete yet
// (armAll has not run this term), the node has no timer (it expired), or
// an earlier unchanged registration of the node already used commit — the
// caller then writes the node. See bindOrderUnchanged.
func (h *heartbeats) resetUnchanged(nodeID string, commit uint64) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nt, ok := h.nodes[nodeID]
	if !h.leading || h.stopped || !ok || commit <= nt.unchangedAt {
		return 0, false
	}
	nt.unchangedAt = commit
	ttl := staggerTTL(heartbeatTTL(h.minTTL, h.rate, len(h.nodes)))
	nt.t.Reset(ttl + h.grace)
	return ttl, true
}

func (h *heartbeats) expire(nodeID string, nt *nodeTimer) {
	h.mu.Lock()
	if h.stopped || h.nodes[nodeID] != nt {
		// Stopped, or cleared and re-armed after the timer had fired.
		h.mu.Unlock()
		return
	}
	delete(h.nodes, nodeID)
	h.mu.Unlock()
	h.onExpire(nodeID)
}

// clear disarms every timer (leadership lost); later resets arm again.
func (h *heartbeats) clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leading = false
	for id, nt := range h.nodes {
		nt.t.Stop()
		delete(h.nodes, id)
	}
}

// armed reports how many nodes have a timer.
func (h *heartbeats) armed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.nodes)
}

// stop disarms every timer; later resets are ignored.
func (h *heartbeats) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.leading = false
	for id, nt := range h.nodes {
		nt.t.Stop()
		delete(h.nodes, id)
	}
}
