package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/server"
	"tether/structs"
)

// routeFixture is two servers, node0 on srv0 with a running allocation,
// node1 (a node-only agent) on srv1.
type routeFixture struct {
	c          *cluster
	n0, n1     *testAgent
	nodeID     string
	allocID    string
	srv0, srv1 string // member names
}

func startRouteFixture(t *testing.T, tune ...func(*server.Config)) *routeFixture {
	t.Helper()
	c := startCluster(t, 2, tune...)
	f := &routeFixture{c: c}
	f.n0 = startNode(t, "node0", withServers(c.servers[0].RPCAddr()), withRawExec())
	f.n1 = startNode(t, "node1", withServers(c.servers[1].RPCAddr()))
	f.nodeID = f.n0.Client().NodeID()
	f.srv0, f.srv1 = c.servers[0].Server().MemberName(), c.servers[1].Server().MemberName()
	api := c.servers[0].API(t)
	job := &nomad.Job{ID: ptr("route"), Type: ptr("service"), Datacenters: []string{"dc1"},
		Constraints: []*nomad.Constraint{{LTarget: "${node.unique.name}", RTarget: "node0", Operand: "="}},
		TaskGroups:  []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("web", `echo hi > "$NOMAD_ALLOC_DIR/data/f"; while :; do sleep 1; done`)}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	f.allocID = waitAllocsStatus(t, api, "route", 1, "running")[0].ID
	return f
}

// explain reads GET /v1/client/route on base.
func explain(t *testing.T, base, query string, hdr ...string) (int, structs.RouteExplain, string) {
	t.Helper()
	code, body, _ := do(t, "GET", base+"/v1/client/route?"+query, nil, hdr...)
	var out structs.RouteExplain
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("route explain %s: %v in %s", query, err, body)
		}
	}
	return code, out, body
}

