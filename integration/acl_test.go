package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
	"tether/rpc"
	"tether/structs"
)

// withACL turns ACLs on with short cache TTLs, so revocation reaches the
// node quickly.
func withACL(ttl time.Duration) agentOpt {
	return func(c *agent.Config) {
		c.ACL.Enabled = true
		c.ACL.TokenTTL = ttl
		c.ACL.PolicyTTL = ttl
	}
}

// startACLServer starts a server-only agent with ACLs on.
func startACLServer(t *testing.T, name string, ttl time.Duration) *testAgent {
	t.Helper()
	cfg := baseConfig(t, name)
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 1
	withACL(ttl)(cfg)
	return startAgent(t, cfg)
}

// apiWithToken returns a Go client for addr that sends secret.
func apiWithToken(t *testing.T, a *testAgent, secret string) *nomad.Client {
	t.Helper()
	c, err := nomad.NewClient(&nomad.Config{Address: a.URL(), SecretID: secret})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bootstrap bootstraps ACLs through the Go client, retrying while the
// cluster elects its leader.
func bootstrap(t *testing.T, srv *testAgent) string {
	t.Helper()
	var secret string
	waitFor(t, 20*time.Second, "ACL bootstrap", func() (bool, error) {
		tok, _, err := srv.API(t).ACLTokens().Bootstrap(nil)
		if err != nil {
			return false, err
		}
		secret = tok.SecretID
		return true, nil
	})
	return secret
}

// makeToken creates a policy with rules and a client token holding it.
func makeToken(t *testing.T, mgmt *nomad.Client, name, rules string) string {
	t.Helper()
	if _, err := mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: name, Description: "test " + name, Rules: rules}, nil); err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
	tok, _, err := mgmt.ACLTokens().Create(&nomad.ACLToken{Name: name, Type: "client", Policies: []string{name}}, nil)
	if err != nil {
		t.Fatalf("token %s: %v", name, err)
	}
	return tok.SecretID
}

// tokenHeader returns how a row sends its token: X-Nomad-Token, or
// Authorization: Bearer for the rows named in bearer.
func tokenHeader(name, secret string) []string {
	switch {
	case secret == "":
		return nil
	case name == "read-fs" || name == "node-write":
		return []string{"Authorization", "Bearer " + secret}
	}
	return []string{"X-Nomad-Token", secret}
}

