package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"tether/structs"
	"tether/structs/acl"
)

// newACLServer returns an in-memory server with ACLs on, once it leads.
func newACLServer(t *testing.T) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ACLEnabled = true
	cfg.InMemory = true
	cfg.RPCAdvertise = "127.0.0.1:4647"
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Shutdown)
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("in-memory server did not become leader")
		}
		<-time.After(10 * time.Millisecond) // polling interval; the condition decides
	}
	return s
}

func wantCode(t *testing.T, what string, err error, code int, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error; want %d %q", what, code, text)
	}
	if got := structs.StatusCode(err); got != code || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: got %d %q; want %d %q", what, got, err, code, text)
	}
}

func TestACLState_BootstrapOnce(t *testing.T) {
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	mk := func() *structs.ACLToken {
		return &structs.ACLToken{AccessorID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Type: structs.ACLManagementToken}
	}
	idx, err := st.BootstrapACLTokens(mk())
	if err != nil {
		t.Fatalf("first bootstrap: %v", err)
	}
	if got := st.ACLBootstrapIndex(); got != idx {
		t.Fatalf("ACLBootstrapIndex = %d; want %d", got, idx)
	}
	_, err = st.BootstrapACLTokens(mk())
	wantCode(t, "second bootstrap", err, http.StatusBadRequest, "ACL bootstrap already done")
	toks, _, _ := st.ACLTokens()
	if len(toks) != 1 {
		t.Fatalf("tokens after two bootstraps = %d; want 1", len(toks))
	}
}