// TestRoute_Headers checks the route headers of unary, streaming and
// bulk calls answered by the node itself (0 hops), by the server holding
// the node's session (1), through its peer (2), and relayed by another
// node's agent; and that "No path to node" keeps its 404 and exact body
// and says why in headers: no session (since when the holder saw it go)
// and, once the servers mark it down, the node down.
func TestRoute_Headers(t *testing.T) {
	f := startRouteFixture(t, func(c *server.Config) {
		c.MinHeartbeatTTL = time.Second
		c.HeartbeatGrace = time.Second
	})
	s0, s1 := f.c.servers[0], f.c.servers[1]
	paths := []string{
		"/v1/client/stats?node_id=" + f.nodeID,
		"/v1/client/allocation/" + f.allocID + "/stats",
		"/v1/client/fs/cat/" + f.allocID + "?path=alloc/data/f",
		"/v1/client/fs/logs/" + f.allocID + "?task=web&type=stdout&plain=true",
		"/v1/client/fs/archive/" + f.allocID + "?path=alloc",
	}
	cases := []struct {
		name                   string
		base                   string
		servedBy, nodeSrv, hop string
		relay                  string
	}{
		{"node itself", f.n0.URL(), "node0", "", "0", ""},
		{"holder", s0.URL(), f.srv0, f.srv0, "1", ""},
		{"peer", s1.URL(), f.srv1, f.srv0, "2", ""},
		// Relayed by node1's agent through its server (srv1), which tells
		// it the rest of the way: srv0 holds the session, 3 hops in all.
		{"other node", f.n1.URL(), "node1", f.srv0, "3", s1.RPCAddr()},
	}
	for _, tc := range cases {
		for _, p := range paths {
			code, body, h := do(t, "GET", tc.base+p, nil)
			if code != 200 {
				t.Fatalf("%s %s: %d %s", tc.name, p, code, body)
			}
			for _, want := range [][2]string{
				{structs.HeaderServedBy, tc.servedBy}, {structs.HeaderNodeServer, tc.nodeSrv},
				{structs.HeaderHops, tc.hop}, {structs.HeaderRelay, tc.relay},
			} {
				if got := h.Get(want[0]); got != want[1] {
					t.Errorf("%s %s: %s %q; want %q", tc.name, p, want[0], got, want[1])
				}
			}
		}
	}

	// The node goes away: no session anywhere.
	stopped := time.Now()
	f.n0.Shutdown(t.Context())
	waitFor(t, 10*time.Second, "node0's session gone from srv0", func() (bool, error) {
		return s0.Server().Stats()["sessions"] == 0, nil
	})
	for _, tc := range []struct {
		name   string
		base   string
		since  bool // the answering server saw the session go
		reason string
	}{{"holder", s0.URL(), true, structs.NoPathNoSession}, {"peer", s1.URL(), false, structs.NoPathNoSession}} {
		code, body, h := do(t, "GET", tc.base+"/v1/client/stats?node_id="+f.nodeID, nil)
		if code != 404 || body != "No path to node" {
			t.Fatalf("%s: %d %q; want 404 %q", tc.name, code, body, "No path to node")
		}
		if got := h.Get(structs.HeaderNoPathReason); got != tc.reason {
			t.Errorf("%s: reason %q; want %q", tc.name, got, tc.reason)
		}
		since, err := time.Parse(time.RFC3339Nano, h.Get(structs.HeaderNoPathSince))
		switch {
		case tc.since && (err != nil || since.Before(stopped.Add(-time.Second)) || since.After(time.Now())):
			t.Errorf("%s: since %q (%v); want the time the session went, about %v", tc.name, h.Get(structs.HeaderNoPathSince), err, stopped)
		case !tc.since && h.Get(structs.HeaderNoPathSince) != "":
			t.Errorf("%s: since %q; want none (it never held the session)", tc.name, h.Get(structs.HeaderNoPathSince))
		}
		if h.Get(structs.HeaderHops) != "" || h.Get(structs.HeaderNodeServer) != "" {
			t.Errorf("%s: no path, yet hops %q node server %q", tc.name, h.Get(structs.HeaderHops), h.Get(structs.HeaderNodeServer))
		}
	}

	// Marked down after its TTL: the reason says so, with the time.
	waitFor(t, 30*time.Second, "node0 down", func() (bool, error) {
		_, _, h := do(t, "GET", s1.URL()+"/v1/client/stats?node_id="+f.nodeID, nil)
		return h.Get(structs.HeaderNoPathReason) == structs.NoPathNodeDown, fmt.Errorf("reason %q", h.Get(structs.HeaderNoPathReason))
	})
	_, _, h := do(t, "GET", s1.URL()+"/v1/client/fs/cat/"+f.allocID+"?path=alloc/data/f", nil)
	if since, err := time.Parse(time.RFC3339Nano, h.Get(structs.HeaderNoPathSince)); err != nil || since.Before(stopped) {
		t.Errorf("node down: since %q (%v); want after %v", h.Get(structs.HeaderNoPathSince), err, stopped)
	}
	code, ex, body := explain(t, s1.URL(), "node_id="+f.nodeID)
	if code != 200 || ex.Reachable || ex.NoPath == nil || ex.NoPath.Reason != structs.NoPathNodeDown || ex.NodeStatus != "down" {
		t.Errorf("explain of a down node: %d %s", code, body)
	}
}