// TestACL_Matrix calls every seed endpoint with no token, a bogus token, a
// token per single grant, a token for another namespace and a management
// token, through a server and directly on the node, and expects exactly
// 200 or 403. It then drives the same checks and the ACL API through the
// official Go client.
func TestACL_Matrix(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec(), withACL(time.Second))
	nodeID := node.Client().NodeID()
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)

	tokens := []struct{ name, secret string }{
		{"none", ""},
		{"bogus", structs.GenerateUUID()},
		{"node-read", makeToken(t, mgmt, "node-read", `node { policy = "read" }`)},
		{"node-write", makeToken(t, mgmt, "node-write", `node { policy = "write" }`)},
		{"read-job", makeToken(t, mgmt, "read-job", `namespace "default" { capabilities = ["read-job"] }`)},
		{"read-fs", makeToken(t, mgmt, "read-fs", `namespace "default" { capabilities = ["read-fs"] }`)},
		{"read-logs", makeToken(t, mgmt, "read-logs", `namespace "default" { capabilities = ["read-logs"] }`)},
		{"submit-job", makeToken(t, mgmt, "submit-job", `namespace "default" { capabilities = ["submit-job"] }`)},
		{"other-ns", makeToken(t, mgmt, "other-ns", `namespace "other" { policy = "write" }
node { policy = "deny" }`)},
		{"management", mgmtSecret},
	}

	// One running allocation to read, one finished one to collect.
	web := shellTask("web", `echo hello-log; printf marker > "$NOMAD_ALLOC_DIR/data/file.txt"; while :; do sleep 1; done`)
	if _, _, err := mgmt.Jobs().Register(&nomad.Job{ID: ptr("acl"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{web}}}}, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	if _, _, err := mgmt.Jobs().Register(&nomad.Job{ID: ptr("done"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("t", "echo bye")}}}}, nil); err != nil {
		t.Fatalf("register batch: %v", err)
	}
	allocID := waitAllocsStatus(t, mgmt, "acl", 1, "running")[0].ID
	doneID := waitAllocsStatus(t, mgmt, "done", 1, "complete")[0].ID
	waitFor(t, 20*time.Second, "task output", func() (bool, error) {
		code, body, _ := do(t, "GET", srv.URL()+"/v1/client/fs/cat/"+allocID+"?path=alloc/data/file.txt", nil, "X-Nomad-Token", mgmtSecret)
		return code == 200 && body == "marker", nil
	})

	type endpoint struct {
		name    string
		method  string
		path    string // query included; NODE is replaced by node_id on servers
		body    string
		allowed []string
	}
	endpoints := []endpoint{
		{"stats", "GET", "/v1/client/stats?NODE", "", []string{"node-read", "node-write"}},
		{"metadata-read", "GET", "/v1/client/metadata?NODE", "", []string{"node-read", "node-write"}},
		{"metadata-apply", "POST", "/v1/client/metadata?NODE", `{"Meta":{"acl-test":"1"}}`, []string{"node-write"}},
		{"alloc-stats", "GET", "/v1/client/allocation/" + allocID + "/stats", "", []string{"read-job"}},
		{"fs-ls", "GET", "/v1/client/fs/ls/" + allocID + "?path=/alloc", "", []string{"read-fs"}},
		{"fs-stat", "GET", "/v1/client/fs/stat/" + allocID + "?path=alloc/data/file.txt", "", []string{"read-fs"}},
		{"fs-cat", "GET", "/v1/client/fs/cat/" + allocID + "?path=alloc/data/file.txt", "", []string{"read-fs"}},
		{"fs-readat", "GET", "/v1/client/fs/readat/" + allocID + "?path=alloc/data/file.txt&offset=1&limit=2", "", []string{"read-fs"}},
		{"fs-stream", "GET", "/v1/client/fs/stream/" + allocID + "?path=alloc/data/file.txt&follow=false", "", []string{"read-fs"}},
		{"fs-logs", "GET", "/v1/client/fs/logs/" + allocID + "?task=web&type=stdout&plain=true", "", []string{"read-fs", "read-logs"}},
		{"alloc-gc", "GET", "/v1/client/allocation/" + doneID + "/gc", "", []string{"submit-job"}},
		{"gc-all", "GET", "/v1/client/gc?NODE", "", []string{"node-write"}},
	}
	for _, via := range []struct {
		name string
		a    *testAgent
		node string
	}{{"via-server", srv, "node_id=" + nodeID}, {"direct", node, ""}} {
		t.Run(via.name, func(t *testing.T) {
			for _, ep := range endpoints {
				for _, tok := range tokens {
					want := http.StatusForbidden
					if tok.name == "management" || contains(ep.allowed, tok.name) {
						want = http.StatusOK
					}
					u := via.a.URL() + strings.Replace(ep.path, "NODE", via.node, 1)
					var body io.Reader
					if ep.body != "" {
						body = strings.NewReader(ep.body)
					}
					code, got, _ := do(t, ep.method, u, body, tokenHeader(tok.name, tok.secret)...)
					if code != want {
						t.Errorf("%s with %s = %d %q; want %d", ep.name, tok.name, code, got, want)
						continue
					}
					if want == http.StatusForbidden {
						wantBody := "Permission denied"
						if tok.name == "bogus" {
							wantBody = "ACL token not found"
						}
						if got != wantBody {
							t.Errorf("%s with %s: body %q; want %q", ep.name, tok.name, got, wantBody)
						}
					}
				}
			}
		})
	}

	// Bodies of allowed reads are the real thing.
	hdr := []string{"X-Nomad-Token", tokens[5].secret}
	if code, body, _ := do(t, "GET", srv.URL()+"/v1/client/fs/readat/"+allocID+"?path=alloc/data/file.txt&offset=1&limit=2", nil, hdr...); code != 200 || body != "ar" {
		t.Fatalf("readat with read-fs = %d %q; want 200 \"ar\"", code, body)
	}

	// A token in the URL is never used.
	for _, q := range []string{"token", "X-Nomad-Token", "x-nomad-token"} {
		u := srv.URL() + "/v1/client/stats?node_id=" + nodeID + "&" + q + "=" + url.QueryEscape(mgmtSecret)
		if code, body, _ := do(t, "GET", u, nil); code != http.StatusForbidden {
			t.Errorf("token in ?%s = %d %q; want 403", q, code, body)
		}
	}

	// An unknown allocation is a 404 before the ACL check, even anonymous.
	if code, _, _ := do(t, "GET", srv.URL()+"/v1/client/fs/ls/"+structs.GenerateUUID(), nil); code != http.StatusNotFound {
		t.Errorf("anonymous ls of an unknown alloc = %d; want 404", code)
	}

	t.Run("go-client", func(t *testing.T) {
		alloc, _, err := mgmt.Allocations().Info(allocID, nil)
		if err != nil {
			t.Fatal(err)
		}
		secretOf := map[string]string{}
		for _, tk := range tokens {
			secretOf[tk.name] = tk.secret
		}
		readFS := apiWithToken(t, srv, secretOf["read-fs"])
		nodeRead := apiWithToken(t, srv, secretOf["node-read"])
		readLogs := apiWithToken(t, srv, secretOf["read-logs"])

		if _, err := nodeRead.Nodes().Stats(nodeID, nil); err != nil {
			t.Errorf("Nodes().Stats with node-read: %v", err)
		}
		wantDenied(t, "Nodes().Stats with read-fs", func() error { _, err := readFS.Nodes().Stats(nodeID, nil); return err })
		if _, err := nodeRead.Nodes().Meta().Read(nodeID, nil); err != nil {
			t.Errorf("Meta().Read with node-read: %v", err)
		}
		wantDenied(t, "Meta().Apply with node-read", func() error {
			_, err := nodeRead.Nodes().Meta().Apply(&nomad.NodeMetaApplyRequest{NodeID: nodeID, Meta: map[string]*string{"x": sp("y")}}, nil)
			return err
		})

		// Cat: read-fs cannot read the node, so the client falls back to
		// the server; node-read can, so it goes to the node, which says no.
		rc, err := readFS.AllocFS().Cat(alloc, "alloc/data/file.txt", nil)
		if err != nil {
			t.Fatalf("Cat with read-fs: %v", err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "marker" {
			t.Errorf("Cat with read-fs = %q; want marker", b)
		}
		wantDenied(t, "Cat with node-read", func() error {
			rc, err := nodeRead.AllocFS().Cat(alloc, "alloc/data/file.txt", nil)
			if err == nil {
				rc.Close()
			}
			return err
		})
		if _, _, err := readLogs.AllocFS().List(alloc, "/", nil); err == nil {
			t.Errorf("List with read-logs: no error; want 403")
		}
		cancel := make(chan struct{})
		defer close(cancel)
		frames, errs := readLogs.AllocFS().Logs(alloc, false, "web", "stdout", "start", 0, cancel, nil)
		var logs strings.Builder
		func() {
			for {
				select {
				case f, ok := <-frames:
					if !ok {
						return
					}
					logs.Write(f.Data)
				case err := <-errs:
					if err != nil {
						t.Errorf("Logs with read-logs: %v", err)
					}
					return
				}
			}
		}()
		if !strings.Contains(logs.String(), "hello-log") {
			t.Errorf("Logs with read-logs = %q; want hello-log", logs.String())
		}
		if _, err := readFS.Allocations().Stats(alloc, nil); err == nil {
			t.Errorf("Allocations().Stats with read-fs: no error; want 403")
		}
		if _, err := apiWithToken(t, srv, secretOf["read-job"]).Allocations().Stats(alloc, nil); err != nil {
			t.Errorf("Allocations().Stats with read-job: %v", err)
		}
	})

	t.Run("acl-api", func(t *testing.T) {
		_, _, err := srv.API(t).ACLTokens().Bootstrap(nil)
		wantStatus(t, "second bootstrap", err, 400, "ACL bootstrap already done")
		_, err = mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "broken", Rules: "node { policy = \"read\" }\nnamespace \"x\" {\n  policy = \"sudo\"\n}"}, nil)
		wantStatus(t, "malformed rules", err, 400, "line 2")
		_, err = mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "broken", Rules: "node {\n  policy = \n"}, nil)
		wantStatus(t, "syntax error", err, 400, "line ")
		_, err = apiWithToken(t, srv, secretOf(tokens, "node-write")).ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "x", Rules: ""}, nil)
		wantStatus(t, "policy by non-management", err, 403, "Permission denied")

		p, _, err := mgmt.ACLPolicies().Info("read-fs", nil)
		if err != nil || p.Rules != `namespace "default" { capabilities = ["read-fs"] }` || p.CreateIndex == 0 {
			t.Fatalf("ACLPolicies().Info = %+v, %v", p, err)
		}
		list, _, err := mgmt.ACLPolicies().List(nil)
		if err != nil || len(list) != 7 {
			t.Fatalf("ACLPolicies().List = %d, %v; want 7", len(list), err)
		}
		own, _, err := apiWithToken(t, srv, secretOf(tokens, "read-fs")).ACLPolicies().List(nil)
		if err != nil || len(own) != 1 || own[0].Name != "read-fs" {
			t.Fatalf("a client token's policy list = %+v, %v; want its own", own, err)
		}

		tok, _, err := mgmt.ACLTokens().Create(&nomad.ACLToken{Name: "short", Type: "client", Policies: []string{"read-fs"}, ExpirationTTL: 10 * time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok.ExpirationTime == nil || tok.ExpirationTime.Sub(tok.CreateTime) != 10*time.Minute || tok.AccessorID == "" || tok.SecretID == "" {
			t.Fatalf("token with TTL = %+v", tok)
		}
		self, _, err := apiWithToken(t, srv, tok.SecretID).ACLTokens().Self(nil)
		if err != nil || self.AccessorID != tok.AccessorID || self.Name != "short" {
			t.Fatalf("Self = %+v, %v", self, err)
		}
		info, _, err := mgmt.ACLTokens().Info(tok.AccessorID, nil)
		if err != nil || info.SecretID != tok.SecretID {
			t.Fatalf("Info = %+v, %v", info, err)
		}
		info.Name = "renamed"
		info.Policies = []string{"read-fs", "read-logs"}
		upd, _, err := mgmt.ACLTokens().Update(info, nil)
		if err != nil || upd.Name != "renamed" || len(upd.Policies) != 2 || upd.SecretID != tok.SecretID {
			t.Fatalf("Update = %+v, %v", upd, err)
		}
		stubs, _, err := mgmt.ACLTokens().List(nil)
		if err != nil || len(stubs) != 9 {
			t.Fatalf("ACLTokens().List = %d, %v; want 9 (bootstrap, 7 grants, short)", len(stubs), err)
		}
		if _, err := mgmt.ACLTokens().Delete(tok.AccessorID, nil); err != nil {
			t.Fatal(err)
		}
		_, _, err = apiWithToken(t, srv, tok.SecretID).ACLTokens().Self(nil)
		wantStatus(t, "deleted token self", err, 403, "ACL token not found")
		if _, err := mgmt.ACLPolicies().Delete("read-job", nil); err != nil {
			t.Fatal(err)
		}
		_, _, err = mgmt.ACLPolicies().Info("read-job", nil)
		wantStatus(t, "deleted policy", err, 404, "ACL policy not found")
	})
}

