package integration

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/structs"
)

// TestACLParity_Disabled: with ACLs off the ACL endpoints the official
// client calls answer Nomad's 400, one-time tokens included.
func TestACLParity_Disabled(t *testing.T) {
	srv := startServer(t, "server1")
	api := srv.API(t)
	calls := []struct {
		name string
		call func() error
	}{
		{"ACLTokens().List", func() error { _, _, err := api.ACLTokens().List(nil); return err }},
		{"ACLTokens().UpsertOneTimeToken", func() error { _, _, err := api.ACLTokens().UpsertOneTimeToken(nil); return err }},
		{"ACLTokens().ExchangeOneTimeToken", func() error {
			_, _, err := api.ACLTokens().ExchangeOneTimeToken(structs.GenerateUUID(), nil)
			return err
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.name, tc.call(), 400, "ACL support disabled")
		})
	}
}

// TestACLParity_Tokens drives what the issue found different from Nomad
// v1.6.5 through the official client: a malformed BootstrapSecret, a
// token naming a policy that does not exist yet (it gains the policy's
// rights once it does), and one-time tokens made and exchanged.
func TestACLParity_Tokens(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	anon := srv.API(t)
	waitFor(t, 20*time.Second, "a leader", func() (bool, error) {
		_, err := anon.Status().Leader()
		return err == nil, err
	})
	_, _, err := anon.ACLTokens().BootstrapOpts("not-a-uuid", nil)
	wantStatus(t, "malformed BootstrapSecret", err, 400, "invalid acl token")
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)

	tok, _, err := mgmt.ACLTokens().Create(&nomad.ACLToken{Name: "early", Type: "client", Policies: []string{"made-later"}}, nil)
	if err != nil {
		t.Fatalf("token naming a policy not made yet: %v", err)
	}
	early := apiWithToken(t, srv, tok.SecretID)
	_, _, err = early.Nodes().List(nil)
	wantStatus(t, "node list before the policy exists", err, 403, "Permission denied")
	if _, err := mgmt.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "made-later", Rules: `node { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := early.Nodes().List(nil); err != nil {
		t.Fatalf("node list once the policy exists: %v", err)
	}

	before := time.Now()
	ott, wm, err := early.ACLTokens().UpsertOneTimeToken(nil)
	if err != nil {
		t.Fatalf("UpsertOneTimeToken: %v", err)
	}
	ttl := ott.ExpiresAt.Sub(before)
	if ott.AccessorID != tok.AccessorID || !structs.IsUUID(ott.OneTimeSecretID) || ttl < 9*time.Minute || ttl > 11*time.Minute || wm.LastIndex == 0 {
		t.Fatalf("one-time token = %+v (index %d, TTL %v); want one for %s, 10m", ott, wm.LastIndex, ttl, tok.AccessorID)
	}
	got, _, err := anon.ACLTokens().ExchangeOneTimeToken(ott.OneTimeSecretID, nil)
	if err != nil || got.AccessorID != tok.AccessorID || got.SecretID != tok.SecretID {
		t.Fatalf("ExchangeOneTimeToken = %+v, %v; want the token", got, err)
	}
	_, _, err = anon.ACLTokens().ExchangeOneTimeToken(ott.OneTimeSecretID, nil)
	wantStatus(t, "second exchange", err, 403, "Permission denied")
	_, _, err = anon.ACLTokens().UpsertOneTimeToken(nil)
	wantStatus(t, "one-time token for the anonymous caller", err, 403, "Permission denied")

	code, body, _ := do(t, "PUT", srv.URL()+"/v1/acl/token/onetime/exchange", nil)
	if code != 400 {
		t.Errorf("exchange without a body = %d %q; want 400", code, body)
	}
}

// TestStatusParity_NoLeader: a server that cannot elect a leader (it
// expects a second server that never comes) answers /v1/status/leader
// with Nomad's 500, so Status().Leader() returns an error.
func TestStatusParity_NoLeader(t *testing.T) {
	cfg := baseConfig(t, "alone")
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 2
	srv := startAgent(t, cfg)
	leader, err := srv.API(t).Status().Leader()
	wantStatus(t, "Status().Leader() without a leader", err, 500, "No cluster leader")
	if leader != "" {
		t.Errorf("leader = %q; want none", leader)
	}
}

// isDenied reports whether err is the API's 403, not merely an error
// whose text holds "403" (an address's port did once). Some client
// methods (Agent().Join) wrap the response error with %v, so its text is
// the fallback.
func isDenied(err error) bool {
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) && ue.HasStatusCode() {
		return ue.StatusCode() == http.StatusForbidden
	}
	return err != nil && strings.Contains(err.Error(), "Unexpected response code: 403")
}

// TestACLParity_ClusterOps holds the cluster operations and the cluster
// reads to Nomad's ACLs, through a server and a node: members need
// node:read, the raft configuration operator:read, peer removal
// operator:write, join and force-leave agent:write, the node's server
// list agent:read to read and agent:write to replace, the system GC a
// management token; regions need nothing.
func TestACLParity_ClusterOps(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(time.Second))
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	secrets := map[string]string{"anonymous": "", "management": mgmtSecret}
	for name, rules := range map[string]string{
		"agent-read":     `agent { policy = "read" }`,
		"agent-write":    `agent { policy = "write" }`,
		"operator-read":  `operator { policy = "read" }`,
		"operator-write": `operator { policy = "write" }`,
		"node-read":      `node { policy = "read" }`,
	} {
		secrets[name] = makeToken(t, mgmt, name, rules)
	}
	closed := closedAddr(t)
	calls := []struct {
		name    string
		call    func(s, n *nomad.Client) error
		allowed []string // besides management
	}{
		{"Regions().List", func(s, n *nomad.Client) error { _, err := s.Regions().List(); return err },
			[]string{"anonymous", "agent-read", "agent-write", "operator-read", "operator-write", "node-read"}},
		{"Agent().Members", func(s, n *nomad.Client) error { _, err := s.Agent().Members(); return err }, []string{"node-read"}},
		{"Operator().RaftGetConfiguration", func(s, n *nomad.Client) error { _, err := s.Operator().RaftGetConfiguration(nil); return err },
			[]string{"operator-read", "operator-write"}},
		{"Operator().RaftGetConfiguration through the node", func(s, n *nomad.Client) error {
			_, err := n.Operator().RaftGetConfiguration(nil)
			return err
		}, []string{"operator-read", "operator-write"}},
		{"Operator().RaftRemovePeerByID", func(s, n *nomad.Client) error { return s.Operator().RaftRemovePeerByID("nope", nil) },
			[]string{"operator-write"}},
		{"Agent().Join", func(s, n *nomad.Client) error { _, err := s.Agent().Join(closed); return err }, []string{"agent-write"}},
		{"Agent().ForceLeave", func(s, n *nomad.Client) error { return s.Agent().ForceLeave("nobody") }, []string{"agent-write"}},
		{"Agent().Servers on the node", func(s, n *nomad.Client) error { _, err := n.Agent().Servers(); return err },
			[]string{"agent-read", "agent-write"}},
		{"Agent().SetServers on the node", func(s, n *nomad.Client) error { return n.Agent().SetServers([]string{srv.RPCAddr()}) },
			[]string{"agent-write"}},
		{"System().GarbageCollect", func(s, n *nomad.Client) error { return s.System().GarbageCollect() }, nil},
		{"System().GarbageCollect through the node", func(s, n *nomad.Client) error { return n.System().GarbageCollect() }, nil},
	}
	for _, tc := range calls {
		for name, secret := range secrets {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				err := tc.call(apiWithToken(t, srv, secret), apiWithToken(t, node, secret))
				denied := err != nil && isDenied(err)
				want := name == "management" || contains(tc.allowed, name)
				if denied == want {
					t.Errorf("err = %v; want allowed %v", err, want)
				}
			})
		}
	}
}
