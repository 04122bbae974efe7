package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"tether/server"
)

// TestServedByNode: which paths a node-only agent answers itself and which
// it forwards to its servers.
func TestServedByNode(t *testing.T) {
	cases := []struct {
		path string
		want bool
	}{
		{"/v1/client/stats", true},
		{"/v1/client/fs/logs/abc", true},
		{"/v1/agent/self", true},
		{"/v1/agent/health", true},
		{"/v1/agent/monitor", true},
		{"/v1/agent/pprof/heap", true},
		{"/v1/agent/servers", true},
		{"/v1/metrics", true},
		{"/debug/pprof/", true},
		{"/v1/agent/members", false},
		{"/v1/jobs", false},
		{"/v1/job/x/allocations", false},
		{"/v1/nodes", false},
		{"/v1/node/x", false},
		{"/v1/allocations", false},
		{"/v1/evaluations", false},
		{"/v1/acl/token/self", false},
		{"/v1/status/leader", false},
		{"/v1/operator/raft/configuration", false},
		{"/v1/regions", false},
		{"/v1/system/gc", false},
		{"/v1/clientx", false},
		{"/v1/agentx", false},
	}
	for _, tc := range cases {
		if got := servedByNode(tc.path); got != tc.want {
			t.Errorf("servedByNode(%q) = %v; want %v", tc.path, got, tc.want)
		}
	}
}

// TestForwardHeader: hop-by-hop headers, and those Connection names, stay
// on their hop; the rest is forwarded.
func TestForwardHeader(t *testing.T) {
	in := http.Header{
		"X-Nomad-Token":     {"secret"},
		"Authorization":     {"Bearer secret"},
		"Content-Type":      {"application/json"},
		"Connection":        {"keep-alive, X-Private"},
		"X-Private":         {"hop"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
	}
	out := forwardHeader(in)
	for _, k := range []string{"X-Nomad-Token", "Authorization", "Content-Type"} {
		if out.Get(k) != in.Get(k) {
			t.Errorf("%s = %q; want %q", k, out.Get(k), in.Get(k))
		}
	}
	for _, k := range []string{"Connection", "X-Private", "Keep-Alive", "Transfer-Encoding", "Upgrade"} {
		if v, ok := out[k]; ok {
			t.Errorf("%s forwarded as %q", k, v)
		}
	}
	if in.Get("X-Private") != "hop" {
		t.Error("forwardHeader changed its argument")
	}
	if forwardHeader(nil) == nil {
		t.Error("forwardHeader(nil) is nil")
	}
}

// TestForwardContext: a blocking query's call lasts its wait (the server's
// default, at most its longest) plus the server's jitter and half a
// minute; other calls keep the RPC layer's default timeout.
func TestForwardContext(t *testing.T) {
	cases := []struct {
		query string
		want  time.Duration // 0: no deadline of its own
	}{
		{"", 0},
		{"wait=1m", 0},
		{"index=5&wait=1m", time.Minute + time.Minute/16 + 30*time.Second},
		{"index=5&wait=60000ms", time.Minute + time.Minute/16 + 30*time.Second},
		{"index=5", server.DefaultQueryTime + server.DefaultQueryTime/16 + 30*time.Second},
		{"index=5&wait=bogus", server.DefaultQueryTime + server.DefaultQueryTime/16 + 30*time.Second},
		{"index=5&wait=1h", server.MaxQueryTime + server.MaxQueryTime/16 + 30*time.Second},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/v1/jobs?"+tc.query, nil)
		before := time.Now()
		ctx, cancel := forwardContext(r)
		dl, ok := ctx.Deadline()
		cancel()
		switch {
		case tc.want == 0 && ok:
			t.Errorf("%q: deadline in %v; want none", tc.query, time.Until(dl))
		case tc.want != 0 && (!ok || dl.Before(before.Add(tc.want)) || dl.After(time.Now().Add(tc.want))):
			t.Errorf("%q: deadline %v (ok %v); want %v from now", tc.query, dl.Sub(before), ok, tc.want)
		}
	}
}