func secretOf(tokens []struct{ name, secret string }, name string) string {
	for _, t := range tokens {
		if t.name == name {
			return t.secret
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// wantStatus checks that err is the Go client's error for an HTTP status
// with a body containing text.
func wantStatus(t *testing.T, what string, err error, code int, text string) {
	t.Helper()
	var ure nomad.UnexpectedResponseError
	if !errors.As(err, &ure) {
		t.Errorf("%s: err = %v; want HTTP %d", what, err, code)
		return
	}
	if ure.StatusCode() != code || !strings.Contains(ure.Body(), text) {
		t.Errorf("%s: got %d %q; want %d %q", what, ure.StatusCode(), ure.Body(), code, text)
	}
}

func wantDenied(t *testing.T, what string, call func() error) {
	t.Helper()
	wantStatus(t, what, call(), http.StatusForbidden, "Permission denied")
}

// TestACL_RevocationReachesNode deletes a token and expects the server to
// refuse it at once and the node, which caches tokens for the 1s TTL,
// within a few TTLs.
func TestACL_RevocationReachesNode(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(time.Second))
	mgmt := apiWithToken(t, srv, bootstrap(t, srv))
	secret := makeToken(t, mgmt, "nodes", `node { policy = "read" }`)
	self, _, err := apiWithToken(t, srv, secret).ACLTokens().Self(nil)
	if err != nil {
		t.Fatal(err)
	}
	direct := node.URL() + "/v1/client/stats"
	viaServer := srv.URL() + "/v1/client/stats?node_id=" + node.Client().NodeID()
	for _, u := range []string{direct, viaServer} {
		if code, body, _ := do(t, "GET", u, nil, "X-Nomad-Token", secret); code != 200 {
			t.Fatalf("GET %s = %d %q; want 200", u, code, body)
		}
	}
	if _, err := mgmt.ACLTokens().Delete(self.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if code, body, _ := do(t, "GET", viaServer, nil, "X-Nomad-Token", secret); code != 403 || body != "ACL token not found" {
		t.Fatalf("via server after delete = %d %q; want 403 ACL token not found", code, body)
	}
	waitFor(t, 10*time.Second, "node to drop the deleted token", func() (bool, error) {
		code, body, _ := do(t, "GET", direct, nil, "X-Nomad-Token", secret)
		return code == 403 && body == "ACL token not found", nil
	})
	if took := time.Since(deleted); took > 3*time.Second {
		t.Fatalf("node honoured a deleted token for %v; want about the 1s TTL", took)
	}

	// A policy change reaches the node the same way.
	other := makeToken(t, mgmt, "nodes2", `node { policy = "read" }`)
	if code, _, _ := do(t, "GET", direct, nil, "X-Nomad-Token", other); code != 200 {
		t.Fatalf("direct with nodes2 = %d; want 200", code)
	}
	if _, err := mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "nodes2", Rules: `node { policy = "deny" }`}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node to see the policy change", func() (bool, error) {
		code, body, _ := do(t, "GET", direct, nil, "X-Nomad-Token", other)
		return code == 403 && body == "Permission denied", nil
	})
}

