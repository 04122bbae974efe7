package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/structs"
)

// provoke makes agent a log a DEBUG line carrying marker: a refused call
// on its own HTTP API ("request refused" with the path).
func provoke(t *testing.T, a *testAgent, marker string) {
	t.Helper()
	_, _, _ = tryGet(a.URL() + "/v1/client/allocation/" + marker + "/stats")
}

// watchMonitor reads frames until one carries marker, provoking it on
// target now and then.
func watchMonitor(t *testing.T, frames <-chan *nomad.StreamFrame, errc <-chan error, target *testAgent, marker string) string {
	t.Helper()
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	provoke(t, target, marker)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("monitor ended: %v", <-errc)
			}
			if f != nil && strings.Contains(string(f.Data), marker) {
				return string(f.Data)
			}
		case err := <-errc:
			t.Fatalf("monitor: %v", err)
		case <-tick.C: // the line may have come before the sink: make another
			provoke(t, target, marker)
		case <-deadline:
			t.Fatalf("no log line with %s", marker)
		}
	}
}

// TestMonitor_NodeThroughServer streams a node's log through a server
// with the official client (node_id=), and a server's own.
func TestMonitor_NodeThroughServer(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	other := startNode(t, "node2", withServers(srv.RPCAddr()))
	nodeID := node.Client().NodeID()

	cases := []struct {
		name   string
		via    *testAgent // whose HTTP API is asked
		params map[string]string
		target *testAgent // whose log is wanted
		want   string
	}{
		{"node via server", srv, map[string]string{"log_level": "debug", "node_id": nodeID}, node, "[DEBUG]"},
		{"server itself", srv, map[string]string{"log_level": "debug"}, srv, "[DEBUG]"},
		{"server by name", srv, map[string]string{"log_level": "debug", "server_id": srv.Server().MemberName()}, srv, "[DEBUG]"},
		{"node json", srv, map[string]string{"log_level": "trace", "log_json": "true", "node_id": nodeID}, node, `"@level":"debug"`},
		// From a node-only agent, relayed by its server.
		{"other node via a node", other, map[string]string{"log_level": "debug", "node_id": nodeID}, node, "[DEBUG]"},
		{"leader via a node", other, map[string]string{"log_level": "debug", "server_id": "leader"}, srv, "[DEBUG]"},
		{"a node itself", other, map[string]string{"log_level": "debug"}, other, "[DEBUG]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			defer close(stop)
			frames, errc := tc.via.API(t).Agent().Monitor(stop, &nomad.QueryOptions{Params: tc.params})
			marker := structs.GenerateUUID()
			got := watchMonitor(t, frames, errc, tc.target, marker)
			if !strings.Contains(got, tc.want) {
				t.Fatalf("line %q; want it to contain %q", got, tc.want)
			}
			if tc.params["log_json"] == "true" {
				for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
					var v map[string]any
					if err := json.Unmarshal([]byte(l), &v); err != nil {
						t.Fatalf("log_json line %q: %v", l, err)
					}
				}
			}
		})
	}
}

// TestMonitor_OtherServer streams a peer's log through another server
// (server_id= by member name and by RPC address).
func TestMonitor_OtherServer(t *testing.T) {
	c := startCluster(t, 2)
	a, b := c.servers[0], c.servers[1]
	for _, id := range []string{b.Server().MemberName(), b.RPCAddr()} {
		stop := make(chan struct{})
		frames, errc := a.API(t).Agent().Monitor(stop, &nomad.QueryOptions{Params: map[string]string{"log_level": "debug", "server_id": id}})
		marker := structs.GenerateUUID()
		watchMonitor(t, frames, errc, b, marker)
		close(stop)
	}
	code, body, _ := do(t, "GET", a.URL()+"/v1/agent/monitor?server_id=unknown.global", nil)
	if code != 500 || !strings.Contains(body, "unknown Nomad server unknown.global") {
		t.Fatalf("unknown server: got %d %q; want 500 unknown Nomad server", code, body)
	}
}

