package client

import (
	"testing"
	"time"

	"tether/structs"
)

// TestConn_HeartbeatFailover checks that a node whose server goes on
// refusing heartbeats as unable to write (it is on the minority side of a
// partition) registers with another server it learnt of within
// HeartbeatFailover, and that refusals shorter than that (an election)
// leave it where it is.
func TestConn_HeartbeatFailover(t *testing.T) {
	noLeader := structs.NewError(500, "No cluster leader")
	cases := []struct {
		name string
		// refuse is how many heartbeats A refuses before it takes them
		// again; 0 for all.
		refuse   int
		failover time.Duration
		wantOnB  bool
	}{
		{"a server that keeps refusing is left", 0, 200 * time.Millisecond, true},
		{"a short refusal is waited out", 2, time.Minute, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newFakeAllocServer(t), newFakeAllocServer(t)
			a.servers = []string{a.addr, b.addr}
			c := startRegisteredNode(t, a.addr, func(cfg *Config) { cfg.HeartbeatFailover = tc.failover })
			a.mu.Lock()
			hb0 := a.heartbeats
			a.hbRefuse = noLeader
			a.mu.Unlock()
			if tc.wantOnB {
				waitFor(t, "the node registered with B", func() bool {
					_, _, r := b.counts()
					return r > 0 && c.conn.serverAddr() == b.addr
				})
				// The session on A is released once the node is on B.
				waitFor(t, "the node's session on A closed", func() bool {
					a.mu.Lock()
					defer a.mu.Unlock()
					return a.sess.IsClosed()
				})
				return
			}
			waitFor(t, "A to refuse heartbeats", func() bool {
				_, h, _ := a.counts()
				return h >= hb0+tc.refuse
			})
			a.mu.Lock()
			a.hbRefuse = nil
			hb1 := a.heartbeats
			a.mu.Unlock()
			waitFor(t, "A to take heartbeats again", func() bool {
				_, h, _ := a.counts()
				return h >= hb1+3
			})
			if _, _, r := b.counts(); r != 0 || c.conn.serverAddr() != a.addr {
				t.Fatalf("after a short refusal the node registered %d times with B and is on %q; want it on A", r, c.conn.serverAddr())
			}
		})
	}
}
