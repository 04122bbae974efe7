package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

func policyLinks(names ...string) []*structs.ACLRolePolicyLink {
	out := make([]*structs.ACLRolePolicyLink, 0, len(names))
	for _, n := range names {
		out = append(out, &structs.ACLRolePolicyLink{Name: n})
	}
	return out
}

// TestACLState_Roles: the store checks links in the apply, resolves
// token links by ID or name, reports current names on read, and keeps
// roles across a snapshot.
func TestACLState_Roles(t *testing.T) {
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertACLPolicies([]*structs.ACLPolicy{{Name: "p1"}, {Name: "p2"}}); err != nil {
		t.Fatal(err)
	}
	role := &structs.ACLRole{ID: structs.GenerateUUID(), Name: "ops", Policies: policyLinks("p1", "p2")}
	if _, err := st.UpsertACLRoles([]*structs.ACLRole{role}, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		role   *structs.ACLRole
		update bool
		text   string
	}{
		{"missing policy", &structs.ACLRole{ID: structs.GenerateUUID(), Name: "x", Policies: policyLinks("nope")}, false, "cannot find policy nope"},
		{"name taken", &structs.ACLRole{ID: structs.GenerateUUID(), Name: "ops", Policies: policyLinks("p1")}, false, "role with name ops already exists"},
		{"update of unknown", &structs.ACLRole{ID: "00000000-0000-0000-0000-000000000000", Name: "y", Policies: policyLinks("p1")}, true, "cannot find role 00000000-0000-0000-0000-000000000000"},
		{"create over existing", &structs.ACLRole{ID: role.ID, Name: "ops", Policies: policyLinks("p1")}, false, "already exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.UpsertACLRoles([]*structs.ACLRole{tc.role}, tc.update)
			wantCode(t, tc.name, err, http.StatusBadRequest, tc.text)
		})
	}

	byID := &structs.ACLToken{AccessorID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Type: "client",
		Roles: []*structs.ACLTokenRoleLink{{ID: role.ID}, {Name: "ops"}}}
	if _, err := st.UpsertACLTokens([]*structs.ACLToken{byID}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.ACLTokenByAccessorID(byID.AccessorID)
	if len(got.Roles) != 1 || got.Roles[0].ID != role.ID || got.Roles[0].Name != "ops" {
		t.Fatalf("stored links = %+v; want one link to %s carrying ID and name", got.Roles, role.ID)
	}
	_, err = st.UpsertACLTokens([]*structs.ACLToken{{AccessorID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Type: "client",
		Roles: []*structs.ACLTokenRoleLink{{Name: "ghost"}}}})
	wantCode(t, "link to no role", err, http.StatusBadRequest, "cannot find role ghost")

	// Rename: the link follows the ID and reports the new name.
	renamed := role.Copy()
	renamed.Name = "ops2"
	renamed.Policies = policyLinks("p2")
	if _, err := st.UpsertACLRoles([]*structs.ACLRole{renamed}, true); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.ACLRoleByName(nil, "ops"); r != nil {
		t.Fatalf("old name still finds %+v", r)
	}
	got, _ = st.ACLTokenBySecretID(byID.SecretID)
	if got.Roles[0].Name != "ops2" {
		t.Fatalf("link name after rename = %q; want ops2", got.Roles[0].Name)
	}
	if names, _ := st.ACLRolePolicyNames(got.Roles); !slices.Equal(names, []string{"p2"}) {
		t.Fatalf("policies via roles = %v; want [p2]", names)
	}

	// Snapshot and restore keep the role and the link.
	snap, _ := (&fsm{store: st}).Snapshot()
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	st2, _ := NewStateStore()
	if err := st2.restore(&buf); err != nil {
		t.Fatal(err)
	}
	if r, _ := st2.ACLRoleByID(nil, role.ID); r == nil || r.Name != "ops2" || r.CreateIndex == r.ModifyIndex {
		t.Fatalf("restored role = %+v", r)
	}
	if got, _ := st2.ACLTokenBySecretID(byID.SecretID); len(got.Roles) != 1 {
		t.Fatalf("restored token links = %+v", got.Roles)
	}

	// Delete: the token is left alone, its dead link is left out of reads
	// and grants nothing.
	if _, err := st.DeleteACLRoles([]string{role.ID}); err != nil {
		t.Fatal(err)
	}
	got, _ = st.ACLTokenBySecretID(byID.SecretID)
	if got == nil || len(got.Roles) != 0 {
		t.Fatalf("token after its role's deletion = %+v; want it kept, with no links", got)
	}
	list, _, _ := st.ACLTokens()
	if len(list) != 1 || len(list[0].Roles) != 0 {
		t.Fatalf("token list after the role's deletion = %+v", list)
	}
}