// TestMonitor_BadInputAndACL: an unknown level is a 400 naming log_level;
// with ACLs on, agent:read is needed, on the server and on the node.
func TestMonitor_BadInputAndACL(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(time.Second))
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	readTok := makeToken(t, mgmt, "agent-read", `agent { policy = "read" }`)
	nodeTok := makeToken(t, mgmt, "node-read", `node { policy = "read" }`)
	nodeID := node.Client().NodeID()

	cases := []struct {
		name, base, query, token string
		code                     int
		text                     string
	}{
		{"bad level", srv.URL(), "?log_level=loud", readTok, 400, "log_level"},
		{"bad log_json", srv.URL(), "?log_json=maybe", readTok, 400, "log_json"},
		{"node and server", srv.URL(), "?node_id=" + nodeID + "&server_id=leader", readTok, 400, "simultaneously"},
		{"bad node id", srv.URL(), "?node_id=nope", readTok, 400, "node"},
		{"no token", srv.URL(), "", "", 403, "Permission denied"},
		{"node token", srv.URL(), "", nodeTok, 403, "Permission denied"},
		{"no token via server to node", srv.URL(), "?node_id=" + nodeID, "", 403, "Permission denied"},
		{"no token on node", node.URL(), "", "", 403, "Permission denied"},
		{"read token", srv.URL(), "", readTok, 200, ""},
		{"read token to node", srv.URL(), "?node_id=" + nodeID, readTok, 200, ""},
		{"read token on node", node.URL(), "", readTok, 200, ""},
		{"management", srv.URL(), "?log_level=trace", mgmtSecret, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", tc.base+"/v1/agent/monitor"+tc.query, nil)
			if tc.token != "" {
				req.Header.Set("X-Nomad-Token", tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("got %d; want %d", resp.StatusCode, tc.code)
			}
			if tc.code != 200 {
				b := make([]byte, 512)
				n, _ := resp.Body.Read(b)
				mustContain(t, string(b[:n]), tc.text)
			}
		})
	}
}

// TestMonitor_CallerGone opens monitors through a server to a node and
// drops them: no goroutine and no stream is left on either agent.
func TestMonitor_CallerGone(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	tr := &http.Transport{}
	hc := &http.Client{Transport: tr}
	url := srv.URL() + "/v1/agent/monitor?log_level=trace&node_id=" + node.Client().NodeID()
	open := func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("monitor: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("monitor: status %d", resp.StatusCode)
		}
		// The status came after the node's acknowledgement: the whole
		// path is open. Leave.
	}
	open() // warm the pools
	tr.CloseIdleConnections()
	var baseG int
	waitFor(t, 10*time.Second, "quiet baseline", func() (bool, error) {
		baseG = runtime.NumGoroutine()
		return srv.OpenStreams() == 0 && node.OpenStreams() == 0, nil
	})
	for i := 0; i < 50; i++ {
		open()
	}
	tr.CloseIdleConnections()
	waitFor(t, 20*time.Second, "goroutines back to baseline", func() (bool, error) {
		g := runtime.NumGoroutine()
		if n := srv.OpenStreams(); n != 0 {
			return false, fmt.Errorf("server still has %d streams", n)
		}
		return g <= baseG+5, fmt.Errorf("goroutines %d (baseline %d)", g, baseG)
	})
}

// TestMonitor_RequestComplete: with a monitor at debug the agent logs
// every request it completes, as Nomad's does (the official client's
// TestAgent_Monitor waits for a DEBUG line after a successful call).
func TestMonitor_RequestComplete(t *testing.T) {
	srv := startServer(t, "server1")
	api := srv.API(t)
	stop := make(chan struct{})
	defer close(stop)
	frames, errc := api.Agent().Monitor(stop, &nomad.QueryOptions{Params: map[string]string{"log_level": "debug"}})
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("monitor ended: %v", <-errc)
			}
			if f != nil && strings.Contains(string(f.Data), "[DEBUG]") && strings.Contains(string(f.Data), "request complete") &&
				strings.Contains(string(f.Data), "path=/v1/agent/self") {
				return
			}
		case err := <-errc:
			t.Fatalf("monitor: %v", err)
		case <-tick.C: // the sink may not be registered yet: ask again
			if _, err := api.Agent().Region(); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("no DEBUG request complete line for GET /v1/agent/self")
		}
	}
}
