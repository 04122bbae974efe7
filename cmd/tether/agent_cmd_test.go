package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/agent"
)

// testdata is the agent package's configuration fixtures.
var testdata = filepath.Join("..", "..", "agent", "testdata", "config")

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRun_Commands(t *testing.T) {
	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"version", []string{"version"}, exitOK, "Tether v0.1.0 (Nomad API compatible 1.6.5)\n", ""},
		{"-version", []string{"-version"}, exitOK, "Tether v0.1.0 (Nomad API compatible 1.6.5)\n", ""},
		{"-h", []string{"-h"}, exitOK, "Usage: tether <command>", ""},
		{"help", []string{"help"}, exitOK, "Commands:", ""},
		{"no command", nil, exitUsage, "", "Usage: tether <command>"},
		{"unknown command", []string{"agnet"}, exitUsage, "", `unknown command "agnet"`},
		{"agent -h", []string{"agent", "-h"}, exitOK, "Usage: tether agent [flags]", ""},
		{"agent bad flag", []string{"agent", "-bogus"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{"agent bad port", []string{"agent", "-http-port", "x"}, exitUsage, "", `invalid value "x" for flag -http-port`},
		{"agent extra args", []string{"agent", "-dev", "extra"}, exitUsage, "", "unexpected arguments: extra"},
		{"agent empty config", []string{"agent", "-config", ""}, exitUsage, "", "must not be empty"},
		{"agent no data dir", []string{"agent", "-server"}, exitUsage, "", "data_dir is required"},
		{"agent no role", []string{"agent", "-data-dir", "/tmp/x"}, exitUsage, "", "server.enabled or client.enabled"},
		{"agent bad port range", []string{"agent", "-dev", "-rpc-port", "70000"}, exitUsage, "", "ports.rpc 70000 is out of range"},
		{"agent missing config", []string{"agent", "-config", filepath.Join(testdata, "nope.hcl")}, exitUsage, "", "nope.hcl"},
		{
			"agent unknown key",
			[]string{"agent", "-dev", "-config", filepath.Join(testdata, "bad", "unknown_nested.hcl")},
			exitUsage, "",
			`unknown_nested.hcl:6: unknown config key "bootstrap_expct" in server block`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("run(%q) = %d; want %d (stderr %q)", tc.args, code, tc.wantCode, stderr.String())
			}
			if tc.wantStdout == "" && stdout.Len() > 0 {
				t.Errorf("stdout = %q; want empty", stdout.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Errorf("stdout = %q; want it to contain %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr = %q; want it to contain %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

func TestAgentFlags_BuildConfig(t *testing.T) {
	server := filepath.Join(testdata, "server.hcl")
	client := filepath.Join(testdata, "client.hcl")
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, c *agent.Config, warnings []string)
	}{
		{"dev", []string{"-dev"}, func(t *testing.T, c *agent.Config, _ []string) {
			if !c.DevMode || !c.Server.Enabled || !c.Client.Enabled || c.Advertise.HTTP != "127.0.0.1:4646" {
				t.Errorf("config = %+v; want a dev config advertising 127.0.0.1:4646", c)
			}
		}},
		{"dev with overrides", []string{
			"-dev", "-node", "n1", "-dc", "dc9", "-region", "r9", "-log-level", "trace",
			"-http-port", "5001", "-rpc-port", "5002", "-serf-port", "5003", "-data-dir", "/d",
		}, func(t *testing.T, c *agent.Config, _ []string) {
			got := []any{c.Name, c.Datacenter, c.Region, c.LogLevel, c.Ports, c.DataDir, c.Advertise.RPC}
			want := []any{"n1", "dc9", "r9", "trace", agent.PortsConfig{HTTP: 5001, RPC: 5002, Serf: 5003}, "/d", "127.0.0.1:5002"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("config = %v; want %v", got, want)
			}
		}},
		{"flags override the file", []string{"-config", server, "-region", "us", "-http-port", "7000"}, func(t *testing.T, c *agent.Config, w []string) {
			if c.Region != "us" || c.Ports.HTTP != 7000 || c.Ports.RPC != 5647 || c.Name != "server-1" {
				t.Errorf("Region, Ports, Name = %q, %+v, %q; want us, {7000 5647 5648}, server-1", c.Region, c.Ports, c.Name)
			}
			if len(w) == 0 {
				t.Errorf("warnings = none; want the file's unimplemented keys")
			}
		}},
		{"later config wins", []string{"-config", server, "-config", client}, func(t *testing.T, c *agent.Config, _ []string) {
			if c.Name != "client-1" || !c.Server.Enabled || !c.Client.Enabled {
				t.Errorf("Name, server, client = %q, %v, %v; want client-1, true, true", c.Name, c.Server.Enabled, c.Client.Enabled)
			}
			want := []string{server, client}
			if !reflect.DeepEqual(c.Files, want) {
				t.Errorf("Files = %q; want %q", c.Files, want)
			}
		}},
		{"config dir", []string{"-config", filepath.Join(testdata, "dir")}, func(t *testing.T, c *agent.Config, _ []string) {
			if c.DataDir != "/data/override" || c.Region != "base-region" {
				t.Errorf("DataDir, Region = %q, %q; want /data/override, base-region", c.DataDir, c.Region)
			}
		}},
		{"-server=false turns a role off", []string{"-dev", "-server=false", "-servers", " a:4647, ,b:4647 "}, func(t *testing.T, c *agent.Config, _ []string) {
			if c.Server.Enabled || !c.Client.Enabled {
				t.Errorf("server, client = %v, %v; want false, true", c.Server.Enabled, c.Client.Enabled)
			}
			if want := []string{"a:4647", "b:4647"}; !reflect.DeepEqual(c.Client.Servers, want) {
				t.Errorf("Client.Servers = %q; want %q", c.Client.Servers, want)
			}
		}},
		{"client role from flags", []string{"-client", "-servers", "s:4647", "-data-dir", "/d", "-bind", "10.2.3.4"}, func(t *testing.T, c *agent.Config, _ []string) {
			if c.Server.Enabled || !c.Client.Enabled || c.Advertise.HTTP != "10.2.3.4:4646" {
				t.Errorf("config = %+v; want a client advertising 10.2.3.4:4646", c)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			f, _, ok := parseAgentFlags(tc.args, &stdout, &stderr)
			if !ok {
				t.Fatalf("parseAgentFlags(%q) failed: %s", tc.args, stderr.String())
			}
			c, warnings, err := f.buildConfig()
			if err != nil {
				t.Fatalf("buildConfig() error = %v; want nil", err)
			}
			tc.check(t, c, warnings)
		})
	}
}

// fakeAgent records what the command asks of it.
type fakeAgent struct {
	startErr       error
	blockStart     bool // Start waits for its context
	blockShutdown  bool // Shutdown waits for its context
	started        chan struct{}
	reloaded       chan *agent.Config
	shutdownCalled chan struct{}
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{
		started:        make(chan struct{}, 1),
		reloaded:       make(chan *agent.Config, 4),
		shutdownCalled: make(chan struct{}, 1),
	}
}

func (f *fakeAgent) Start(ctx context.Context) error {
	f.started <- struct{}{}
	if f.blockStart {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.startErr
}

func (f *fakeAgent) Shutdown(ctx context.Context) error {
	f.shutdownCalled <- struct{}{}
	if f.blockShutdown {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *fakeAgent) Reload(cfg *agent.Config) error {
	f.reloaded <- cfg
	return nil
}

func (f *fakeAgent) HTTPAddr() string { return "127.0.0.1:4646" }

// startFake runs "tether agent args" against fa in the background. It
// returns the signal channel the command listens on, its stderr, and a
// channel with the exit code.
func startFake(t *testing.T, fa *fakeAgent, args ...string) (chan<- os.Signal, *syncBuffer, <-chan int) {
	t.Helper()
	oldNew, oldNotify := newAgent, notifySignals
	t.Cleanup(func() { newAgent, notifySignals = oldNew, oldNotify })

	sigCh := make(chan chan<- os.Signal, 1)
	notifySignals = func(c chan<- os.Signal) func() {
		sigCh <- c
		return func() {}
	}
	newAgent = func(cfg *agent.Config, logger hclog.Logger) (agentRunner, error) {
		return fa, nil
	}

	stderr := &syncBuffer{}
	code := make(chan int, 1)
	go func() { code <- runAgent(args, &bytes.Buffer{}, stderr) }()

	select {
	case c := <-sigCh:
		return c, stderr, code
	case got := <-code:
		t.Fatalf("runAgent exited with %d before serving: %s", got, stderr.String())
	case <-time.After(5 * time.Second):
		t.Fatal("runAgent did not subscribe to signals")
	}
	return nil, nil, nil
}

// wait receives from c or fails the test after a few seconds.
func wait[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitStarted waits until the command has started fa and logged its banner,
// so that later signals reach the serving loop.
func waitStarted(t *testing.T, fa *fakeAgent, logs *syncBuffer) {
	t.Helper()
	wait(t, fa.started, "Start")
	waitLog(t, logs, "Tether agent started")
}

// waitLog waits until the logs contain want.
func waitLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("logs do not contain %q:\n%s", want, logs.String())
		}
		<-time.After(10 * time.Millisecond) // poll interval; the condition decides
	}
}

func TestRunAgent_SignalsAndReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.hcl")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`name = "first"` + "\nconsul {}\n")

	fa := newFakeAgent()
	sigs, stderr, code := startFake(t, fa, "-dev", "-config", path, "-log-level", "info")
	waitStarted(t, fa, stderr)

	// A good reload hands the new configuration to the agent; the flags
	// still apply on top of the files.
	write(`name = "second"`)
	sigs <- syscall.SIGHUP
	cfg := wait(t, fa.reloaded, "Reload")
	if cfg.Name != "second" || cfg.LogLevel != "info" || !cfg.DevMode {
		t.Errorf("reloaded Name, LogLevel, DevMode = %q, %q, %v; want second, info, true", cfg.Name, cfg.LogLevel, cfg.DevMode)
	}

	// A bad reload is logged and the agent keeps running.
	write(`nmae = "typo"`)
	sigs <- syscall.SIGHUP
	waitLog(t, stderr, "failed to reload configuration")
	write(`name = "third"`)
	sigs <- syscall.SIGHUP
	if cfg := wait(t, fa.reloaded, "second Reload"); cfg.Name != "third" {
		t.Errorf("reloaded Name = %q; want third", cfg.Name)
	}

	sigs <- syscall.SIGTERM
	wait(t, fa.shutdownCalled, "Shutdown")
	if got := wait(t, code, "exit"); got != exitOK {
		t.Errorf("exit code = %d; want %d", got, exitOK)
	}

	logs := stderr.String()
	for _, want := range []string{
		`config key "consul" (` + path + `:2) is not implemented`,
		"Tether agent started",
		"http=127.0.0.1:4646",
		`roles="server+client"`,
		"region=global",
		"datacenter=dc1",
		"failed to reload configuration",
		`unknown config key \"nmae\"`,
		"configuration reloaded",
		"caught signal, shutting down",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs do not contain %q:\n%s", want, logs)
		}
	}
}

func TestRunAgent_SecondSignalExits(t *testing.T) {
	fa := newFakeAgent()
	fa.blockShutdown = true
	sigs, stderr, code := startFake(t, fa, "-dev")
	waitStarted(t, fa, stderr)

	sigs <- syscall.SIGINT
	wait(t, fa.shutdownCalled, "Shutdown")
	sigs <- syscall.SIGINT
	if got := wait(t, code, "exit"); got != exitError {
		t.Errorf("exit code = %d; want %d", got, exitError)
	}
	if !strings.Contains(stderr.String(), "second signal") {
		t.Errorf("logs = %q; want a second-signal message", stderr.String())
	}
}

func TestRunAgent_ShutdownTimeout(t *testing.T) {
	old := shutdownTimeout
	shutdownTimeout = 50 * time.Millisecond
	t.Cleanup(func() { shutdownTimeout = old })

	fa := newFakeAgent()
	fa.blockShutdown = true
	sigs, stderr, code := startFake(t, fa, "-dev")
	waitStarted(t, fa, stderr)

	sigs <- syscall.SIGTERM
	if got := wait(t, code, "exit"); got != exitError {
		t.Errorf("exit code = %d; want %d", got, exitError)
	}
	if !strings.Contains(stderr.String(), context.DeadlineExceeded.Error()) {
		t.Errorf("logs = %q; want the deadline error", stderr.String())
	}
}

func TestRunAgent_StartError(t *testing.T) {
	fa := newFakeAgent()
	fa.startErr = errors.New("listen tcp 127.0.0.1:4646: bind: address already in use")
	_, stderr, code := startFake(t, fa, "-dev")
	if got := wait(t, code, "exit"); got != exitError {
		t.Errorf("exit code = %d; want %d", got, exitError)
	}
	if !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("logs = %q; want the start error", stderr.String())
	}
}

func TestRunAgent_SignalDuringStart(t *testing.T) {
	fa := newFakeAgent()
	fa.blockStart = true
	sigs, stderr, code := startFake(t, fa, "-dev")
	wait(t, fa.started, "Start")

	sigs <- syscall.SIGHUP // ignored while starting
	sigs <- syscall.SIGTERM
	wait(t, fa.shutdownCalled, "Shutdown")
	if got := wait(t, code, "exit"); got != exitOK {
		t.Errorf("exit code = %d; want %d", got, exitOK)
	}
	logs := stderr.String()
	if !strings.Contains(logs, "caught signal during start-up") || strings.Contains(logs, "Tether agent started") {
		t.Errorf("logs = %q; want start-up abandoned without a banner", logs)
	}
}

func TestRunAgent_JSONLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.hcl")
	if err := os.WriteFile(path, []byte("log_json = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fa := newFakeAgent()
	sigs, stderr, code := startFake(t, fa, "-dev", "-config", path)
	waitStarted(t, fa, stderr)
	sigs <- syscall.SIGTERM
	wait(t, code, "exit")
	if !strings.Contains(stderr.String(), `"@message":"Tether agent started"`) {
		t.Errorf("logs = %q; want JSON lines", stderr.String())
	}
}