// TestServer_ACLRoles runs the role endpoints' rules: validation as
// Nomad's, management-only writes, reads by management or a linked token,
// and rights that come and go with the role.
func TestServer_ACLRoles(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, err := s.BootstrapACL(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mgmt := boot.SecretID
	for _, p := range []*structs.ACLPolicy{
		{Name: "node-read", Rules: `node { policy = "read" }`},
		{Name: "other", Rules: `agent { policy = "read" }`},
	} {
		if _, err := s.UpsertACLPolicy(ctx, mgmt, p); err != nil {
			t.Fatal(err)
		}
	}
	role, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "readers", Description: "d", Policies: policyLinks("node-read", "node-read")})
	if err != nil {
		t.Fatal(err)
	}
	if !structs.IsUUID(role.ID) || len(role.Policies) != 1 || role.CreateIndex == 0 {
		t.Fatalf("created role = %+v; want a UUID and one (deduplicated) policy", role)
	}
	other, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "others", Policies: policyLinks("other")})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client", Roles: []*structs.ACLTokenRoleLink{{Name: "readers"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.Roles) != 1 || tok.Roles[0].ID != role.ID || tok.Roles[0].Name != "readers" {
		t.Fatalf("token links = %+v", tok.Roles)
	}

	for _, tc := range []struct {
		name string
		err  func() error
		code int
		text string
	}{
		{"bad name", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "a b", Policies: policyLinks("other")})
			return err
		}, 400, "invalid name 'a b'"},
		{"name too long", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: strings.Repeat("a", 129), Policies: policyLinks("other")})
			return err
		}, 400, "invalid name"},
		{"no policies", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "empty"})
			return err
		}, 400, "at least one policy should be specified"},
		{"description too long", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "d", Description: strings.Repeat("x", 257), Policies: policyLinks("other")})
			return err
		}, 400, "description longer than 256"},
		{"too many policies", func() error {
			names := make([]string, structs.MaxACLLinks+1)
			for i := range names {
				names[i] = fmt.Sprint("p", i)
			}
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "many", Policies: policyLinks(names...)})
			return err
		}, 400, "more than 256 policies"},
		{"unknown policy", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "ghost", Policies: policyLinks("nope")})
			return err
		}, 400, "cannot find policy nope"},
		{"duplicate name", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{Name: "readers", Policies: policyLinks("other")})
			return err
		}, 400, "role with name readers already exists"},
		{"update of unknown ID", func() error {
			_, err := s.UpsertACLRole(ctx, mgmt, &structs.ACLRole{ID: structs.GenerateUUID(), Name: "new", Policies: policyLinks("other")})
			return err
		}, 400, "cannot find role"},
		{"write by client", func() error {
			_, err := s.UpsertACLRole(ctx, tok.SecretID, &structs.ACLRole{Name: "x", Policies: policyLinks("other")})
			return err
		}, 403, "Permission denied"},
		{"delete by client", func() error {
			_, err := s.DeleteACLRole(ctx, tok.SecretID, role.ID)
			return err
		}, 403, "Permission denied"},
		{"delete unknown", func() error {
			_, err := s.DeleteACLRole(ctx, mgmt, structs.GenerateUUID())
			return err
		}, 404, "ACL role not found"},
		{"read unlinked role", func() error {
			_, _, err := s.ACLRole(nil, tok.SecretID, other.ID)
			return err
		}, 403, "Permission denied"},
		{"read unlinked role by name", func() error {
			_, _, err := s.ACLRoleByName(nil, tok.SecretID, "others")
			return err
		}, 403, "Permission denied"},
		{"read unknown role", func() error {
			_, _, err := s.ACLRole(nil, mgmt, structs.GenerateUUID())
			return err
		}, 404, "ACL role not found"},
		{"token linking no role", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client", Roles: []*structs.ACLTokenRoleLink{{Name: "ghost"}}})
			return err
		}, 400, "cannot find role ghost"},
		{"token with an empty link", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client", Roles: []*structs.ACLTokenRoleLink{{}}})
			return err
		}, 400, "role link requires either an ID or name"},
		{"client token with neither", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client"})
			return err
		}, 400, "client token missing policies or roles"},
		{"management token with a role", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "management", Roles: []*structs.ACLTokenRoleLink{{ID: role.ID}}})
			return err
		}, 400, "management token cannot be associated with policies or roles"},
		{"unknown secret lists roles", func() error {
			_, _, err := s.ACLRoles(nil, structs.GenerateUUID(), "")
			return err
		}, 403, "ACL token not found"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.name, tc.err(), tc.code, tc.text) })
	}

	// Reads: the linked token sees its own role, in the list too.
	if r, _, err := s.ACLRole(nil, tok.SecretID, role.ID); err != nil || r.Name != "readers" {
		t.Fatalf("linked token reading its role: %+v %v", r, err)
	}
	if r, _, err := s.ACLRoleByName(nil, tok.SecretID, "readers"); err != nil || r.ID != role.ID {
		t.Fatalf("linked token reading its role by name: %+v %v", r, err)
	}
	for _, tc := range []struct {
		name, secret, prefix string
		want                 int
	}{
		{"management", mgmt, "", 2},
		{"management, prefix", mgmt, role.ID[:8], 1},
		{"linked token", tok.SecretID, "", 1},
		{"anonymous", "", "", 0},
	} {
		list, idx, err := s.ACLRoles(nil, tc.secret, tc.prefix)
		if err != nil || len(list) != tc.want || idx == 0 {
			t.Fatalf("%s: list = %d roles at %d, %v; want %d", tc.name, len(list), idx, err, tc.want)
		}
	}
	if _, err := s.ACLPolicy(tok.SecretID, "node-read"); err != nil {
		t.Fatalf("a policy held through a role is not readable: %v", err)
	}
	if pols, _, _ := s.ACLPolicies(tok.SecretID); len(pols) != 1 || pols[0].Name != "node-read" {
		t.Fatalf("policies listed to the linked token = %+v", pols)
	}

	// Rights: the role's policy, on the server and as a node resolves it.
	nodeRead := func() bool {
		t.Helper()
		a, err := s.ResolveToken(tok.SecretID)
		if err != nil {
			t.Fatal(err)
		}
		return a.AllowNodeRead()
	}
	if !nodeRead() {
		t.Fatal("a token linked to a role with node read cannot read nodes")
	}
	names, err := s.tokenPolicyNames(tok, nil)
	if err != nil || !slices.Equal(names, []string{"node-read"}) {
		t.Fatalf("policy names for a node = %v, %v", names, err)
	}
	// The role changes: the token's rights follow.
	role.Policies = policyLinks("other")
	if _, err := s.UpsertACLRole(ctx, mgmt, role); err != nil {
		t.Fatal(err)
	}
	if nodeRead() {
		t.Fatal("the token kept node read after its role dropped the policy")
	}
	role.Policies = policyLinks("node-read")
	if _, err := s.UpsertACLRole(ctx, mgmt, role); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteACLRole(ctx, mgmt, role.ID); err != nil {
		t.Fatal(err)
	}
	if nodeRead() {
		t.Fatal("the token kept node read after its role was deleted")
	}
	if got, err := s.ACLToken(mgmt, tok.AccessorID); err != nil || len(got.Roles) != 0 {
		t.Fatalf("token after its role's deletion: %+v %v", got, err)
	}
}