func TestACLState_TokensAndPolicies(t *testing.T) {
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertACLPolicies([]*structs.ACLPolicy{{Name: "a", Rules: `node { policy = "read" }`}}); err != nil {
		t.Fatal(err)
	}
	first, _ := st.ACLPolicyByName("a")
	if _, err := st.UpsertACLPolicies([]*structs.ACLPolicy{{Name: "a", Description: "changed"}}); err != nil {
		t.Fatal(err)
	}
	second, _ := st.ACLPolicyByName("a")
	if second.CreateIndex != first.CreateIndex || second.ModifyIndex <= first.ModifyIndex || second.Description != "changed" {
		t.Fatalf("policy after update = %+v (first %+v); want same CreateIndex, newer ModifyIndex", second, first)
	}
	tok := &structs.ACLToken{AccessorID: "acc-1", SecretID: "sec-1", Type: structs.ACLClientToken, Policies: []string{"a"}}
	if _, err := st.UpsertACLTokens([]*structs.ACLToken{tok}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.ACLTokenBySecretID("sec-1"); got == nil || got.AccessorID != "acc-1" {
		t.Fatalf("ACLTokenBySecretID = %+v; want acc-1", got)
	}
	if got, _ := st.ACLTokenBySecretID(""); got != nil {
		t.Fatalf("empty secret matched %+v; want nothing", got)
	}
	dup := &structs.ACLToken{AccessorID: "acc-2", SecretID: "sec-1", Type: structs.ACLClientToken}
	_, err = st.UpsertACLTokens([]*structs.ACLToken{dup})
	wantCode(t, "duplicate secret", err, http.StatusBadRequest, "secret ID already in use")
	if _, err := st.DeleteACLTokens([]string{"acc-1"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.ACLTokenBySecretID("sec-1"); got != nil {
		t.Fatalf("deleted token still found by secret")
	}
	if _, err := st.DeleteACLPolicies([]string{"a", "unknown"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.ACLPolicyByName("a"); got != nil {
		t.Fatalf("deleted policy still there")
	}
}

// TestACLState_Snapshot checks that ACL objects survive a raft snapshot
// and restore with every field, the bootstrap marker included.
func TestACLState_Snapshot(t *testing.T) {
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).UTC().Round(0)
	tok := &structs.ACLToken{AccessorID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Name: "n",
		Type: structs.ACLClientToken, Policies: []string{"p"}, CreateTime: time.Now().UTC().Round(0), ExpirationTime: &exp}
	if _, err := st.UpsertACLPolicies([]*structs.ACLPolicy{{Name: "p", Rules: `node { policy = "read" }`}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertACLTokens([]*structs.ACLToken{tok}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BootstrapACLTokens(&structs.ACLToken{AccessorID: "b", SecretID: "bs", Type: structs.ACLManagementToken}); err != nil {
		t.Fatal(err)
	}
	snap, err := (&fsm{store: st}).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	st2, _ := NewStateStore()
	if err := st2.restore(&buf); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got, _ := st2.ACLTokenBySecretID(tok.SecretID)
	if got == nil || got.Name != "n" || got.ExpirationTime == nil || !got.ExpirationTime.Equal(exp) || !got.CreateTime.Equal(tok.CreateTime) {
		t.Fatalf("restored token = %+v; want %+v", got, tok)
	}
	if p, _ := st2.ACLPolicyByName("p"); p == nil || p.Rules != `node { policy = "read" }` {
		t.Fatalf("restored policy = %+v", p)
	}
	if st2.ACLBootstrapIndex() == 0 {
		t.Fatalf("bootstrap marker lost in the snapshot; a restored cluster could bootstrap twice")
	}
}

func TestServer_ResolveToken(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, err := s.BootstrapACL(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mgmt := boot.SecretID
	if _, err := s.UpsertACLPolicy(ctx, mgmt, &structs.ACLPolicy{Name: "nodes", Rules: `node { policy = "read" }`}); err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: structs.ACLClientToken, Policies: []string{"nodes"}})
	if err != nil {
		t.Fatal(err)
	}

	a, err := s.ResolveToken("")
	if err != nil || a.AllowNodeRead() {
		t.Fatalf("anonymous without policy = %v, %v; want no rights", a.AllowNodeRead(), err)
	}
	if a, err := s.ResolveToken(tok.SecretID); err != nil || !a.AllowNodeRead() || a.AllowNodeWrite() {
		t.Fatalf("client token: read %v write %v err %v; want read only", a.AllowNodeRead(), a.AllowNodeWrite(), err)
	}
	if a, err := s.ResolveToken(mgmt); err != nil || !a.IsManagement() {
		t.Fatalf("management token: %v %v", a, err)
	}
	_, err = s.ResolveToken(structs.GenerateUUID())
	if !errors.Is(err, structs.ErrTokenNotFound) {
		t.Fatalf("unknown token err = %v; want ErrTokenNotFound", err)
	}

	// The anonymous policy, once created, applies to tokenless requests.
	if _, err := s.UpsertACLPolicy(ctx, mgmt, &structs.ACLPolicy{Name: "anonymous", Rules: `node { policy = "read" }`}); err != nil {
		t.Fatal(err)
	}
	if a, err := s.ResolveToken(""); err != nil || !a.AllowNodeRead() {
		t.Fatalf("anonymous with policy = %v, %v; want node read", a.AllowNodeRead(), err)
	}

	// A deleted policy takes its rights with it.
	if _, err := s.DeleteACLPolicy(ctx, mgmt, "nodes"); err != nil {
		t.Fatal(err)
	}
	if a, err := s.ResolveToken(tok.SecretID); err != nil || a.AllowNodeRead() {
		t.Fatalf("token of a deleted policy: read %v err %v; want no rights", a.AllowNodeRead(), err)
	}

	// An expired token is not found.
	exp, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: structs.ACLManagementToken, ExpirationTTL: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResolveToken(exp.SecretID); err != nil {
		t.Fatalf("fresh expiring token: %v", err)
	}
	s.acl.now = func() time.Time { return time.Now().Add(3 * time.Minute) }
	if _, err := s.ResolveToken(exp.SecretID); !errors.Is(err, structs.ErrTokenNotFound) {
		t.Fatalf("expired token err = %v; want ErrTokenNotFound", err)
	}
}

func TestServer_ACLAdmin(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, err := s.BootstrapACL(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mgmt := boot.SecretID
	if boot.Type != "management" || !structs.IsUUID(boot.AccessorID) || !structs.IsUUID(boot.SecretID) || boot.CreateIndex == 0 {
		t.Fatalf("bootstrap token = %+v", boot)
	}
	_, err = s.BootstrapACL(ctx, "")
	wantCode(t, "second bootstrap", err, 400, "ACL bootstrap already done")

	if _, err := s.UpsertACLPolicy(ctx, mgmt, &structs.ACLPolicy{Name: "ro", Rules: `namespace "default" { policy = "read" }`}); err != nil {
		t.Fatal(err)
	}
	client, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Name: "c", Type: "client", Policies: []string{"ro"}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		err  func() error
		code int
		text string
	}{
		{"bad rules", func() error {
			_, err := s.UpsertACLPolicy(ctx, mgmt, &structs.ACLPolicy{Name: "x", Rules: "node { policy = \"read\" }\nnamespace \"a\" { policy = \"rwx\" }"})
			return err
		}, 400, "line 2"},
		{"bad name", func() error {
			_, err := s.UpsertACLPolicy(ctx, mgmt, &structs.ACLPolicy{Name: "a b", Rules: ""})
			return err
		}, 400, "invalid name"},
		{"policy by client", func() error {
			_, err := s.UpsertACLPolicy(ctx, client.SecretID, &structs.ACLPolicy{Name: "x"})
			return err
		}, 403, "Permission denied"},
		{"policy anonymous", func() error {
			_, err := s.DeleteACLPolicy(ctx, "", "ro")
			return err
		}, 403, "Permission denied"},
		{"bad policy name in token", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client", Policies: []string{"ro", "no pe"}})
			return err
		}, 400, "invalid policy name 'no pe'"},
		{"client token without policies", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client"})
			return err
		}, 400, "client token missing policies"},
		{"management with policies", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "management", Policies: []string{"ro"}})
			return err
		}, 400, "management token cannot be associated with policies"},
		{"bad type", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "root"})
			return err
		}, 400, "token type must be client or management"},
		{"ttl too short", func() error {
			_, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "management", ExpirationTTL: time.Second})
			return err
		}, 400, "expiration time cannot be less than"},
		{"token by client", func() error {
			_, err := s.CreateACLToken(ctx, client.SecretID, &structs.ACLToken{Type: "management"})
			return err
		}, 403, "Permission denied"},
		{"token with bogus secret", func() error {
			_, err := s.CreateACLToken(ctx, structs.GenerateUUID(), &structs.ACLToken{Type: "management"})
			return err
		}, 403, "ACL token not found"},
		{"list tokens by client", func() error {
			_, _, err := s.ACLTokens(client.SecretID)
			return err
		}, 403, "Permission denied"},
		{"read other token by client", func() error {
			_, err := s.ACLToken(client.SecretID, boot.AccessorID)
			return err
		}, 403, "Permission denied"},
		{"read unknown token", func() error {
			_, err := s.ACLToken(mgmt, structs.GenerateUUID())
			return err
		}, 404, "ACL token not found"},
		{"delete unknown token", func() error {
			_, err := s.DeleteACLToken(ctx, mgmt, structs.GenerateUUID())
			return err
		}, 400, "Cannot delete nonexistent tokens"},
		{"self without token", func() error {
			_, err := s.ACLTokenSelf("")
			return err
		}, 403, "ACL token not found"},
		{"read policy not held", func() error {
			_, err := s.ACLPolicy(client.SecretID, "other")
			return err
		}, 403, "Permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.name, tc.err(), tc.code, tc.text) })
	}

	// A client token reads itself and its own policies.
	if got, err := s.ACLToken(client.SecretID, client.AccessorID); err != nil || got.SecretID != client.SecretID {
		t.Fatalf("own token: %+v %v", got, err)
	}
	if got, err := s.ACLTokenSelf(client.SecretID); err != nil || got.AccessorID != client.AccessorID {
		t.Fatalf("token self: %+v %v", got, err)
	}
	if ps, _, err := s.ACLPolicies(client.SecretID); err != nil || len(ps) != 1 || ps[0].Name != "ro" {
		t.Fatalf("client's policies = %+v, %v; want [ro]", ps, err)
	}
	stubs, _, err := s.ACLTokens(mgmt)
	if err != nil || len(stubs) != 2 {
		t.Fatalf("tokens = %d, %v; want 2", len(stubs), err)
	}

	// Update keeps IDs and creation time; global mode cannot flip.
	upd, err := s.UpdateACLToken(ctx, mgmt, client.AccessorID, &structs.ACLToken{Name: "renamed", Type: "client", Policies: []string{"ro"}})
	if err != nil || upd.SecretID != client.SecretID || upd.Name != "renamed" || !upd.CreateTime.Equal(client.CreateTime) || upd.CreateIndex != client.CreateIndex {
		t.Fatalf("update = %+v, %v", upd, err)
	}
	_, err = s.UpdateACLToken(ctx, mgmt, client.AccessorID, &structs.ACLToken{Type: "client", Policies: []string{"ro"}, Global: true})
	wantCode(t, "toggle global", err, 400, "cannot toggle global mode")

	// Disabled ACLs answer the ACL endpoints with 400.
	off := &Server{cfg: &Config{}}
	_, err = off.ACLTokenSelf(mgmt)
	wantCode(t, "disabled", err, 400, "ACL support disabled")
	if a, err := off.ResolveToken("anything"); err != nil || a != acl.ACLsDisabledACL {
		t.Fatalf("disabled ResolveToken = %v, %v; want the allow-all object", a, err)
	}
}

