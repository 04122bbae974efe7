package server

import (
	"testing"
	"time"
)

// TestRouteCache_DropVia checks that the routes through a peer that is
// gone are forgotten, and no other.
func TestRouteCache_DropVia(t *testing.T) {
	c := newRouteCache(1024, time.Minute, time.Second, func(string, string) (string, error) { return "", nil }, nil)
	routes := map[string]string{"n1": "10.0.0.1:4647", "n2": "10.0.0.2:4647", "n3": "10.0.0.1:4647", "n4": ""}
	for id, addr := range routes {
		c.put(id, addr, time.Minute)
	}
	if got := c.dropVia("10.0.0.1:4647"); got != 2 {
		t.Fatalf("dropped %d; want 2", got)
	}
	for id, addr := range routes {
		_, ok := c.get(id)
		if want := addr != "10.0.0.1:4647"; ok != want {
			t.Errorf("%s cached = %v; want %v", id, ok, want)
		}
	}
}