// TestServer_ACLRolesBlocking: a blocking read of the list wakes on a role
// write and not before.
func TestServer_ACLRolesBlocking(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, err := s.BootstrapACL(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertACLPolicy(ctx, boot.SecretID, &structs.ACLPolicy{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	_, start, err := s.ACLRoles(nil, boot.SecretID, "")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		idx uint64
		err error
	}
	done := make(chan result, 1)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var n int
		idx, err := s.store.Blocking(bctx, structs.BlockingOptions{MinQueryIndex: max(start, 1)}, func(ws memdb.WatchSet) (uint64, error) {
			list, idx, err := s.ACLRoles(ws, boot.SecretID, "")
			n = len(list)
			return max(idx, 1), err
		})
		done <- result{n, idx, err}
	}()
	// A write to another table does not answer the query.
	if _, err := s.UpsertACLPolicy(ctx, boot.SecretID, &structs.ACLPolicy{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("blocking list answered after a policy write: %+v", r)
	default:
	}
	created, err := s.UpsertACLRole(ctx, boot.SecretID, &structs.ACLRole{Name: "r", Policies: policyLinks("p")})
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.n != 1 || r.idx != created.ModifyIndex {
		t.Fatalf("blocking list = %+v; want 1 role at %d", r, created.ModifyIndex)
	}
}

// TestACL_FollowerAsksLeaderForRoles: a follower that knows neither a
// token nor its role nor the role's policy grants what the leader's state
// says the token holds through the role.
func TestACL_FollowerAsksLeaderForRoles(t *testing.T) {
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
	pol := &structs.ACLPolicy{Name: "role-only-on-leader", Rules: `node { policy = "read" }`}
	if _, err := leader.store.UpsertACLPolicies([]*structs.ACLPolicy{pol}); err != nil {
		t.Fatal(err)
	}
	role := &structs.ACLRole{ID: structs.GenerateUUID(), Name: "leader-role", Policies: policyLinks(pol.Name)}
	if _, err := leader.store.UpsertACLRoles([]*structs.ACLRole{role}, false); err != nil {
		t.Fatal(err)
	}
	tok := &structs.ACLToken{AccessorID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Type: "client",
		Roles: []*structs.ACLTokenRoleLink{{ID: role.ID}}}
	if _, err := leader.store.UpsertACLTokens([]*structs.ACLToken{tok}); err != nil {
		t.Fatal(err)
	}
	a, err := follower.ResolveToken(tok.SecretID)
	if err != nil {
		t.Fatal(err)
	}
	if !a.AllowNodeRead() {
		t.Fatal("the follower did not grant the role's policy of a token it learnt from the leader")
	}
	got, fromLeader, err := follower.tokenBySecretOrLeader(tok.SecretID)
	if err != nil || fromLeader == nil {
		t.Fatalf("lookup: %v %v", fromLeader, err)
	}
	if names, _ := follower.tokenPolicyNames(got, fromLeader); !slices.Equal(names, []string{pol.Name}) {
		t.Fatalf("names a node would fetch = %v; want [%s]", names, pol.Name)
	}
}
