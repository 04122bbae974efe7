package rpc

import (
	"context"
	"errors"
	"testing"
)

// TestServer_ManySessionsFromOneIP: by default nothing caps the
// connections from one address, since a fleet behind one NAT address dials
// from one IP (FLEET-BASELINE: 500 nodes could not all connect at the old
// default of 100).
func TestServer_ManySessionsFromOneIP(t *testing.T) {
	if DefaultConfig().MaxConnsPerIP != 0 {
		t.Fatalf("default MaxConnsPerIP = %d; want 0 (unlimited)", DefaultConfig().MaxConnsPerIP)
	}
	cfg := testConfig(t)
	addr, _ := startServer(t, cfg, NewMux(), nil)
	const n = 520
	sessions := make([]*Session, 0, n)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for i := 0; i < n; i++ {
		s, err := Dial(context.Background(), addr, testConfig(t))
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		sessions = append(sessions, s)
	}
	for i, s := range sessions {
		if err := s.Call(context.Background(), "Nope", nil, nil); !errors.Is(err, ErrUnknownMethod) {
			t.Fatalf("session %d: Call = %v; want the server's unknown-method answer", i, err)
		}
	}
}
