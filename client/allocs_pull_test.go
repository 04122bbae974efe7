package client

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"tether/rpc"
	"tether/structs"
)

// fakeAllocServer is a server that answers registrations, heartbeats and
// pulls, with allocation indexes the test sets, and counts what it gets.
type fakeAllocServer struct {
	addr string

	mu         sync.Mutex
	sess       *rpc.Session // the node's latest session
	index      uint64       // the node's allocation index, on every answer
	hbFail     error        // the next heartbeat's error, once
	hbRefuse   error        // every heartbeat's error while set
	servers    []string     // the servers registrations hand out
	pulls      int
	heartbeats int
	registers  int
	blocking   int // pulls that asked to block
}

func newFakeAllocServer(t *testing.T) *fakeAllocServer {
	t.Helper()
	f := &fakeAllocServer{}
	mux := rpc.NewMux()
	rpc.HandleUnary(mux, structs.MethodNodeRegister, func(ctx context.Context, req *structs.NodeRegisterRequest, resp *structs.NodeRegisterResponse) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.registers++
		resp.Servers = f.servers
		resp.HeartbeatTTL = 100 * time.Millisecond
		resp.AllocIndex = f.index
		return nil
	})
	rpc.HandleUnary(mux, structs.MethodNodeHeartbeat, func(ctx context.Context, req *structs.NodeHeartbeatRequest, resp *structs.NodeHeartbeatResponse) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.heartbeats++
		if err := f.hbFail; err != nil {
			f.hbFail = nil
			return err
		}
		if err := f.hbRefuse; err != nil {
			return err
		}
		resp.HeartbeatTTL = 100 * time.Millisecond
		resp.AllocIndex = f.index
		return nil
	})
	rpc.HandleUnary(mux, structs.MethodNodeGetClientAllocs, func(ctx context.Context, req *structs.NodeClientAllocsRequest, resp *structs.NodeClientAllocsResponse) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.pulls++
		if req.MaxWait > 0 {
			f.blocking++
		}
		resp.Index = f.index
		return nil
	})
	rpc.HandleUnary(mux, structs.MethodNodeUpdateAlloc, func(ctx context.Context, req *structs.AllocUpdateRequest, resp *structs.GenericResponse) error {
		return nil
	})
	srv := rpc.NewServer(nil, mux)
	srv.OnSession = func(s *rpc.Session) {
		f.mu.Lock()
		f.sess = s
		f.mu.Unlock()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
	})
	return f
}

func (f *fakeAllocServer) counts() (pulls, heartbeats, registers int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pulls, f.heartbeats, f.registers
}

// startRegisteredNode starts a node on server, with cfg changed by edit
// when not nil, and waits until it has registered; the test's cleanup
// shuts it down.
func startRegisteredNode(t *testing.T, server string, edit func(*Config)) *Client {
	t.Helper()
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.AllocDir = t.TempDir()
	cfg.Servers = []string{server}
	if edit != nil {
		edit(cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Shutdown)
	select {
	case <-c.Registered():
	case <-time.After(10 * time.Second):
		t.Fatal("node did not register")
	}
	return c
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond) // polling interval; the condition decides
	}
}

// TestAllocs_PullWhenTold checks that the node keeps no query parked on
// its server and pulls its allocations exactly when told: after a
// registration, on a push, and when a heartbeat answers an index ahead of
// what it has; heartbeats at the index it has make no pull.
func TestAllocs_PullWhenTold(t *testing.T) {
	f := newFakeAllocServer(t)
	startRegisteredNode(t, f.addr, nil)

	pulls := 0
	steps := []struct {
		name string
		do   func() error
	}{
		{"the first registration", func() error { return nil }},
		{"a push", func() error {
			f.mu.Lock()
			f.index = 5
			sess := f.sess
			f.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return sess.Call(ctx, structs.MethodClientAllocsChanged, &structs.AllocsChangedRequest{Index: 5}, &structs.GenericResponse{})
		}},
		{"a heartbeat index ahead (a lost push)", func() error {
			f.mu.Lock()
			f.index = 7
			f.mu.Unlock()
			return nil
		}},
		{"a registration again on the same session (server forgot the node)", func() error {
			f.mu.Lock()
			f.hbFail = structs.NewError(404, "Unknown node")
			f.mu.Unlock()
			return nil
		}},
		{"a registration on a new session", func() error {
			f.mu.Lock()
			sess := f.sess
			f.mu.Unlock()
			return sess.Close()
		}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		pulls++
		waitFor(t, fmt.Sprintf("pull %d after %s", pulls, st.name), func() bool {
			p, _, _ := f.counts()
			return p >= pulls
		})
		// Heartbeats at the index the node has pulled make no pull.
		_, hb, _ := f.counts()
		waitFor(t, "three more heartbeats after "+st.name, func() bool {
			_, h, _ := f.counts()
			return h >= hb+3
		})
		if p, _, _ := f.counts(); p != pulls {
			t.Fatalf("after %s: %d pulls; want %d", st.name, p, pulls)
		}
	}
	f.mu.Lock()
	blocking, registers := f.blocking, f.registers
	f.mu.Unlock()
	if blocking != 0 {
		t.Fatalf("%d pulls asked the server to block", blocking)
	}
	if registers != 3 {
		t.Fatalf("%d registrations; want 3", registers)
	}
}
