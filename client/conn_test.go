package client

import (
	"testing"
	"time"
)

// TestHeartbeatInterval checks that the node heartbeats within the TTL it
// was handed, and not much earlier (which would raise the leader's rate).
func TestHeartbeatInterval(t *testing.T) {
	for _, tc := range []struct {
		ttl, min, max time.Duration
	}{
		{0, 7500 * time.Millisecond, 10 * time.Second},
		{-time.Second, 7500 * time.Millisecond, 10 * time.Second},
		{time.Nanosecond, time.Nanosecond, time.Nanosecond},
		{400 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond},
		{10 * time.Second, 7500 * time.Millisecond, 10 * time.Second},
		{400 * time.Second, 300 * time.Second, 400 * time.Second},
	} {
		for range 1000 {
			if got := heartbeatInterval(tc.ttl); got < tc.min || got > tc.max {
				t.Fatalf("heartbeatInterval(%v) = %v; want in [%v, %v]", tc.ttl, got, tc.min, tc.max)
			}
		}
	}
}

// TestNextServer: nodes with the same list start on a random server (a
// fleet spreads instead of all dialing the first), every pass tries each
// server once, and the pass after a loss does not start with the server
// lost.
func TestNextServer(t *testing.T) {
	servers := []string{"a:4647", "b:4647", "c:4647"}
	first := map[string]int{}
	const fleet = 3000
	for range fleet {
		m := &connManager{servers: append([]string(nil), servers...)}
		first[m.nextServer()]++
	}
	for _, s := range servers {
		if got, even := first[s], fleet/len(servers); got < even*9/10 || got > even*11/10 {
			t.Fatalf("%d of %d nodes start on %s; want about %d (%v)", got, fleet, s, even, first)
		}
	}

	m := &connManager{servers: append([]string(nil), servers...)}
	for pass := 0; pass < 100; pass++ {
		seen := map[string]bool{}
		for range servers {
			seen[m.nextServer()] = true
		}
		if len(seen) != len(servers) {
			t.Fatalf("pass %d tried %v; want each server once", pass, seen)
		}
	}
	lost := map[string]int{}
	for range 300 {
		m := &connManager{servers: append([]string(nil), servers...)}
		s := m.nextServer() // registered here, then lost
		m.newPass()
		next := m.nextServer()
		if next == s {
			t.Fatalf("after losing %s the node dialed it again first", s)
		}
		lost[next]++
	}
	if len(lost) != len(servers) {
		t.Fatalf("nodes that lost a server went to %v; want all others used", lost)
	}
}
