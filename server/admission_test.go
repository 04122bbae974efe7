package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/rpc"
	"tether/structs"
)

func TestAdmission(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	type step struct {
		at   time.Duration // after t0
		node string
		ok   bool
		hint time.Duration // the hint of a refusal, ±1ms
	}
	cases := []struct {
		name  string
		cfg   func(c *Config)
		steps []step
	}{
		{
			name: "a node's own bucket: burst, then one per interval",
			cfg:  func(c *Config) { c.NodeAdmissionInterval, c.NodeAdmissionBurst = time.Second, 2 },
			steps: []step{
				{0, "a", true, 0}, {0, "a", true, 0},
				{0, "a", false, time.Second},
				{0, "b", true, 0}, // others are not affected
				{500 * time.Millisecond, "a", false, 500 * time.Millisecond},
				{time.Second, "a", true, 0},
				{time.Second, "a", false, time.Second},
			},
		},
		{
			name: "server-wide bucket hands out slots in order",
			cfg:  func(c *Config) { c.AdmissionRate, c.AdmissionBurst = 10, 2 },
			steps: []step{
				{0, "a", true, 0}, {0, "b", true, 0},
				{0, "c", false, 100 * time.Millisecond},
				{0, "d", false, 200 * time.Millisecond},
				{50 * time.Millisecond, "c", false, 50 * time.Millisecond}, // early: same slot
				{100 * time.Millisecond, "c", true, 0},                     // on its slot
				{100 * time.Millisecond, "e", false, 200 * time.Millisecond},
				{200 * time.Millisecond, "d", true, 0},
			},
		},
		{
			name: "a node refused by its own bucket takes no server-wide token",
			cfg: func(c *Config) {
				c.AdmissionRate, c.AdmissionBurst = 1, 2
				c.NodeAdmissionInterval, c.NodeAdmissionBurst = time.Minute, 1
			},
			steps: []step{
				{0, "a", true, 0},
				{0, "a", false, time.Minute}, {0, "a", false, time.Minute}, {0, "a", false, time.Minute},
				{0, "b", true, 0},
			},
		},
		{
			name: "no slot beyond the longest wait",
			cfg:  func(c *Config) { c.AdmissionRate, c.AdmissionBurst, c.AdmissionMaxWait = 1, 1, 2*time.Second },
			steps: []step{
				{0, "a", true, 0},
				{0, "b", false, time.Second},
				{0, "c", false, 2 * time.Second},
				{0, "d", false, 2 * time.Second}, // not reserved: would be 3s
				{time.Second, "b", true, 0},
				{2 * time.Second, "c", true, 0},
				{2 * time.Second, "d", false, time.Second},
			},
		},
		{
			name: "an unclaimed slot expires",
			cfg:  func(c *Config) { c.AdmissionRate, c.AdmissionBurst = 1, 1 },
			steps: []step{
				{0, "a", true, 0},
				{0, "b", false, time.Second},
				{time.Second + slotExpiry + time.Second, "b", true, 0}, // a fresh token
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.AdmissionRate, cfg.NodeAdmissionInterval = -1, -1
			tc.cfg(cfg)
			cfg.setDefaults()
			a := newAdmission(cfg)
			for i, st := range tc.steps {
				err := a.admit(st.node, t0.Add(st.at))
				if (err == nil) != st.ok {
					t.Fatalf("step %d (%s at %v): admit = %v; want ok %v", i, st.node, st.at, err, st.ok)
				}
				if err == nil {
					continue
				}
				hint, ok := structs.RetryAfter(err)
				if !ok || hint < st.hint-time.Millisecond || hint > st.hint+time.Millisecond {
					t.Fatalf("step %d (%s at %v): hint %v (%v); want %v", i, st.node, st.at, hint, err, st.hint)
				}
			}
		})
	}
}

func TestAdmission_Bounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AdmissionCacheSize = 64
	cfg.setDefaults()
	a := newAdmission(cfg)
	now := time.Now()
	for i := 0; i < 10000; i++ {
		_ = a.admit(fmt.Sprintf("node-%d", i), now)
	}
	if n := a.size(); n > 64 {
		t.Fatalf("%d node buckets kept; want at most 64", n)
	}
}

// TestServer_TightLoopNodeDoesNotStarveOthers: one node dials and
// registers in a tight loop from 127.0.0.1 while 50 others, from the
// same address, register once each and honour the servers' hints. The
// loop gets no more than its own bucket allows, and the others all
// register within a bound.
func TestServer_TightLoopNodeDoesNotStarveOthers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.AdmissionRate, cfg.AdmissionBurst = 100, 10
	cfg.NodeAdmissionInterval, cfg.NodeAdmissionBurst = 500*time.Millisecond, 2
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
	addr := ln.Addr().String()
	rcfg := rpc.DefaultConfig()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hammer := fullNode()
	var hammerOK, hammerTries atomic.Int64
	hammerDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(hammerDone)
		for ctx.Err() == nil {
			sess, err := rpc.Dial(ctx, addr, rcfg)
			if err != nil {
				continue
			}
			hammerTries.Add(1)
			var resp structs.NodeRegisterResponse
			if sess.Call(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: hammer.Copy()}, &resp) == nil {
				hammerOK.Add(1)
			}
			sess.Close()
		}
	}()

	const others = 50
	var wg sync.WaitGroup
	errs := make(chan error, others)
	for i := 0; i < others; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess, err := rpc.Dial(ctx, addr, rcfg)
			if err != nil {
				errs <- err
				return
			}
			defer sess.Close()
			n := fullNode()
			for {
				var resp structs.NodeRegisterResponse
				err := sess.Call(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: n}, &resp)
				hint, again := structs.RetryAfter(err)
				if !again {
					errs <- err
					return
				}
				select {
				case <-time.After(hint): // the server's hint is the synchronisation
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				}
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(15 * time.Second):
		t.Fatalf("the other nodes did not all register within 15s while one node hammered")
	}
	elapsed := time.Since(start)
	cancel()
	<-hammerDone
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("registration: %v", err)
		}
	}
	// Burst, then one per interval, counted over the whole run.
	allowed := int64(cfg.NodeAdmissionBurst) + int64(time.Since(start)/cfg.NodeAdmissionInterval) + 1
	if got := hammerOK.Load(); got > allowed {
		t.Fatalf("the looping node registered %d times in %v (%d tries); want at most %d", got, elapsed, hammerTries.Load(), allowed)
	}
	st := s.Stats()
	if hammerTries.Load() <= hammerOK.Load() || st["admission_refused_node"]+st["admission_refused_rate"] == 0 {
		t.Fatalf("the looping node was never refused (%d of %d admitted): %v", hammerOK.Load(), hammerTries.Load(), st)
	}
	t.Logf("others in %v; looping node %d of %d; stats %v", elapsed, hammerOK.Load(), hammerTries.Load(), st)
}
