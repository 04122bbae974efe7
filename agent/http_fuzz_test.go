package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// FuzzHTTPAPI sends requests with fuzzed paths, query strings and bodies
// to a dev agent (a server and a node in one process) that runs one
// allocation of a mock_driver task. ALLOC and NODE in the path and query
// stand for that allocation's and node's IDs, so inputs reach past the ID
// checks into the file, log, stats and metadata parsers. Properties: no
// panic; no 5xx but for the few the API documents; no answer shows a host
// path (the agent's data dir); every request ends within its deadline.
//
// Requests that change what the agent runs (GC, stop, join, job writes,
// pprof) are left out, so that inputs stay independent of each other.
func FuzzHTTPAPI(f *testing.F) {
	seeds := []struct{ method, path, query, body string }{
		{"GET", "/v1/client/fs/ls/ALLOC", "path=/alloc/logs", ""},
		{"GET", "/v1/client/fs/stat/ALLOC", "path=alloc/logs/web.stdout.0", ""},
		{"GET", "/v1/client/fs/cat/ALLOC", "path=/alloc/logs/web.stdout.0", ""},
		{"GET", "/v1/client/fs/readat/ALLOC", "path=alloc/logs/web.stdout.0&offset=2&limit=5", ""},
		{"GET", "/v1/client/fs/stream/ALLOC", "path=alloc/logs/web.stdout.0&offset=1&origin=end&follow=false", ""},
		{"GET", "/v1/client/fs/logs/ALLOC", "task=web&type=stdout&origin=start&offset=0&plain=true&follow=false", ""},
		{"GET", "/v1/client/fs/logs/ALLOC", "task=web&type=stderr&lines=3&format=ndjson&timestamps=true", ""},
		{"GET", "/v1/client/fs/logs/ALLOC", "task=web&type=stdout&since=1h&format=sse", ""},
		{"GET", "/v1/client/fs/archive/ALLOC", "path=/alloc", ""},
		{"GET", "/v1/client/fs/cat/ALLOC", "path=../../../../etc/passwd", ""},
		{"GET", "/v1/client/fs/ls/ALLOC", "path=%2e%2e/%2e%2e", ""},
		{"GET", "/v1/client/stats", "node_id=NODE", ""},
		{"GET", "/v1/client/allocation/ALLOC/stats", "", ""},
		{"GET", "/v1/client/metadata", "node_id=NODE", ""},
		{"POST", "/v1/client/metadata", "node_id=NODE", `{"Meta": {"rack": "r1", "gone": null}}`},
		{"POST", "/v1/jobs/parse", "", `{"JobHCL": "job \"a\" {\n group \"b\" {\n task \"c\" {\n driver = \"mock_driver\"\n }\n }\n}", "Canonicalize": true}`},
		{"GET", "/v1/allocation/ALLOC", "", ""},
		{"GET", "/v1/node/NODE/allocations", "index=1&wait=10ms", ""},
		{"GET", "/v1/nodes", "prefix=a&pretty=1", ""},
		{"GET", "/v1/jobs", "prefix=fuzz&namespace=*", ""},
		{"GET", "/v1/job/fuzz/allocations", "all=true", ""},
		{"GET", "/v1/evaluations", "per_page=2&next_token=x", ""},
		{"GET", "/v1/metrics", "format=prometheus", ""},
		{"GET", "/v1/agent/monitor", "log_level=debug&log_json=true", ""},
		{"GET", "/v1/client/route", "node_id=NODE", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, []byte(s.body))
	}
	fa := startFuzzAgent(f)
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		if method != http.MethodPost && method != http.MethodPut {
			method = http.MethodGet
		}
		path = fa.expand(path)
		if !fa.allowed(method, path) {
			return
		}
		u := &url.URL{Path: path, RawQuery: fa.expand(query)}
		if p, err := url.PathUnescape(path); err == nil {
			u.Path, u.RawPath = p, path
		}
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		r := httptest.NewRequest(method, "/", bytes.NewReader(body)).WithContext(ctx)
		r.URL, r.RequestURI = u, u.RequestURI()
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			fa.handler.ServeHTTP(w, r)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s?%s did not end 10s after its deadline", method, path, u.RawQuery)
		}
		out := w.Body.Bytes()
		t.Logf("%s %s?%s: %d %.100q", method, path, u.RawQuery, w.Code, out)
		if bytes.Contains(out, []byte(fa.dataDir)) {
			t.Fatalf("%s %s?%s: the answer shows the host path %s:\n%s", method, path, u.RawQuery, fa.dataDir, out)
		}
		if w.Code >= 500 && !fa.documented5xx(string(out)) {
			t.Fatalf("%s %s?%s: %d %s", method, path, u.RawQuery, w.Code, out)
		}
	})
}

