package server

import (
	"context"
	"net"
	"reflect"
	"testing"
	"time"

	"tether/rpc"
	"tether/structs"
)

func TestPlanMoves(t *testing.T) {
	cases := []struct {
		name     string
		mine     int
		peers    map[string]int
		maxMoves int
		want     []moveTarget
	}{
		{"alone", 100, nil, 500, nil},
		{"even", 34, map[string]int{"b": 33, "c": 33}, 500, nil},
		{"within tolerance", 36, map[string]int{"b": 32, "c": 32}, 500, nil},
		{"nothing here", 0, map[string]int{"b": 50}, 500, nil},
		{"returned server gets half of the excess from each", 50, map[string]int{"b": 50, "c": 0}, 500, []moveTarget{{"c", 16}}},
		{"bounded per interval", 5000, map[string]int{"b": 5000, "c": 0}, 500, []moveTarget{{"c", 500}}},
		{"two below share split by what they lack", 90, map[string]int{"b": 10, "c": 0, "d": 0}, 500,
			[]moveTarget{{"c", 25}, {"d", 25}, {"b", 15}}},
		{"peers above the share get nothing", 60, map[string]int{"b": 45, "c": 15}, 500, []moveTarget{{"c", 20}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := planMoves(tc.mine, tc.peers, 0.1, tc.maxMoves)
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("planMoves(%d, %v) = %v; want %v", tc.mine, tc.peers, got, tc.want)
			}
			sum := 0
			for _, m := range got {
				sum += m.n
			}
			if sum > tc.maxMoves {
				t.Fatalf("%d moves; at most %d", sum, tc.maxMoves)
			}
		})
	}
}

// TestServer_ReleaseDrainsSession: a node that released its session (it
// moved) is unbound at once, but the session stays open until the call in
// flight on it has finished, and then closes.
func TestServer_ReleaseDrainsSession(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InMemory = true
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Shutdown)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Start(ln)
	waitEstablished(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	started, finish := make(chan struct{}), make(chan struct{})
	nodeMux := rpc.NewMux()
	rpc.HandleUnary(nodeMux, "Slow.Call", func(ctx context.Context, req *struct{}, resp *structs.GenericResponse) error {
		close(started)
		select {
		case <-finish:
			resp.Index = 42
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	sess, err := rpc.Dial(ctx, ln.Addr().String(), rpc.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = sess.Serve(ctx, nodeMux) }()
	node := fullNode()
	if err := sess.Call(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: node}, &structs.NodeRegisterResponse{}); err != nil {
		t.Fatalf("register: %v", err)
	}
	held := s.sessions.get(node.ID)
	if held == nil {
		t.Fatal("no session bound after registration")
	}

	callErr := make(chan error, 1)
	var resp structs.GenericResponse
	go func() { callErr <- held.Call(ctx, "Slow.Call", &struct{}{}, &resp) }()
	<-started

	rel := &structs.NodeReleaseRequest{NodeID: node.ID, SecretID: "wrong"}
	if err := sess.Call(ctx, structs.MethodNodeRelease, rel, &structs.GenericResponse{}); err == nil {
		t.Fatal("release with a wrong secret accepted")
	}
	rel.SecretID = node.SecretID
	if err := sess.Call(ctx, structs.MethodNodeRelease, rel, &structs.GenericResponse{}); err != nil {
		t.Fatalf("release: %v", err)
	}
	sess.CloseIdle()
	if s.sessions.get(node.ID) != nil {
		t.Fatal("released session still bound")
	}
	close(finish)
	if err := <-callErr; err != nil || resp.Index != 42 {
		t.Fatalf("call in flight during the drain = %v (%d); want it to finish", err, resp.Index)
	}
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
		t.Fatal("drained session not closed")
	}
	<-serveDone
	if got := s.Stats()["sessions_released"]; got != 1 {
		t.Fatalf("sessions_released = %d; want 1", got)
	}
}