// TestServer_Route checks the server's one check before it forwards a
// client call: node policies for node methods, the allocation's own
// namespace for allocation methods, and Nomad's order of errors.
func TestServer_Route(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, _ := s.BootstrapACL(ctx, "")
	mgmt := boot.SecretID
	mk := func(name, rules string) string {
		t.Helper()
		if _, err := s.UpsertACLPolicy(ctx, mgmt, &structs.ACLPolicy{Name: name, Rules: rules}); err != nil {
			t.Fatal(err)
		}
		tok, err := s.CreateACLToken(ctx, mgmt, &structs.ACLToken{Type: "client", Policies: []string{name}})
		if err != nil {
			t.Fatal(err)
		}
		return tok.SecretID
	}
	nodeRead := mk("nr", `node { policy = "read" }`)
	webFS := mk("wf", `namespace "web" { capabilities = ["read-fs"] }`)
	node := &structs.Node{ID: structs.GenerateUUID(), Name: "n1", Status: structs.NodeStatusReady}
	if _, err := s.store.UpsertNode(node); err != nil {
		t.Fatal(err)
	}
	alloc := &structs.Allocation{ID: structs.GenerateUUID(), Namespace: "web", NodeID: node.ID, JobID: "j"}
	if _, err := s.store.UpsertAllocs([]*structs.Allocation{alloc}); err != nil {
		t.Fatal(err)
	}
	unknown := structs.GenerateUUID()
	qo := func(tok string) structs.QueryOptions { return structs.QueryOptions{AuthToken: tok} }
	nodeT, allocT := Target{NodeID: node.ID}, Target{AllocID: alloc.ID}
	for _, tc := range []struct {
		name   string
		target Target
		method string
		args   any
		code   int // 0 = allowed
		text   string
	}{
		{"stats node read", nodeT, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo(nodeRead)}, 0, ""},
		{"gc-all node read", nodeT, structs.MethodClientGCAll, &structs.NodeSpecificRequest{QueryOptions: qo(nodeRead)}, 403, "Permission denied"},
		{"stats anonymous", nodeT, structs.MethodClientStats, &structs.NodeSpecificRequest{}, 403, "Permission denied"},
		{"ls web read-fs", allocT, structs.MethodFsList, &structs.FsListRequest{AllocID: alloc.ID, QueryOptions: qo(webFS)}, 0, ""},
		{"ls checks alloc ns, not request ns", allocT, structs.MethodFsList, &structs.FsListRequest{AllocID: alloc.ID, QueryOptions: structs.QueryOptions{AuthToken: nodeRead, Namespace: "web"}}, 403, "Permission denied"},
		{"logs web read-fs", allocT, structs.MethodFsLogs, &structs.FsLogsRequest{AllocID: alloc.ID, QueryOptions: qo(webFS)}, 0, ""},
		{"alloc gc web read-fs", allocT, structs.MethodClientAllocGC, &structs.AllocSpecificRequest{AllocID: alloc.ID, QueryOptions: qo(webFS)}, 403, "Permission denied"},
		{"unknown alloc anonymous: 404 first", Target{AllocID: unknown}, structs.MethodFsList, &structs.FsListRequest{AllocID: unknown}, 404, "Unknown allocation"},
		{"bad token before unknown alloc", Target{AllocID: unknown}, structs.MethodFsList, &structs.FsListRequest{AllocID: unknown, QueryOptions: qo(structs.GenerateUUID())}, 403, "ACL token not found"},
		{"malformed alloc", Target{AllocID: "abc"}, structs.MethodFsList, &structs.FsListRequest{QueryOptions: qo(mgmt)}, 400, "alloc"},
		{"bogus token", nodeT, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo(structs.GenerateUUID())}, 403, "ACL token not found"},
		{"unlisted method", nodeT, "Client.Exec", &structs.NodeSpecificRequest{QueryOptions: qo(nodeRead)}, 403, "Permission denied"},
		{"unlisted method management", nodeT, "Client.Exec", &structs.NodeSpecificRequest{QueryOptions: qo(mgmt)}, 0, ""},
		// The capability comes before the node lookup: an unknown node
		// with too few rights is a 403, not a 404.
		{"unknown node, no right", Target{NodeID: unknown}, structs.MethodClientGCAll, &structs.NodeSpecificRequest{QueryOptions: qo(nodeRead)}, 403, "Permission denied"},
		{"unknown node", Target{NodeID: unknown}, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo(nodeRead)}, 404, "Unknown node"},
		{"no node", Target{}, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo(nodeRead)}, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := s.Route(ctx, tc.target, tc.method, tc.args)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("got %v; want allowed", err)
				}
				if r.NodeID != node.ID {
					t.Fatalf("route node = %q; want %q", r.NodeID, node.ID)
				}
				if (tc.target.AllocID != "") != (r.Alloc != nil) {
					t.Fatalf("route alloc = %v for target %+v", r.Alloc, tc.target)
				}
				return
			}
			wantCode(t, tc.name, err, tc.code, tc.text)
		})
	}
}