// TestACL_NodeImpersonation tries to act as an existing node without its
// secret, and to borrow a node's session for privileges.
func TestACL_NodeImpersonation(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node1 := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(time.Second))
	node2 := startNode(t, "node2", withServers(srv.RPCAddr()), withACL(time.Second))
	mgmtSecret := bootstrap(t, srv)
	nodeID := node1.Client().NodeID()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := rpc.Dial(ctx, srv.RPCAddr(), rpc.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	go func() { _ = sess.Serve(ctx, rpc.NewMux()) }()

	genuine := node1.Client().Node()
	fake := genuine.Copy()
	fake.SecretID = structs.GenerateUUID()
	fake.HTTPAddr = "127.0.0.1:1"
	for _, tc := range []struct {
		name   string
		method string
		args   any
		reply  any
	}{
		{"register an existing node", structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: fake}, &structs.NodeRegisterResponse{}},
		{"heartbeat as it", structs.MethodNodeHeartbeat, &structs.NodeHeartbeatRequest{NodeID: nodeID, SecretID: fake.SecretID}, &structs.NodeHeartbeatResponse{}},
		{"watch its allocations", structs.MethodNodeGetClientAllocs, &structs.NodeClientAllocsRequest{NodeID: nodeID, SecretID: fake.SecretID, MaxWait: time.Millisecond}, &structs.NodeClientAllocsResponse{}},
		{"resolve tokens as it", structs.MethodACLResolveToken, &structs.ResolveACLTokenRequest{NodeID: nodeID, NodeSecretID: fake.SecretID, SecretID: mgmtSecret}, &structs.ResolveACLTokenResponse{}},
	} {
		err := sess.Call(ctx, tc.method, tc.args, tc.reply)
		var re *rpc.RemoteError
		if !errors.As(err, &re) || re.Code != 403 || re.Message != "node secret ID does not match" {
			t.Errorf("%s: err = %v; want 403 node secret ID does not match", tc.name, err)
		}
	}
	// A client call relayed over a session with no token is anonymous,
	// whatever the session.
	err = sess.Call(ctx, structs.MethodClientStats, &structs.NodeSpecificRequest{NodeID: nodeID}, &structs.HostStats{})
	if structs.StatusCode(err) != 403 {
		t.Errorf("tokenless stats over a raw session = %v; want 403", err)
	}

	// The real node kept its record and its session.
	got, _, err := apiWithToken(t, srv, mgmtSecret).Nodes().Info(nodeID, nil)
	if err != nil || got.HTTPAddr != node1.HTTPAddr() {
		t.Fatalf("node after impersonation attempts = %+v, %v; want its own HTTPAddr %s", got, err, node1.HTTPAddr())
	}
	u := srv.URL() + "/v1/client/stats?node_id=" + nodeID
	if code, body, _ := do(t, "GET", u, nil, "X-Nomad-Token", mgmtSecret); code != 200 {
		t.Fatalf("stats of node1 via server = %d %q; want 200", code, body)
	}

	// node2 relays a user's call for node1 over node2's own session: the
	// user's (missing) token decides, not the session's identity.
	relay := node2.URL() + "/v1/client/stats?node_id=" + nodeID
	if code, body, _ := do(t, "GET", relay, nil); code != 403 || body != "Permission denied" {
		t.Fatalf("anonymous relay through node2 = %d %q; want 403 Permission denied", code, body)
	}
	if code, body, _ := do(t, "GET", relay, nil, "X-Nomad-Token", mgmtSecret); code != 200 {
		t.Fatalf("management relay through node2 = %d %q; want 200", code, body)
	}
}

