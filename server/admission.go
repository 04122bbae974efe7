package server

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"

	"tether/structs"
)

// Admission of node sessions (DESIGN.md "No thundering herd").
//
// When a server dies, its nodes reconnect to the others at once; on a
// cold start the whole fleet registers at once. A server admits new node
// sessions (a registration, or a heartbeat on a session not yet bound to
// its node) at a bounded rate, keyed on the node, never on the source
// address (a fleet behind one NAT address has one):
//
//   - a server-wide token bucket (AdmissionRate, AdmissionBurst);
//   - one bucket per node (NodeAdmissionInterval, NodeAdmissionBurst), so
//     that a node reconnecting in a tight loop is slowed down and cannot
//     use up the server-wide bucket. The per-node buckets live in a
//     bounded LRU (AdmissionCacheSize), sharded, so they cannot grow
//     without bound whatever IDs callers claim. A known node's secret is
//     checked before its bucket is touched, so nobody can drain another
//     node's bucket.
//
// Over the limit the node is told to come back later: a 429 carrying a
// retry-after hint (structs.TooManyRequests), never a queue. When the
// server-wide bucket is empty the refused node is given a slot instead:
// the hint is the time its reserved token becomes available, so a herd of
// refused nodes comes back spread over exactly the time the rate needs to
// take them, not all at once again. A node that comes back at (or after)
// its slot is admitted on it; a slot never claimed expires. No slot is
// handed out more than AdmissionMaxWait ahead: past that the node is only
// told to come back then.

const admissionShards = 16

// admission is a server's admission control. Safe for concurrent use.
type admission struct {
	global    *rate.Limiter
	nodeEvery rate.Limit
	nodeBurst int
	maxWait   time.Duration

	seed   maphash.Seed
	shards [admissionShards]admissionShard

	admitted      atomic.Uint64 // sessions admitted
	refusedNode   atomic.Uint64 // refused by the node's own bucket
	refusedServer atomic.Uint64 // refused by the server-wide bucket (slot handed out or not)
	slotsUsed     atomic.Uint64 // admitted on a slot handed out earlier
}

type admissionShard struct {
	mu    sync.Mutex
	nodes *simplelru.LRU[string, *nodeAdmission]
}

// nodeAdmission is one node's bucket and the slot it was given, if any.
type nodeAdmission struct {
	lim  *rate.Limiter
	slot time.Time // zero: none
}

// slotExpiry is how long past its time a slot stays claimable.
const slotExpiry = 30 * time.Second

func newAdmission(cfg *Config) *admission {
	a := &admission{
		global:    rate.NewLimiter(rate.Limit(cfg.AdmissionRate), cfg.AdmissionBurst),
		nodeEvery: rate.Every(cfg.NodeAdmissionInterval),
		nodeBurst: cfg.NodeAdmissionBurst,
		maxWait:   cfg.AdmissionMaxWait,
		seed:      maphash.MakeSeed(),
	}
	if cfg.AdmissionRate <= 0 {
		a.global = rate.NewLimiter(rate.Inf, 0)
	}
	if cfg.NodeAdmissionInterval <= 0 {
		a.nodeEvery = rate.Inf
	}
	per := cfg.AdmissionCacheSize / admissionShards
	if per < 1 {
		per = 1
	}
	for i := range a.shards {
		l, _ := simplelru.NewLRU[string, *nodeAdmission](per, nil) // size > 0: no error
		a.shards[i].nodes = l
	}
	return a
}

// admit decides whether nodeID may open a session now; when not, the
// error is a 429 whose hint says when to come back.
func (a *admission) admit(nodeID string, now time.Time) error {
	sh := &a.shards[maphash.String(a.seed, nodeID)%admissionShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	na, ok := sh.nodes.Get(nodeID)
	if !ok {
		na = &nodeAdmission{lim: rate.NewLimiter(a.nodeEvery, a.nodeBurst)}
		sh.nodes.Add(nodeID, na)
	}
	if !na.slot.IsZero() {
		switch {
		case now.Before(na.slot):
			a.refusedServer.Add(1)
			return tooManySessions(na.slot.Sub(now))
		case now.Sub(na.slot) <= slotExpiry:
			na.slot = time.Time{}
			a.slotsUsed.Add(1)
			a.admitted.Add(1)
			return nil
		}
		na.slot = time.Time{} // never claimed: the token is spent
	}
	nr := na.lim.ReserveN(now, 1)
	if d := nr.DelayFrom(now); !nr.OK() || d > 0 {
		nr.CancelAt(now)
		a.refusedNode.Add(1)
		if !nr.OK() {
			d = a.maxWait
		}
		return structs.TooManyRequests(d, "node %s reconnects too often", nodeID)
	}
	gr := a.global.ReserveN(now, 1)
	d := gr.DelayFrom(now)
	switch {
	case gr.OK() && d == 0:
		a.admitted.Add(1)
		return nil
	case gr.OK() && d <= a.maxWait:
		na.slot = now.Add(d) // the token is the node's at its slot
		a.refusedServer.Add(1)
		return tooManySessions(d)
	default:
		gr.CancelAt(now)
		nr.CancelAt(now)
		a.refusedServer.Add(1)
		return tooManySessions(a.maxWait)
	}
}

func tooManySessions(d time.Duration) error {
	return structs.TooManyRequests(d, "server admits no more node sessions now")
}

// size returns how many nodes have a bucket.
func (a *admission) size() int {
	n := 0
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		n += sh.nodes.Len()
		sh.mu.Unlock()
	}
	return n
}
