package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
	"tether/server"
)

// testAgent is an in-process agent bound to loopback ports.
type testAgent struct {
	*agent.Agent
	cfg *agent.Config
}

// URL returns the agent's HTTP base URL.
func (a *testAgent) URL() string { return "http://" + a.HTTPAddr() }

// API returns an official Nomad API client pointed at the agent.
func (a *testAgent) API(t *testing.T) *nomad.Client {
	t.Helper()
	c, err := nomad.NewClient(&nomad.Config{Address: a.URL()})
	if err != nil {
		t.Fatalf("nomad api client: %v", err)
	}
	return c
}

type agentOpt func(*agent.Config)

func withServers(addrs ...string) agentOpt {
	return func(c *agent.Config) { c.Client.Servers = addrs }
}

func withMeta(m map[string]string) agentOpt {
	return func(c *agent.Config) { c.Client.Meta = m }
}

func withDataDir(d string) agentOpt {
	return func(c *agent.Config) { c.DataDir = d }
}

func baseConfig(t testing.TB, name string) *agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Name = name
	cfg.BindAddr = "127.0.0.1"
	cfg.DataDir = t.TempDir()
	cfg.Ports.HTTP, cfg.Ports.RPC, cfg.Ports.Serf = 0, 0, 0
	cfg.Advertise.HTTP, cfg.Advertise.RPC, cfg.Advertise.Serf = "127.0.0.1", "127.0.0.1", "127.0.0.1"
	cfg.LogLevel = "DEBUG"
	cfg.ServerTuning = fastServer
	return cfg
}

// fastServer shortens the raft timeouts and retry intervals of in-process
// servers so elections and joins take well under a second.
func fastServer(c *server.Config) {
	c.RaftHeartbeatTimeout = 500 * time.Millisecond
	c.RaftElectionTimeout = 500 * time.Millisecond
	c.RaftLeaderLease = 250 * time.Millisecond
	c.RetryJoinInterval = 200 * time.Millisecond
}

// startAgent starts an agent and stops it when the test ends.
func startAgent(t testing.TB, cfg *agent.Config) *testAgent {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   cfg.Name,
		Level:  hclog.LevelFromString(cfg.LogLevel),
		Output: newTestWriter(t),
	})
	a, err := agent.New(cfg, logger)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return &testAgent{Agent: a, cfg: cfg}
}

// startServer starts a server-only agent.
func startServer(t testing.TB, name string) *testAgent {
	t.Helper()
	cfg := baseConfig(t, name)
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 1
	return startAgent(t, cfg)
}

// startNode starts a node-only agent and waits until it registered.
func startNode(t testing.TB, name string, opts ...agentOpt) *testAgent {
	t.Helper()
	cfg := baseConfig(t, name)
	cfg.Client.Enabled = true
	for _, o := range opts {
		o(cfg)
	}
	a := startAgent(t, cfg)
	select {
	case <-a.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatalf("node %s did not register", name)
	}
	return a
}

// waitFor polls cond until it reports true or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		// Polling interval, not synchronisation: the condition decides.
		<-time.After(25 * time.Millisecond)
	}
}

// do sends a raw HTTP request and returns status and body.
func do(t *testing.T, method, url string, body io.Reader, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// testWriter sends an agent's log lines to the test's log until the
// test's cleanups have run; later lines (a goroutine of a library that
// outlives its Shutdown, such as memberlist's indirect pings) are dropped,
// since the testing package must not be written to once a test is done.
type testWriter struct{ *testLog }

type testLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

// newTestWriter returns the writer for an agent started in t; call it
// before registering the agent's own cleanup, so it stops after.
func newTestWriter(t testing.TB) testWriter {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return testWriter{l}
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func mustContain(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q; want it to contain %q", got, want)
	}
}

func sp(s string) *string { return &s }

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// tryGet is a GET that reports transport errors instead of failing.
func tryGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// agentHCL is the head every test agent's config file shares (name, data
// dir, loopback binds and advertise, log level, the three ports) followed
// by rest (server, client, acl, tls blocks and the like).
func agentHCL(name, dataDir, logLevel string, http, rpc, serf int, rest string) string {
	return agentHCLAt("127.0.0.1", name, dataDir, logLevel, http, rpc, serf, rest)
}

// agentHCLAt is agentHCL for an agent bound to and advertising addr.
func agentHCLAt(addr, name, dataDir, logLevel string, http, rpc, serf int, rest string) string {
	return fmt.Sprintf(`
name       = %q
data_dir   = %q
bind_addr  = %q
log_level  = %q
ports {
  http = %d
  rpc  = %d
  serf = %d
}
advertise {
  http = %q
  rpc  = %q
  serf = %q
}
`, name, dataDir, addr, logLevel, http, rpc, serf, addr, addr, addr) + rest
}