// TestACL_Disabled checks that without acl { enabled } nothing changes and
// the ACL API says so.
func TestACL_Disabled(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	if code, body, _ := do(t, "GET", node.URL()+"/v1/client/stats", nil, "X-Nomad-Token", structs.GenerateUUID()); code != 200 {
		t.Fatalf("stats with a random token, ACLs off = %d %q; want 200", code, body)
	}
	_, _, err := srv.API(t).ACLTokens().Bootstrap(nil)
	wantStatus(t, "bootstrap with ACLs off", err, 400, "ACL support disabled")
}

// TestACL_NodeChecksForwardedCalls shows the node's own check on calls a
// server forwards: the server sees a policy change at once, the node only
// after its (here 30s) policy TTL, so for now the node still refuses what
// the server let through.
func TestACL_NodeChecksForwardedCalls(t *testing.T) {
	srv := startACLServer(t, "server1", 30*time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(30*time.Second))
	mgmt := apiWithToken(t, srv, bootstrap(t, srv))
	secret := makeToken(t, mgmt, "flip", `node { policy = "deny" }`)
	direct := node.URL() + "/v1/client/stats"
	viaServer := srv.URL() + "/v1/client/stats?node_id=" + node.Client().NodeID()
	if code, body, _ := do(t, "GET", direct, nil, "X-Nomad-Token", secret); code != 403 || body != "Permission denied" {
		t.Fatalf("direct with node deny = %d %q; want 403", code, body)
	}
	if _, err := mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "flip", Rules: `node { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	srvACL, err := srv.Server().ResolveToken(secret)
	if err != nil || !srvACL.AllowNodeRead() {
		t.Fatalf("server's view after the change: %v, %v; want node read", srvACL, err)
	}
	if code, body, _ := do(t, "GET", viaServer, nil, "X-Nomad-Token", secret); code != 403 || body != "Permission denied" {
		t.Fatalf("via server while the node caches the old policy = %d %q; want the node's 403", code, body)
	}
}
