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
