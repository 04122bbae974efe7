package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
)

// withDebug sets enable_debug.
func withDebug(c *agent.Config) { c.EnableDebug = true }

// TestPprof_Matrix: with ACLs off a profile needs enable_debug (403
// without, as Nomad); with ACLs on it needs agent:write, enable_debug or
// not; through a server to a node as well.
func TestPprof_Matrix(t *testing.T) {
	plain := startServer(t, "plain")
	debugCfg := baseConfig(t, "debug")
	debugCfg.Server.Enabled, debugCfg.Server.BootstrapExpect = true, 1
	withDebug(debugCfg)
	debug := startAgent(t, debugCfg)

	aclSrv := startACLServer(t, "acl", time.Second)
	aclNode := startNode(t, "aclnode", withServers(aclSrv.RPCAddr()), withACL(time.Second))
	mgmtSecret := bootstrap(t, aclSrv)
	mgmt := apiWithToken(t, aclSrv, mgmtSecret)
	readTok := makeToken(t, mgmt, "agent-read", `agent { policy = "read" }`)
	writeTok := makeToken(t, mgmt, "agent-write", `agent { policy = "write" }`)
	nodeID := aclNode.Client().NodeID()

	cases := []struct {
		name  string
		a     *testAgent
		query string
		token string
		code  int
	}{
		{"acl off, debug off", plain, "", "", 403},
		{"acl off, debug on", debug, "", "", 200},
		{"acl on, no token", aclSrv, "", "", 403},
		{"acl on, agent read", aclSrv, "", readTok, 403},
		{"acl on, agent write", aclSrv, "", writeTok, 200},
		{"acl on, management", aclSrv, "", mgmtSecret, 200},
		{"acl on, node via server, no token", aclSrv, "?node_id=" + nodeID, "", 403},
		{"acl on, node via server, agent read", aclSrv, "?node_id=" + nodeID, readTok, 403},
		{"acl on, node via server, agent write", aclSrv, "?node_id=" + nodeID, writeTok, 200},
		{"acl on, on the node, agent read", aclNode, "", readTok, 403},
		{"acl on, on the node, management", aclNode, "", mgmtSecret, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.token != "" {
				hdr = []string{"X-Nomad-Token", tc.token}
			}
			code, body, _ := do(t, "GET", tc.a.URL()+"/v1/agent/pprof/goroutine"+tc.query, nil, hdr...)
			if code != tc.code {
				t.Fatalf("got %d %q; want %d", code, body, tc.code)
			}
			if code == 403 {
				mustContain(t, body, "Permission denied")
			}
			if code == 200 && len(body) == 0 {
				t.Fatalf("empty profile")
			}
		})
	}
}

// TestPprof_OfficialClient drives CPUProfile, Trace and Lookup through the
// Go client, here and forwarded (node_id to a node, server_id).
func TestPprof_OfficialClient(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withACL(time.Second))
	api := apiWithToken(t, srv, bootstrap(t, srv))
	ag := api.Agent()
	nodeID := node.Client().NodeID()

	cpu, err := ag.CPUProfile(nomad.PprofOptions{Seconds: 1}, nil)
	if err != nil || len(cpu) == 0 {
		t.Fatalf("CPUProfile: %d bytes, %v", len(cpu), err)
	}
	tr, err := ag.Trace(nomad.PprofOptions{NodeID: nodeID}, nil)
	if err != nil || len(tr) == 0 {
		t.Fatalf("Trace on the node: %d bytes, %v", len(tr), err)
	}
	heap, err := ag.Lookup("heap", nomad.PprofOptions{NodeID: nodeID, GC: 1}, nil)
	if err != nil || len(heap) == 0 {
		t.Fatalf("Lookup heap on the node: %d bytes, %v", len(heap), err)
	}
	gr, err := ag.Lookup("goroutine", nomad.PprofOptions{ServerID: srv.Server().MemberName(), Debug: 1}, nil)
	if err != nil || !bytes.Contains(gr, []byte("goroutine")) {
		t.Fatalf("Lookup goroutine debug=1 by server name: %.100q, %v", gr, err)
	}
	if _, err := ag.Lookup("invalid", nomad.PprofOptions{}, nil); err == nil || !strings.Contains(err.Error(), "Unexpected response code: 404") {
		t.Fatalf("unknown profile: %v; want a 404", err)
	}
	if _, err := ag.CPUProfile(nomad.PprofOptions{Seconds: 1, ServerID: "unknown.global"}, nil); err == nil || !strings.Contains(err.Error(), "500 (unknown Nomad server unknown.global)") {
		t.Fatalf("unknown server: %v; want Nomad's 500", err)
	}
	cmd, err := ag.Lookup("cmdline", nomad.PprofOptions{}, nil)
	if err != nil || len(cmd) == 0 {
		t.Fatalf("cmdline: %q, %v", cmd, err)
	}
}

