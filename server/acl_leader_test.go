package server

import (
	"errors"
	"testing"

	"golang.org/x/time/rate"

	"tether/structs"
)

// TestACL_FollowerAsksLeader: a follower whose state lacks a token and
// its policy (as one that has just restarted, or that a new token has not
// reached) resolves it on the leader; a bogus secret is still refused,
// and so is every unknown secret once the lookup rate is spent.
func TestACL_FollowerAsksLeader(t *testing.T) {
	servers := startTestCluster(t, 3, func(c *Config) { c.ACLEnabled = true })
	var leader, follower *Server
	for _, s := range servers {
		if s.IsLeader() {
			leader = s
		} else if follower == nil {
			follower = s
		}
	}
	if leader == nil || follower == nil {
		t.Fatal("no leader and follower")
	}
	// Written to the leader's store alone: the follower never sees them.
	pol := &structs.ACLPolicy{Name: "only-on-leader", Rules: `node { policy = "read" }`}
	if _, err := leader.store.UpsertACLPolicies([]*structs.ACLPolicy{pol}); err != nil {
		t.Fatal(err)
	}
	tok := &structs.ACLToken{AccessorID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Type: "client", Policies: []string{pol.Name}}
	if _, err := leader.store.UpsertACLTokens([]*structs.ACLToken{tok}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		secret   string
		spent    bool // the follower's lookup rate is used up
		wantErr  error
		nodeRead bool
	}{
		{"token only on the leader", tok.SecretID, false, nil, true},
		{"bogus secret", structs.GenerateUUID(), false, structs.ErrTokenNotFound, false},
		{"lookup rate spent", tok.SecretID, true, structs.ErrTokenNotFound, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.spent {
				follower.aclLookups.limiter = rate.NewLimiter(0, 0)
			}
			before := follower.aclLeaderLookups.Load()
			a, err := follower.ResolveToken(tc.secret)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ResolveToken: %v; want %v", err, tc.wantErr)
			}
			if err == nil && a.AllowNodeRead() != tc.nodeRead {
				t.Fatalf("node read %v; want %v", a.AllowNodeRead(), tc.nodeRead)
			}
			asked := follower.aclLeaderLookups.Load() - before
			if wantAsked := uint64(1); tc.spent {
				if asked != 0 {
					t.Fatalf("%d lookups on the leader with the rate spent", asked)
				}
			} else if asked != wantAsked {
				t.Fatalf("%d lookups on the leader; want %d", asked, wantAsked)
			}
		})
	}

	// A node's own check asks the server it is on for the policies too.
	follower.aclLookups.limiter = rate.NewLimiter(aclLeaderLookupRate, aclLeaderLookupBurst)
	resp, ok := follower.lookupAtLeader(&peerACLLookupRequest{Policies: []string{pol.Name, "missing"}})
	if !ok || resp.Policies[pol.Name] == nil || len(resp.Policies) != 1 {
		t.Fatalf("policies from the leader: %v %+v", ok, resp)
	}
}