// TestRoute_Explain explains routes by node and by allocation from the
// holder, its peer, the node itself and another node's agent, and
// refuses bad input.
func TestRoute_Explain(t *testing.T) {
	f := startRouteFixture(t)
	s0, s1 := f.c.servers[0], f.c.servers[1]
	for _, q := range []string{"node_id=" + f.nodeID, "alloc_id=" + f.allocID} {
		for _, tc := range []struct {
			name string
			base string
			want structs.RouteExplain
		}{
			{"holder", s0.URL(), structs.RouteExplain{ServedBy: f.srv0, NodeServer: f.srv0, NodeServerAddr: s0.RPCAddr(), Hops: 1}},
			{"peer", s1.URL(), structs.RouteExplain{ServedBy: f.srv1, NodeServer: f.srv0, NodeServerAddr: s0.RPCAddr(), Hops: 2}},
			{"node itself", f.n0.URL(), structs.RouteExplain{ServedBy: "node0", Hops: 0}},
			{"other node", f.n1.URL(), structs.RouteExplain{ServedBy: "node1", Relay: s1.RPCAddr(), NodeServer: f.srv0, NodeServerAddr: s0.RPCAddr(), Hops: 3}},
		} {
			code, got, body := explain(t, tc.base, q)
			w := tc.want
			if code != 200 || got.NodeID != f.nodeID || got.ServedBy != w.ServedBy || got.Relay != w.Relay ||
				got.NodeServer != w.NodeServer || got.NodeServerAddr != w.NodeServerAddr || got.Hops != w.Hops ||
				!got.Reachable || got.NoPath != nil || got.NodeStatus != "ready" {
				t.Errorf("%s %s: %d %s; want %+v", tc.name, q, code, body, w)
			}
		}
	}
	// A second explain from the peer finds the holder in its cache.
	if _, got, body := explain(t, s1.URL(), "node_id="+f.nodeID); !got.Cached {
		t.Errorf("peer, again: not cached: %s", body)
	}
	for _, tc := range []struct {
		query string
		code  int
		text  string
	}{
		{"", 400, "must provide node_id or alloc_id"},
		{"node_id=" + f.nodeID + "&alloc_id=" + f.allocID, 400, "exclusive"},
		{"node_id=nope", 400, "node"},
		{"alloc_id=nope", 400, "alloc"},
		{"node_id=" + structs.GenerateUUID(), 404, "Unknown node"},
		{"alloc_id=" + structs.GenerateUUID(), 404, "Unknown allocation"},
	} {
		for _, base := range []string{s1.URL(), f.n1.URL()} {
			code, _, body := explain(t, base, tc.query)
			if code != tc.code || !strings.Contains(body, tc.text) {
				t.Errorf("%s ?%s: %d %q; want %d containing %q", base, tc.query, code, body, tc.code, tc.text)
			}
		}
	}
	if code, _, _ := do(t, http.MethodPost, s1.URL()+"/v1/client/route?node_id="+f.nodeID, nil); code != 405 {
		t.Errorf("POST: %d; want 405", code)
	}
}

// TestRoute_ACLMatrix calls the archive and the route explain with no
// token, a bogus one, one grant each and management, through a server
// and on the node: the archive takes read-fs (on the allocation's
// namespace), the explain node:read.
func TestRoute_ACLMatrix(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec(), withACL(time.Second))
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	tokens := []struct{ name, secret string }{
		{"none", ""},
		{"bogus", structs.GenerateUUID()},
		{"node-read", makeToken(t, mgmt, "node-read", `node { policy = "read" }`)},
		{"read-fs", makeToken(t, mgmt, "read-fs", `namespace "default" { capabilities = ["read-fs"] }`)},
		{"read-logs", makeToken(t, mgmt, "read-logs", `namespace "default" { capabilities = ["read-logs"] }`)},
		{"other-ns", makeToken(t, mgmt, "other-ns", `namespace "other" { policy = "write" }`)},
		{"management", mgmtSecret},
	}
	if _, _, err := mgmt.Jobs().Register(&nomad.Job{ID: ptr("aclarc"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("web", "while :; do sleep 1; done")}}}}, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, mgmt, "aclarc", 1, "running")[0].ID
	nodeID := node.Client().NodeID()
	endpoints := []struct {
		name    string
		path    string
		allowed []string
	}{
		{"archive", "/v1/client/fs/archive/" + allocID + "?path=alloc&format=tar", []string{"read-fs", "management"}},
		{"route by node", "/v1/client/route?node_id=" + nodeID, []string{"node-read", "management"}},
		{"route by alloc", "/v1/client/route?alloc_id=" + allocID, []string{"node-read", "management"}},
	}
	for _, base := range []string{srv.URL(), node.URL()} {
		for _, ep := range endpoints {
			for _, tok := range tokens {
				code, body, _ := do(t, "GET", base+ep.path, nil, tokenHeader(tok.name, tok.secret)...)
				want := 403
				if contains(ep.allowed, tok.name) {
					want = 200
				}
				if code != want {
					t.Errorf("%s %s with %s: %d %.80q; want %d", base, ep.name, tok.name, code, body, want)
				}
			}
		}
	}
}
