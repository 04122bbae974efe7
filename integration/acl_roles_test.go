package integration

import (
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// wantAPIError fails unless err is the Go client's error for an HTTP
// answer with code and a body containing text.
func wantAPIError(t *testing.T, what string, err error, code int, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error; want %d %q", what, code, text)
	}
	var status int
	if ue, ok := err.(nomad.UnexpectedResponseError); ok {
		status = ue.StatusCode()
	}
	if status != code || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: %v (status %d); want %d %q", what, err, status, code, text)
	}
}

// TestACLRoles_GoClient drives every ACLRoles() call of the official Go
// client, tokens linked to roles by ID and by name, and a right that a
// token holds only through a role: on a node endpoint reached through the
// server and on the node itself, gone once the role is.
func TestACLRoles_GoClient(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(time.Second))
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	roles := mgmt.ACLRoles()

	// An empty list, then a blocking list that a role creation answers.
	list, qm, err := roles.List(nil)
	if err != nil || len(list) != 0 || qm.LastIndex == 0 {
		t.Fatalf("first list: %v, %+v, %v; want [] at a non-zero index", list, qm, err)
	}
	type listed struct {
		list []*nomad.ACLRoleListStub
		qm   *nomad.QueryMeta
		err  error
	}
	blocked := make(chan listed, 1)
	go func() {
		l, m, err := roles.List(&nomad.QueryOptions{WaitIndex: qm.LastIndex, WaitTime: 30 * time.Second})
		blocked <- listed{l, m, err}
	}()

	for _, p := range []*nomad.ACLPolicy{
		{Name: "node-read", Rules: `node { policy = "read" }`},
		{Name: "agent-read", Rules: `agent { policy = "read" }`},
	} {
		if _, err := mgmt.ACLPolicies().Upsert(p, nil); err != nil {
			t.Fatal(err)
		}
	}
	role, wm, err := roles.Create(&nomad.ACLRole{Name: "node-readers", Description: "read nodes",
		Policies: []*nomad.ACLRolePolicyLink{{Name: "node-read"}, {Name: "node-read"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(role.Policies) != 1 || wm.LastIndex != role.ModifyIndex || role.CreateIndex != role.ModifyIndex {
		t.Fatalf("created role = %+v, index %d; want one deduplicated policy link at its index", role, wm.LastIndex)
	}
	b := <-blocked
	if b.err != nil || len(b.list) != 1 || b.qm.LastIndex != role.ModifyIndex {
		t.Fatalf("blocking list = %+v; want the new role at %d", b, role.ModifyIndex)
	}
	other, _, err := roles.Create(&nomad.ACLRole{Name: "agent-readers", Policies: []*nomad.ACLRolePolicyLink{{Name: "agent-read"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	got, _, err := roles.Get(role.ID, nil)
	if err != nil || got.Name != "node-readers" || got.Description != "read nodes" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	byName, _, err := roles.GetByName("node-readers", nil)
	if err != nil || byName.ID != role.ID {
		t.Fatalf("GetByName = %+v, %v", byName, err)
	}
	if l, _, err := roles.List(&nomad.QueryOptions{Prefix: role.ID[:6]}); err != nil || len(l) != 1 || l[0].ID != role.ID {
		t.Fatalf("List by prefix = %+v, %v", l, err)
	}
	// A node-only agent forwards the role endpoints to its server.
	if l, _, err := apiWithToken(t, node, mgmtSecret).ACLRoles().List(nil); err != nil || len(l) != 2 {
		t.Fatalf("List through the node = %d roles, %v; want 2", len(l), err)
	}

	// Tokens link by name and by ID; both come back with ID and name.
	byNameTok, _, err := mgmt.ACLTokens().Create(&nomad.ACLToken{Name: "by-name", Type: "client",
		Roles: []*nomad.ACLTokenRoleLink{{Name: "node-readers"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	byIDTok, _, err := mgmt.ACLTokens().Create(&nomad.ACLToken{Name: "by-id", Type: "client",
		Roles: []*nomad.ACLTokenRoleLink{{ID: role.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []*nomad.ACLToken{byNameTok, byIDTok} {
		if len(tok.Roles) != 1 || tok.Roles[0].ID != role.ID || tok.Roles[0].Name != "node-readers" {
			t.Fatalf("%s links = %+v; want ID and name of %s", tok.Name, tok.Roles, role.ID)
		}
	}

	// Non-management reads: its own roles only.
	user := apiWithToken(t, srv, byNameTok.SecretID)
	if l, _, err := user.ACLRoles().List(nil); err != nil || len(l) != 1 || l[0].ID != role.ID {
		t.Fatalf("linked token's list = %+v, %v; want its one role", l, err)
	}
	if _, _, err := user.ACLRoles().Get(role.ID, nil); err != nil {
		t.Fatalf("linked token reading its role: %v", err)
	}
	_, _, err = user.ACLRoles().Get(other.ID, nil)
	wantAPIError(t, "linked token reading another role", err, 403, "Permission denied")
	_, _, err = user.ACLRoles().GetByName("agent-readers", nil)
	wantAPIError(t, "linked token reading another role by name", err, 403, "Permission denied")
	_, _, err = user.ACLRoles().Create(&nomad.ACLRole{Name: "mine", Policies: []*nomad.ACLRolePolicyLink{{Name: "node-read"}}}, nil)
	wantAPIError(t, "linked token creating a role", err, 403, "Permission denied")

	// The token's only right comes from the role, on both checks.
	direct := node.URL() + "/v1/client/stats"
	viaServer := srv.URL() + "/v1/client/stats?node_id=" + node.Client().NodeID()
	for _, u := range []string{viaServer, direct} {
		if code, body, _ := do(t, "GET", u, nil, "X-Nomad-Token", byIDTok.SecretID); code != 200 {
			t.Fatalf("GET %s with a role-only token = %d %q; want 200", u, code, body)
		}
	}

	// A rename shows in the token's links.
	role.Name = "node-readers-2"
	updated, _, err := roles.Update(role, nil)
	if err != nil || updated.Name != "node-readers-2" || updated.ID != role.ID || updated.CreateIndex != role.CreateIndex {
		t.Fatalf("Update = %+v, %v", updated, err)
	}
	if tok, _, err := mgmt.ACLTokens().Info(byNameTok.AccessorID, nil); err != nil || tok.Roles[0].Name != "node-readers-2" {
		t.Fatalf("token after the rename = %+v, %v", tok, err)
	}

	// Deleting the role takes the right away: at once on the server,
	// within the node's cache TTL on the node. The token stays, linkless.
	if _, err := roles.Delete(role.ID, nil); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do(t, "GET", viaServer, nil, "X-Nomad-Token", byIDTok.SecretID); code != 403 || body != "Permission denied" {
		t.Fatalf("via server after the role's deletion = %d %q; want 403 Permission denied", code, body)
	}
	waitFor(t, 10*time.Second, "node to drop the deleted role's right", func() (bool, error) {
		code, body, _ := do(t, "GET", direct, nil, "X-Nomad-Token", byIDTok.SecretID)
		return code == 403 && body == "Permission denied", nil
	})
	if tok, _, err := mgmt.ACLTokens().Info(byIDTok.AccessorID, nil); err != nil || len(tok.Roles) != 0 {
		t.Fatalf("token after its role's deletion = %+v, %v; want it kept without links", tok, err)
	}
	_, _, err = roles.Get(role.ID, nil)
	wantAPIError(t, "Get of a deleted role", err, 404, "ACL role not found")
	_, err = roles.Delete(role.ID, nil)
	wantAPIError(t, "Delete of a deleted role", err, 404, "ACL role not found")
}

// TestACLRoles_BadInput: what the role endpoints refuse, with Nomad's
// texts, through the Go client and raw HTTP.
func TestACLRoles_BadInput(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	if _, err := mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "p", Rules: `node { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	existing, _, err := mgmt.ACLRoles().Create(&nomad.ACLRole{Name: "taken", Policies: []*nomad.ACLRolePolicyLink{{Name: "p"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	links := func(names ...string) []*nomad.ACLRolePolicyLink {
		var out []*nomad.ACLRolePolicyLink
		for _, n := range names {
			out = append(out, &nomad.ACLRolePolicyLink{Name: n})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		role *nomad.ACLRole
		text string
	}{
		{"no name", &nomad.ACLRole{Policies: links("p")}, "invalid name ''"},
		{"bad name", &nomad.ACLRole{Name: "a/b", Policies: links("p")}, "invalid name 'a/b'"},
		{"long name", &nomad.ACLRole{Name: strings.Repeat("n", 129), Policies: links("p")}, "invalid name"},
		{"long description", &nomad.ACLRole{Name: "d", Description: strings.Repeat("d", 257), Policies: links("p")}, "description longer than 256"},
		{"no policies", &nomad.ACLRole{Name: "none"}, "at least one policy should be specified"},
		{"unknown policy", &nomad.ACLRole{Name: "ghost", Policies: links("p", "nope")}, "cannot find policy nope"},
		{"duplicate name", &nomad.ACLRole{Name: "taken", Policies: links("p")}, "role with name taken already exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := mgmt.ACLRoles().Create(tc.role, nil)
			wantAPIError(t, tc.name, err, 400, tc.text)
		})
	}
	_, _, err = mgmt.ACLRoles().Update(&nomad.ACLRole{ID: "7b9b6c3e-9a07-4c34-a1de-3c0f8c4bd2a0", Name: "new", Policies: links("p")}, nil)
	wantAPIError(t, "update of an unknown role", err, 400, "cannot find role 7b9b6c3e-9a07-4c34-a1de-3c0f8c4bd2a0")
	_, _, err = mgmt.ACLTokens().Create(&nomad.ACLToken{Type: "client", Roles: []*nomad.ACLTokenRoleLink{{Name: "ghost"}}}, nil)
	wantAPIError(t, "token linking no role", err, 400, "cannot find role ghost")
	_, _, err = mgmt.ACLTokens().Create(&nomad.ACLToken{Type: "client", Roles: []*nomad.ACLTokenRoleLink{{}}}, nil)
	wantAPIError(t, "token with an empty link", err, 400, "role link requires either an ID or name")
	_, _, err = mgmt.ACLTokens().Create(&nomad.ACLToken{Type: "management", Roles: []*nomad.ACLTokenRoleLink{{ID: existing.ID}}}, nil)
	wantAPIError(t, "management token with a role", err, 400, "management token cannot be associated with policies or roles")

	hdr := []string{"X-Nomad-Token", mgmtSecret}
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		text                     string
	}{
		{"path and body IDs differ", "POST", "/v1/acl/role/" + existing.ID, `{"ID":"other","Name":"taken","Policies":[{"Name":"p"}]}`, 400, "ACL role ID does not match request path"},
		{"create with an ID", "POST", "/v1/acl/role", `{"ID":"7b9b6c3e-9a07-4c34-a1de-3c0f8c4bd2a0","Name":"x","Policies":[{"Name":"p"}]}`, 400, "cannot find role"},
		{"not JSON", "PUT", "/v1/acl/role", `{`, 400, "failed to decode request body"},
		{"empty body", "PUT", "/v1/acl/role", ``, 400, ""},
		{"list by POST", "POST", "/v1/acl/roles", `{}`, 405, ""},
		{"read by name by DELETE", "DELETE", "/v1/acl/role/name/taken", ``, 405, ""},
		{"unknown name", "GET", "/v1/acl/role/name/nobody", ``, 404, "ACL role not found"},
		{"bad index", "GET", "/v1/acl/roles?index=x", ``, 400, "Invalid index"},
		{"anonymous create", "PUT", "/v1/acl/role", `{"Name":"x","Policies":[{"Name":"p"}]}`, 403, "Permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hdr
			if strings.HasPrefix(tc.name, "anonymous") {
				h = nil
			}
			code, body, _ := do(t, tc.method, srv.URL()+tc.path, strings.NewReader(tc.body), h...)
			if code != tc.code || !strings.Contains(body, tc.text) {
				t.Fatalf("%s %s = %d %q; want %d %q", tc.method, tc.path, code, body, tc.code, tc.text)
			}
		})
	}
}