type fuzzAgent struct {
	handler        http.Handler
	dataDir        string
	allocID, node  string
	expandReplacer *strings.Replacer
}

func (fa *fuzzAgent) expand(s string) string { return fa.expandReplacer.Replace(s) }

// allowed leaves out what changes the agent's state or takes seconds by
// design (a CPU profile); of the writes only metadata and job parsing are
// sent.
func (fa *fuzzAgent) allowed(method, path string) bool {
	p := strings.ToLower(path)
	for _, bad := range []string{"gc", "/stop", "join", "leave", "pprof", "/raft/peer", "restart", "signal"} {
		if strings.Contains(p, bad) {
			return false
		}
	}
	return method == http.MethodGet || strings.HasSuffix(p, "/client/metadata") || strings.HasSuffix(p, "/jobs/parse")
}

// documented5xx reports whether body is a 5xx the API answers on purpose:
// a deadline the fuzz request set itself, or a stream cut short.
func (fa *fuzzAgent) documented5xx(body string) bool {
	for _, ok := range []string{"context deadline exceeded", "context canceled", "deadline", "rpc error: stream"} {
		if strings.Contains(body, ok) {
			return true
		}
	}
	return false
}

// startFuzzAgent starts the dev agent and its allocation once for the
// whole fuzz run.
func startFuzzAgent(f *testing.F) *fuzzAgent {
	f.Helper()
	cfg := DevConfig()
	cfg.DataDir = f.TempDir()
	cfg.Ports.HTTP, cfg.Ports.RPC, cfg.Ports.Serf = 0, 0, 0
	cfg.LogLevel = "ERROR"
	a, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		f.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	select {
	case <-a.Client().Registered():
	case <-time.After(30 * time.Second):
		f.Fatal("the dev node did not register")
	}
	fa := &fuzzAgent{handler: a.httpSrv.Handler, dataDir: cfg.DataDir, node: a.Client().NodeID()}
	job := `{"Job": {"ID": "fuzz", "Name": "fuzz", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [{"Name": "g", "Count": 1,
		"Tasks": [{"Name": "web", "Driver": "mock_driver", "Config": {"run_for": "1h", "stdout_string": "line one\nline two\n", "stdout_repeat": 3, "stdout_repeat_duration": "10ms"}}]}]}}`
	if code, out := fa.do(http.MethodPost, "/v1/jobs", job); code != http.StatusOK {
		f.Fatalf("registering the job: %d %s", code, out)
	}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond) // polling interval: the status decides
	defer tick.Stop()
	for fa.allocID == "" {
		_, out := fa.do(http.MethodGet, "/v1/job/fuzz/allocations", "")
		var allocs []struct{ ID, ClientStatus string }
		json.Unmarshal(out, &allocs)
		for _, al := range allocs {
			if al.ClientStatus == "running" {
				fa.allocID = al.ID
			}
		}
		if fa.allocID != "" {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			f.Fatal("the job's allocation did not start")
		}
	}
	fa.expandReplacer = strings.NewReplacer("ALLOC", fa.allocID, "NODE", fa.node)
	return fa
}

// do sends one request to the agent's handler.
func (fa *fuzzAgent) do(method, path, body string) (int, []byte) {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	w := httptest.NewRecorder()
	fa.handler.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}
