package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// notifierIdle reports whether n has nothing queued, pending or in flight.
func notifierIdle(n *allocNotifier) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.queue) == 0 && len(n.pending) == 0 && len(n.inflight) == 0 && n.workers == 0
}

func waitIdle(t *testing.T, n *allocNotifier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !notifierIdle(n) {
		if time.Now().After(deadline) {
			t.Fatal("notifier did not drain")
		}
		<-time.After(2 * time.Millisecond) // polling interval; the condition decides
	}
}

// TestAllocNotify_BurstOncePerNode writes allocations through raft for a
// node whose session is bound here, for one bound elsewhere, and as a
// node's own status report: the bound node is told once for the first
// write and once for the whole burst that came while that call was in
// flight (with the burst's last index); the others are told nothing; the
// FSM never waits for a notification.
func TestAllocNotify_BurstOncePerNode(t *testing.T) {
	s := newACLServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		mu      sync.Mutex
		got     []uint64
		release = make(chan struct{})
		calls   = make(chan struct{}, 16)
	)
	nodeMux := rpc.NewMux()
	rpc.HandleUnary(nodeMux, structs.MethodClientAllocsChanged, func(ctx context.Context, req *structs.AllocsChangedRequest, resp *structs.GenericResponse) error {
		mu.Lock()
		got = append(got, req.Index)
		first := len(got) == 1
		mu.Unlock()
		calls <- struct{}{}
		if first {
			<-release // hold the first notification in flight
		}
		return nil
	})
	local := &structs.Node{ID: structs.GenerateUUID(), Status: structs.NodeStatusReady}
	away := &structs.Node{ID: structs.GenerateUUID(), Status: structs.NodeStatusReady}
	for _, n := range []*structs.Node{local, away} {
		if _, err := s.raftApply(ctx, msgUpsertNode, &upsertNodeCmd{Node: n}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.sessions.bind(local.ID, nodeSession(t, nodeMux), 1); err != nil {
		t.Fatal(err)
	}
	alloc := func(node string) *structs.Allocation {
		return &structs.Allocation{ID: structs.GenerateUUID(), Namespace: "default", JobID: "j", NodeID: node, DesiredStatus: structs.AllocDesiredStatusRun}
	}
	upsert := func(allocs ...*structs.Allocation) uint64 {
		t.Helper()
		idx, err := s.raftApply(ctx, msgUpsertAllocs, &upsertAllocsCmd{Allocs: allocs})
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}

	upsert(alloc(local.ID))
	select {
	case <-calls:
	case <-ctx.Done():
		t.Fatal("no notification for the first write")
	}
	// A burst while the first is in flight: each raftApply returns once
	// the FSM applied it, so none of them waited for the node.
	var last uint64
	mine := make([]*structs.Allocation, 0, 100)
	for range 100 {
		a := alloc(local.ID)
		mine = append(mine, a)
		last = upsert(a, alloc(away.ID))
	}
	if s.allocNotify.coalesced.Load() < 98 {
		t.Fatalf("coalesced %d announcements; want at least 98", s.allocNotify.coalesced.Load())
	}
	close(release)
	waitIdle(t, s.allocNotify)

	// The node's own status reports move nothing it has to act on.
	if _, err := s.raftApply(ctx, msgUpdateAllocsFromClient, &allocClientUpdateCmd{NodeID: local.ID, Allocs: []*structs.Allocation{{ID: mine[0].ID, ClientStatus: structs.AllocClientStatusRunning}}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s.allocNotify)

	mu.Lock()
	if len(got) != 2 || got[1] != last {
		t.Fatalf("notifications %v; want 2, the second at index %d", got, last)
	}
	mu.Unlock()
	if idx := s.store.NodeAllocIndex(local.ID); idx != last {
		t.Fatalf("NodeAllocIndex = %d; want %d (a status report must not move it)", idx, last)
	}
	if sent := s.allocNotify.sent.Load(); sent != 2 {
		t.Fatalf("sent %d; want 2", sent)
	}

	// A snapshot that replaces the state (a follower far behind) tells
	// every node bound here its index once more.
	g := newTestFSM(t)
	applyCmd(t, g, last+1000, msgUpsertNode, &upsertNodeCmd{Node: local})
	applyCmd(t, g, last+1001, msgUpsertAllocs, &upsertAllocsCmd{Allocs: []*structs.Allocation{alloc(local.ID)}})
	snap, err := g.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	if err := s.fsm.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s.allocNotify)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[2] != last+1001 {
		t.Fatalf("notifications after a restore %v; want a third at %d", got, last+1001)
	}
}

// TestAllocNotify_Bounded announces changes for many nodes at once, with
// every call held: enqueue never blocks, at most allocNotifyWorkers calls
// run at a time, and every node is told exactly once, at its last index.
func TestAllocNotify_Bounded(t *testing.T) {
	const nodes = 1000
	var (
		running, peak atomic.Int64
		mu            sync.Mutex
		told          = map[string][]uint64{}
		release       = make(chan struct{})
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := newAllocNotifier(ctx, hclog.NewNullLogger(), func(ctx context.Context, nodeID string, idx uint64) error {
		r := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
		}
		<-release
		mu.Lock()
		told[nodeID] = append(told[nodeID], idx)
		mu.Unlock()
		return nil
	})
	defer n.stop()
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i)
	}
	for round := uint64(1); round <= 3; round++ {
		for _, id := range ids {
			n.enqueue(id, round) // would deadlock here if it waited for a call
		}
	}
	n.mu.Lock()
	workers := n.workers
	n.mu.Unlock()
	if workers > allocNotifyWorkers {
		t.Fatalf("%d workers; want at most %d", workers, allocNotifyWorkers)
	}
	close(release)
	waitIdle(t, n)
	if p := peak.Load(); p > allocNotifyWorkers {
		t.Fatalf("%d calls at once; want at most %d", p, allocNotifyWorkers)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		got := told[id]
		// The first round may be in flight before the others queue up.
		if len(got) == 0 || len(got) > 2 || got[len(got)-1] != 3 {
			t.Fatalf("%s told %v; want at most twice, last at 3", id, got)
		}
	}
}
