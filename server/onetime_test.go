package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/structs"
)

// TestOneTimeToken_Lifecycle: a one-time secret stands for the caller's
// token, is exchanged once, not after its TTL, not for a token deleted
// since, not by the anonymous caller; of concurrent exchanges of one
// secret exactly one wins; and expired ones are swept.
func TestOneTimeToken_Lifecycle(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	s.acl.now = func() time.Time { return *now.Load() }
	advance := func(d time.Duration) {
		n := now.Load().Add(d)
		now.Store(&n)
	}
	boot, err := s.BootstrapACL(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mgmt := boot.SecretID
	client, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Name: "c", Type: "client", Policies: []string{"not-yet"}})
	if err != nil {
		t.Fatalf("token naming a policy that does not exist yet: %v", err)
	}

	ott, idx, err := s.UpsertOneTimeToken(ctx, client.SecretID)
	if err != nil {
		t.Fatal(err)
	}
	if ott.AccessorID != client.AccessorID || !structs.IsUUID(ott.OneTimeSecretID) || idx == 0 || ott.CreateIndex != idx {
		t.Fatalf("one-time token = %+v (index %d); want one for %s", ott, idx, client.AccessorID)
	}
	if got := ott.ExpiresAt.Sub(start); got != structs.OneTimeTokenTTL {
		t.Fatalf("expires in %v; want %v", got, structs.OneTimeTokenTTL)
	}

	tok, _, err := s.ExchangeOneTimeToken(ctx, ott.OneTimeSecretID)
	if err != nil || tok.SecretID != client.SecretID {
		t.Fatalf("exchange = %+v, %v; want the client token", tok, err)
	}

	cases := []struct {
		name  string
		setup func(t *testing.T) string // returns the one-time secret
		code  int
		text  string
	}{
		{"spent", func(t *testing.T) string { return ott.OneTimeSecretID }, 403, "Permission denied"},
		{"unknown", func(t *testing.T) string { return structs.GenerateUUID() }, 403, "Permission denied"},
		{"not a UUID", func(t *testing.T) string { return "nope" }, 403, "Permission denied"},
		{"missing", func(t *testing.T) string { return "" }, 400, "missing OneTimeSecretID"},
		{"expired", func(t *testing.T) string {
			o, _, err := s.UpsertOneTimeToken(ctx, mgmt)
			if err != nil {
				t.Fatal(err)
			}
			advance(structs.OneTimeTokenTTL + time.Second)
			return o.OneTimeSecretID
		}, 403, "Permission denied"},
		{"token deleted since", func(t *testing.T) string {
			c, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client", Policies: []string{"x"}})
			if err != nil {
				t.Fatal(err)
			}
			o, _, err := s.UpsertOneTimeToken(ctx, c.SecretID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteACLToken(ctx, mgmt, c.AccessorID); err != nil {
				t.Fatal(err)
			}
			return o.OneTimeSecretID
		}, 403, "Permission denied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.ExchangeOneTimeToken(ctx, tc.setup(t))
			wantCode(t, "exchange", err, tc.code, tc.text)
		})
	}

	t.Run("anonymous and unknown callers", func(t *testing.T) {
		_, _, err := s.UpsertOneTimeToken(ctx, "")
		wantCode(t, "anonymous", err, 403, "Permission denied")
		_, _, err = s.UpsertOneTimeToken(ctx, structs.GenerateUUID())
		wantCode(t, "unknown token", err, 403, "ACL token not found")
	})

	t.Run("concurrent exchanges", func(t *testing.T) {
		o, _, err := s.UpsertOneTimeToken(ctx, mgmt)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var won, denied atomic.Int32
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := s.ExchangeOneTimeToken(ctx, o.OneTimeSecretID)
				switch {
				case err == nil:
					won.Add(1)
				case errors.Is(err, structs.ErrPermissionDenied):
					denied.Add(1)
				default:
					t.Errorf("exchange: %v", err)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 || denied.Load() != 7 {
			t.Fatalf("won %d, denied %d; want 1 and 7", won.Load(), denied.Load())
		}
	})

	t.Run("expired ones are swept", func(t *testing.T) {
		for range 3 {
			if _, _, err := s.UpsertOneTimeToken(ctx, mgmt); err != nil {
				t.Fatal(err)
			}
		}
		advance(structs.OneTimeTokenTTL + time.Second)
		if _, _, err := s.UpsertOneTimeToken(ctx, mgmt); err != nil {
			t.Fatal(err)
		}
		if n := s.store.oneTimeTokenCount(); n != 1 {
			t.Fatalf("%d one-time tokens stored after a sweep; want 1", n)
		}
		advance(structs.OneTimeTokenTTL + time.Second)
		if err := s.SystemGC(ctx, mgmt); err != nil {
			t.Fatal(err)
		}
		if n := s.store.oneTimeTokenCount(); n != 0 {
			t.Fatalf("%d one-time tokens stored after the system GC; want 0", n)
		}
	})
}

// TestOneTimeToken_Replicated: a one-time token made through one follower
// is exchanged through another, once, and is gone from every server.
func TestOneTimeToken_Replicated(t *testing.T) {
	servers := startTestCluster(t, 3, func(c *Config) { c.ACLEnabled = true })
	var followers []*Server
	for _, s := range servers {
		if !s.IsLeader() {
			followers = append(followers, s)
		}
	}
	if len(followers) != 2 {
		t.Fatalf("%d followers; want 2", len(followers))
	}
	ctx := context.Background()
	boot, err := followers[0].BootstrapACL(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	ott, _, err := followers[0].UpsertOneTimeToken(ctx, boot.SecretID)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := followers[1].ExchangeOneTimeToken(ctx, ott.OneTimeSecretID)
	if err != nil || tok.AccessorID != boot.AccessorID {
		t.Fatalf("exchange on the other follower = %+v, %v; want the bootstrap token", tok, err)
	}
	_, _, err = followers[0].ExchangeOneTimeToken(ctx, ott.OneTimeSecretID)
	wantCode(t, "second exchange on the first follower", err, 403, "Permission denied")
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range servers {
		for {
			o, err := s.store.OneTimeToken(ott.OneTimeSecretID)
			if err != nil {
				t.Fatal(err)
			}
			if o == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still holds the spent one-time token", s.cfg.Name)
			}
			<-time.After(10 * time.Millisecond) // polling interval; the condition decides
		}
	}
}

// oneTimeTokenCount returns how many one-time tokens are stored.
func (s *StateStore) oneTimeTokenCount() int {
	it, err := s.db.Txn(false).Get(tableOneTimeTokens, "id")
	if err != nil {
		return 0
	}
	n := 0
	for raw := it.Next(); raw != nil; raw = it.Next() {
		n++
	}
	return n
}
