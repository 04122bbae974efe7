package server

import (
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"tether/rpc"
	"tether/structs"
)

// TestBindSession_NoWatcherGoroutine checks that nodes registering over
// their sessions are bound without a goroutine per session, and that a
// session that closes unbinds its node (and only its own binding).
func TestBindSession_NoWatcherGoroutine(t *testing.T) {
	const nodes = 20
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.RPCAdvertise = "127.0.0.1:4647"
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Shutdown)
	waitEstablished(t, s)

	// Node sessions to the server's own mux, over pipes.
	srv := rpc.NewServer(nil, s.mux)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	sessions := make([]*rpc.Session, nodes)
	for i := range sessions {
		c1, c2 := net.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ServeConn(ctx, c2)
		}()
		sess, err := rpc.NewClientSession(c1, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.Serve(ctx, rpc.NewMux())
		}()
		sessions[i] = sess
	}
	settled := func() int {
		last, same := runtime.NumGoroutine(), 0
		for deadline := time.Now().Add(5 * time.Second); same < 5 && time.Now().Before(deadline); {
			<-time.After(20 * time.Millisecond) // sampling interval; the count decides
			if g := runtime.NumGoroutine(); g == last {
				same++
			} else {
				last, same = g, 0
			}
		}
		return last
	}
	// One call first on every session, so that both ends have the
	// goroutines a used session has.
	for _, sess := range sessions {
		var resp structs.NodeListResponse
		sess.Call(ctx, structs.MethodNodeList, &structs.NodeListRequest{}, &resp)
	}
	before := settled()
	ids := make([]string, nodes)
	for i, sess := range sessions {
		n := testNode(structs.GenerateUUID())
		ids[i] = n.ID
		var resp structs.NodeRegisterResponse
		if err := sess.Call(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: n}, &resp); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
	}
	if got := s.sessions.count(); got != nodes {
		t.Fatalf("%d nodes bound; want %d", got, nodes)
	}
	if after := settled(); after > before+nodes/4 {
		t.Fatalf("goroutines %d before binding %d sessions, %d after: a goroutine per binding", before, nodes, after)
	}
	// A closing session unbinds its node; the others stay.
	for i := 0; i < nodes/2; i++ {
		sessions[i].Close()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			<-time.After(5 * time.Millisecond) // polling interval; the condition decides
		}
	}
	waitFor("the closed sessions' nodes to be unbound", func() bool { return s.sessions.count() == nodes-nodes/2 })
	for i, id := range ids {
		if bound := s.sessions.get(id) != nil; bound != (i >= nodes/2) {
			t.Fatalf("node %d bound = %v", i, bound)
		}
	}
}
