package server

import (
	"sync"
	"time"
)

// heartbeats keeps one timer per node; a node whose timer fires is marked
// down by onExpire. Timers are reset by registrations and heartbeats.
type heartbeats struct {
	ttl      time.Duration
	grace    time.Duration
	onExpire func(nodeID string)

	mu      sync.Mutex
	timers  map[string]*time.Timer
	stopped bool
}

func newHeartbeats(ttl, grace time.Duration, onExpire func(string)) *heartbeats {
	return &heartbeats{ttl: ttl, grace: grace, onExpire: onExpire, timers: make(map[string]*time.Timer)}
}

// reset (re)arms the node's timer with TTL plus grace. Only the leader
// keeps timers.
func (h *heartbeats) reset(nodeID string) { h.resetFor(nodeID, h.ttl+h.grace) }

// resetFor (re)arms the node's timer to fire after d.
func (h *heartbeats) resetFor(nodeID string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	if t, ok := h.timers[nodeID]; ok {
		t.Reset(d)
		return
	}
	h.timers[nodeID] = time.AfterFunc(d, func() { h.expire(nodeID) })
}

func (h *heartbeats) expire(nodeID string) {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	delete(h.timers, nodeID)
	h.mu.Unlock()
	h.onExpire(nodeID)
}

// clear disarms every timer (leadership lost); later resets arm again.
func (h *heartbeats) clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, t := range h.timers {
		t.Stop()
		delete(h.timers, id)
	}
}

// armed reports how many nodes have a timer.
func (h *heartbeats) armed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.timers)
}

// stop disarms every timer; later resets are ignored.
func (h *heartbeats) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for id, t := range h.timers {
		t.Stop()
		delete(h.timers, id)
	}
}
