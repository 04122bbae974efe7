package integration

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// healthOf reads /v1/agent/health with query q.
func healthOf(t *testing.T, a *testAgent, q string) (int, map[string]struct {
	Ok      bool   `json:"ok"`
	Message string `json:"message"`
}) {
	t.Helper()
	code, body, _ := do(t, "GET", a.URL()+"/v1/agent/health"+q, nil)
	var out map[string]struct {
		Ok      bool   `json:"ok"`
		Message string `json:"message"`
	}
	if code == 200 || code == 500 {
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("health%s: %d %q: %v", q, code, body, err)
		}
	}
	return code, out
}

// TestHealth_Roles checks Nomad's shape: one key per role the agent has,
// ?type= picks one, a role the agent lacks is "<role> not enabled", and
// an unknown type is a 400 naming the parameter.
func TestHealth_Roles(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	waitFor(t, 10*time.Second, "a leader", func() (bool, error) { return srv.Server().Leader() != "", nil })

	cases := []struct {
		name   string
		a      *testAgent
		q      string
		code   int
		keys   map[string]string // key -> message
		wantOk map[string]bool
	}{
		{"server", srv, "", 200, map[string]string{"server": "ok"}, map[string]bool{"server": true}},
		{"server type=server", srv, "?type=server", 200, map[string]string{"server": "ok"}, map[string]bool{"server": true}},
		{"server type=client", srv, "?type=client", 200, map[string]string{"client": "client not enabled"}, map[string]bool{"client": false}},
		{"node", node, "", 200, map[string]string{"client": "ok"}, map[string]bool{"client": true}},
		{"node type=server", node, "?type=server", 200, map[string]string{"server": "server not enabled"}, map[string]bool{"server": false}},
		{"node both types", node, "?type=client&type=server", 200,
			map[string]string{"client": "ok", "server": "server not enabled"}, map[string]bool{"client": true, "server": false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, got := healthOf(t, tc.a, tc.q)
			if code != tc.code || len(got) != len(tc.keys) {
				t.Fatalf("got %d %v; want %d with keys %v", code, got, tc.code, tc.keys)
			}
			for k, msg := range tc.keys {
				if got[k].Message != msg || got[k].Ok != tc.wantOk[k] {
					t.Errorf("%s = %+v; want ok=%v message %q", k, got[k], tc.wantOk[k], msg)
				}
			}
		})
	}

	code, body, _ := do(t, "GET", srv.URL()+"/v1/agent/health?type=bogus", nil)
	if code != 400 {
		t.Fatalf("type=bogus: got %d %q; want 400", code, body)
	}
	mustContain(t, body, "parameter type")
	if code, _, _ := do(t, "PUT", srv.URL()+"/v1/agent/health", nil); code != 405 {
		t.Fatalf("PUT: got %d; want 405", code)
	}

	// The official client reads it.
	h, err := srv.API(t).Agent().Health()
	if err != nil || h.Server == nil || !h.Server.Ok || h.Client != nil {
		t.Fatalf("Agent().Health() = %+v, %v; want a healthy server only", h, err)
	}
}

// TestHealth_ServerWithoutLeader: a server still waiting for the peers
// bootstrap_expect asks for has no leader, and says so with a 500.
func TestHealth_ServerWithoutLeader(t *testing.T) {
	cfg := baseConfig(t, "lonely")
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 3
	srv := startAgent(t, cfg)
	code, got := healthOf(t, srv, "")
	if code != 500 || got["server"].Ok || got["server"].Message != "No cluster leader" {
		t.Fatalf("got %d %+v; want 500 with server ok=false \"No cluster leader\"", code, got)
	}
	h, err := srv.API(t).Agent().Health()
	if err != nil || h.Server == nil || h.Server.Ok {
		t.Fatalf("Agent().Health() = %+v, %v; want server not ok", h, err)
	}
}

// TestHealth_NodeCutOff: a node whose only server stops is unhealthy
// (500) until it has a server again.
func TestHealth_NodeCutOff(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	if code, got := healthOf(t, node, ""); code != 200 || !got["client"].Ok {
		t.Fatalf("connected node: got %d %+v; want 200 ok", code, got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node health 500", func() (bool, error) {
		code, got := healthOf(t, node, "?type=client")
		return code == 500 && !got["client"].Ok && got["client"].Message != "", nil
	})
}

// TestHealth_ServerWhosePeersAreGone: of two servers, the one left after
// the other stops has no quorum and no leader: 500 until the peer returns.
func TestHealth_ServerWhosePeersAreGone(t *testing.T) {
	c := startCluster(t, 2)
	left := c.servers[1]
	if code, got := healthOf(t, left, "?type=server"); code != 200 || !got["server"].Ok {
		t.Fatalf("healthy cluster: got %d %+v; want 200 ok", code, got)
	}
	c.stop(0)
	waitFor(t, 15*time.Second, "health 500 without a leader", func() (bool, error) {
		code, got := healthOf(t, left, "")
		return code == 500 && got["server"].Message == "No cluster leader", nil
	})
	c.restart(0)
	c.waitStable(2)
	waitFor(t, 15*time.Second, "health 200 with a leader again", func() (bool, error) {
		code, _ := healthOf(t, left, "")
		return code == 200, nil
	})
}