// TestServer_NodeImpersonation checks that only the holder of a node's
// secret can act as that node: register, heartbeat, watch allocations or
// resolve tokens in its name.
func TestServer_NodeImpersonation(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	node := &structs.Node{ID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Name: "n1", Datacenter: "dc1",
		Attributes: map[string]string{"nomad.version": "1.6.9"}}
	if err := s.mux.CallLocal(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: node}, &structs.NodeRegisterResponse{}); err != nil {
		t.Fatalf("register: %v", err)
	}
	wrong := structs.GenerateUUID()
	imposter := node.Copy()
	imposter.SecretID = wrong
	for _, tc := range []struct {
		name   string
		method string
		args   any
		reply  any
	}{
		{"register", structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: imposter}, &structs.NodeRegisterResponse{}},
		{"heartbeat", structs.MethodNodeHeartbeat, &structs.NodeHeartbeatRequest{NodeID: node.ID, SecretID: wrong}, &structs.NodeHeartbeatResponse{}},
		{"alloc watch", structs.MethodNodeGetClientAllocs, &structs.NodeClientAllocsRequest{NodeID: node.ID, SecretID: wrong, MaxWait: time.Millisecond}, &structs.NodeClientAllocsResponse{}},
		{"alloc update", structs.MethodNodeUpdateAlloc, &structs.AllocUpdateRequest{NodeID: node.ID, SecretID: wrong}, &structs.GenericResponse{}},
		{"resolve token", structs.MethodACLResolveToken, &structs.ResolveACLTokenRequest{NodeID: node.ID, NodeSecretID: wrong}, &structs.ResolveACLTokenResponse{}},
		{"get policies", structs.MethodACLGetPolicies, &structs.GetACLPoliciesRequest{NodeID: node.ID, NodeSecretID: wrong, Names: []string{"anonymous"}}, &structs.GetACLPoliciesResponse{}},
		{"resolve token without secret", structs.MethodACLResolveToken, &structs.ResolveACLTokenRequest{NodeID: node.ID}, &structs.ResolveACLTokenResponse{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.mux.CallLocal(ctx, tc.method, tc.args, tc.reply)
			wantCode(t, tc.name, err, 403, "node secret ID does not match")
		})
	}
	if n, _ := s.store.Node(node.ID); n == nil || n.SecretID != node.SecretID {
		t.Fatalf("stored node secret changed after refused registration")
	}
	// The real node resolves tokens.
	var resp structs.ResolveACLTokenResponse
	if err := s.mux.CallLocal(ctx, structs.MethodACLResolveToken, &structs.ResolveACLTokenRequest{NodeID: node.ID, NodeSecretID: node.SecretID}, &resp); err != nil {
		t.Fatalf("resolve anonymous as the node: %v", err)
	}
	if resp.Token == nil || resp.Token.AccessorID != "anonymous" || resp.Token.SecretID != "" {
		t.Fatalf("anonymous token = %+v", resp.Token)
	}
}