// TestPprof_BadInput: each a 4xx naming what is wrong.
func TestPprof_BadInput(t *testing.T) {
	cfg := baseConfig(t, "debug")
	cfg.Server.Enabled, cfg.Server.BootstrapExpect = true, 1
	withDebug(cfg)
	srv := startAgent(t, cfg)
	cases := []struct {
		path string
		code int
		text string
	}{
		{"/v1/agent/pprof/nosuch", 404, "unknown pprof profile"},
		{"/v1/agent/pprof/profile?seconds=301", 400, "seconds"},
		{"/v1/agent/pprof/trace?seconds=-1", 400, "seconds"},
		{"/v1/agent/pprof/profile?seconds=ten", 400, "seconds"},
		{"/v1/agent/pprof/heap?debug=x", 400, "debug"},
		{"/v1/agent/pprof/heap?gc=x", 400, "gc"},
		{"/v1/agent/pprof/heap?node_id=nope", 400, "node"},
		{"/v1/agent/pprof/heap?node_id=" + "9e0d5b6c-0000-4000-8000-000000000000" + "&server_id=leader", 400, "simultaneously"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			code, body, _ := do(t, "GET", srv.URL()+tc.path, nil)
			if code != tc.code {
				t.Fatalf("got %d %q; want %d", code, body, tc.code)
			}
			mustContain(t, body, tc.text)
		})
	}
}

// TestPprof_CallerGone: a 300 s CPU profile whose caller leaves stops at
// once (the next one can start) and leaves nothing running, on a node
// through a server too.
func TestPprof_CallerGone(t *testing.T) {
	cfg := baseConfig(t, "debug")
	cfg.Server.Enabled, cfg.Server.BootstrapExpect = true, 1
	withDebug(cfg)
	srv := startAgent(t, cfg)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withDebug)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	var baseG int
	waitFor(t, 10*time.Second, "quiet baseline", func() (bool, error) {
		baseG = runtime.NumGoroutine()
		return srv.OpenStreams() == 0, nil
	})
	settled := func(what string) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() (bool, error) {
			g := runtime.NumGoroutine()
			return g <= baseG+5 && srv.OpenStreams() == 0, fmt.Errorf("goroutines %d (baseline %d), streams %d", g, baseG, srv.OpenStreams())
		})
	}
	for _, q := range []string{"", "&node_id=" + node.Client().NodeID()} {
		for _, prof := range []string{"profile", "trace"} {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL()+"/v1/agent/pprof/"+prof+"?seconds=300"+q, nil)
			resp, err := hc.Do(req)
			if err != nil || resp.StatusCode != 200 {
				cancel()
				t.Fatalf("%s%s: %v %v", prof, q, resp, err)
			}
			cancel() // the profile has started (the status came after it): leave
			resp.Body.Close()
			hc.CloseIdleConnections()
			// Well before the 300 s: the profile stopped with its caller.
			settled(prof + q + " stopped, nothing left running")
		}
	}
	// The profiler is free again: a second CPU profile starts.
	waitFor(t, 10*time.Second, "the CPU profiler free again", func() (bool, error) {
		code, body, err := tryGet(srv.URL() + "/v1/agent/pprof/profile?seconds=1")
		return code == 200, fmt.Errorf("%d %.80q %v", code, body, err)
	})
}
