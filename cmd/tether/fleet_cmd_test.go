package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tether/agent"
	"tether/client"
)

func TestFleetFlags(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cases := []struct {
		name    string
		args    []string
		env     string // NOMAD_TOKEN
		wantErr string // from parsing (usage) or building the config
		check   func(t *testing.T, c *client.FleetConfig)
	}{
		{name: "defaults", args: []string{"-servers", "a:4647, b:4647", "-nodes", "3"}, check: func(t *testing.T, c *client.FleetConfig) {
			d := client.DefaultFleetConfig()
			if strings.Join(c.Servers, ",") != "a:4647,b:4647" || c.Nodes != 3 || c.DataDir != "" ||
				c.Datacenter != "dc1" || c.Region != "global" || c.NodePool != "default" || c.NamePrefix != "fleet-" ||
				c.StartRate != d.StartRate || c.StartBurst != d.StartBurst || c.StatsInterval != time.Second ||
				c.ACLEnabled || c.Token != "" || c.RPC != nil || c.Version != agent.NomadVersion {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "every flag", args: []string{"-servers", "a:1", "-nodes", "10", "-data-dir", "/d", "-datacenter", "east",
			"-region", "eu", "-node-pool", "p", "-name-prefix", "n-", "-start-rate", "50", "-start-burst", "5",
			"-stats-interval", "2s", "-progress", "0", "-log-level", "debug", "-node-log-level", "warn"},
			check: func(t *testing.T, c *client.FleetConfig) {
				if c.DataDir != "/d" || c.Datacenter != "east" || c.Region != "eu" || c.NodePool != "p" || c.NamePrefix != "n-" ||
					c.StartRate != 50 || c.StartBurst != 5 || c.StatsInterval != 2*time.Second {
					t.Fatalf("got %+v", c)
				}
			}},
		{name: "token turns node ACL checks on", args: []string{"-servers", "a:1", "-nodes", "1", "-token", "s3cret"}, check: func(t *testing.T, c *client.FleetConfig) {
			if c.Token != "s3cret" || !c.ACLEnabled {
				t.Fatalf("token %q acl %t", c.Token, c.ACLEnabled)
			}
		}},
		{name: "token from NOMAD_TOKEN", args: []string{"-servers", "a:1", "-nodes", "1"}, env: "envtok", check: func(t *testing.T, c *client.FleetConfig) {
			if c.Token != "envtok" || !c.ACLEnabled {
				t.Fatalf("token %q acl %t", c.Token, c.ACLEnabled)
			}
		}},
		{name: "-token beats NOMAD_TOKEN, -acl=false wins", args: []string{"-servers", "a:1", "-nodes", "1", "-token", "flag", "-acl=false"}, env: "envtok", check: func(t *testing.T, c *client.FleetConfig) {
			if c.Token != "flag" || c.ACLEnabled {
				t.Fatalf("token %q acl %t", c.Token, c.ACLEnabled)
			}
		}},
		{name: "-acl without token", args: []string{"-servers", "a:1", "-nodes", "1", "-acl"}, check: func(t *testing.T, c *client.FleetConfig) {
			if c.Token != "" || !c.ACLEnabled {
				t.Fatalf("token %q acl %t", c.Token, c.ACLEnabled)
			}
		}},
		{name: "no servers", args: []string{"-nodes", "1"}, wantErr: "at least one server"},
		{name: "no nodes", args: []string{"-servers", "a:1"}, wantErr: "nodes must be at least 1"},
		{name: "bad rate", args: []string{"-servers", "a:1", "-nodes", "1", "-start-rate", "0"}, wantErr: "start rate must be positive"},
		{name: "bad level", args: []string{"-servers", "a:1", "-nodes", "1", "-log-level", "loud"}, wantErr: `-log-level "loud" is invalid`},
		{name: "bad node level", args: []string{"-servers", "a:1", "-nodes", "1", "-node-log-level", "x"}, wantErr: `-node-log-level "x" is invalid`},
		{name: "half TLS", args: []string{"-servers", "a:1", "-nodes", "1", "-tls-ca-file", "ca.pem"}, wantErr: "go together"},
		{name: "missing TLS files", args: []string{"-servers", "a:1", "-nodes", "1", "-tls-ca-file", "/nope/ca.pem", "-tls-cert-file", "/nope/c.pem", "-tls-key-file", "/nope/k.pem"}, wantErr: "tls.ca_file"},
		{name: "extra args", args: []string{"-servers", "a:1", "-nodes", "1", "x"}, wantErr: "unexpected arguments: x"},
		{name: "unknown flag", args: []string{"-bogus"}, wantErr: "flag provided but not defined: -bogus"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env["NOMAD_TOKEN"] = tc.env
			var stdout, stderr bytes.Buffer
			f, _, ok := parseFleetFlags(tc.args, &stdout, &stderr)
			var cfg *client.FleetConfig
			var err error
			if ok {
				cfg, err = f.fleetConfig(getenv)
			}
			switch {
			case tc.wantErr != "":
				got := stderr.String()
				if err != nil {
					got = err.Error()
				}
				if !strings.Contains(got, tc.wantErr) {
					t.Fatalf("got %q (ok %t); want an error with %q", got, ok, tc.wantErr)
				}
			case !ok || err != nil:
				t.Fatalf("parse ok %t, err %v, stderr %q", ok, err, stderr.String())
			default:
				tc.check(t, cfg)
			}
		})
	}
}

// TestFleetFlags_TLS builds the nodes' TLS config from certificate files.
func TestFleetFlags_TLS(t *testing.T) {
	dir := t.TempDir()
	caPEM, caKey, err := agent.GenerateCA(agent.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := agent.GenerateCert(agent.CertOptions{Role: agent.RoleClient, CACert: caPEM, CAKey: caKey})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"-servers", "a:1", "-nodes", "1", "-tls-ca-file", write("ca.pem", caPEM),
		"-tls-cert-file", write("c.pem", cert), "-tls-key-file", write("k.pem", key), "-tls-verify-server-hostname"}
	var stdout, stderr bytes.Buffer
	f, _, ok := parseFleetFlags(args, &stdout, &stderr)
	if !ok {
		t.Fatalf("parse: %s", stderr.String())
	}
	cfg, err := f.fleetConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RPC == nil || cfg.RPC.TLSConfig == nil || cfg.RPC.TLSConfig.ServerName != "server.global.nomad" ||
		cfg.RPC.TLSConfig.GetClientCertificate == nil {
		t.Fatalf("RPC config %+v; want mutual TLS to server.global.nomad", cfg.RPC)
	}
}

// fakeFleet stands in for a client.Fleet in runFleet.
type fakeFleet struct {
	mu       sync.Mutex
	started  chan struct{}
	shutdown bool
	ready    int
}

func (f *fakeFleet) Start() {}
func (f *fakeFleet) Shutdown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdown = true
	return nil
}
func (f *fakeFleet) Status() client.FleetStatus {
	return client.FleetStatus{Nodes: 2, Started: 2, Registered: 2, Connected: 2,
		PerServer: map[string]int{"b:1": 1, "a:1": 1}, Elapsed: 1500 * time.Millisecond}
}
func (f *fakeFleet) RegisteredCount() int                        { return 2 }
func (f *fakeFleet) Started() <-chan struct{}                    { return f.started }
func (f *fakeFleet) Err() error                                  { return nil }
func (f *fakeFleet) CountReady(ctx context.Context) (int, error) { return f.ready, nil }
func (f *fakeFleet) DataDir() string                             { return "/tmp/x" }

// TestRunFleet_Signal runs the command on a fake fleet: it prints the
// registration and the servers' count, and SIGINT stops the fleet and
// exits 0.
func TestRunFleet_Signal(t *testing.T) {
	fake := &fakeFleet{started: make(chan struct{}), ready: 2}
	close(fake.started)
	oldNew, oldNotify := newFleet, notifySignals
	t.Cleanup(func() { newFleet, notifySignals = oldNew, oldNotify })
	newFleet = func(cfg *client.FleetConfig) (fleetRunner, error) { return fake, nil }
	sigs := make(chan chan<- os.Signal, 1)
	notifySignals = func(c chan<- os.Signal) func() {
		sigs <- c
		return func() {}
	}
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- runFleet([]string{"-servers", "a:1,b:1", "-nodes", "2", "-progress", "0"}, stdout, stderr)
	}()
	c := <-sigs
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stdout.String(), "the servers list 2 of 2 nodes ready") {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		<-time.After(10 * time.Millisecond) // polling interval; the condition decides
	}
	c <- syscall.SIGINT
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d; stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runFleet did not return after SIGINT")
	}
	out := stdout.String()
	for _, want := range []string{"fleet: starting 2 nodes against a:1,b:1", "all 2 nodes registered in 1.5s",
		"servers=[a:1=1 b:1=1]", "fleet: caught interrupt", "fleet: stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if !fake.shutdown {
		t.Fatal("fleet not shut down")
	}
}

func TestFleetFlags_GCPercent(t *testing.T) {
	cases := []struct {
		args    []string
		want    int
		wantSet bool
	}{
		{nil, defaultFleetGCPercent, false},
		{[]string{"-gc-percent", "50"}, 50, true},
		{[]string{"-gc-percent", "-1"}, -1, true},
	}
	for _, tc := range cases {
		args := append([]string{"-servers", "a:1", "-nodes", "1"}, tc.args...)
		f, code, ok := parseFleetFlags(args, io.Discard, io.Discard)
		if !ok {
			t.Fatalf("%v: exit %d", tc.args, code)
		}
		if f.gcPercent != tc.want || f.set["gc-percent"] != tc.wantSet {
			t.Errorf("%v: gcPercent %d (given %v); want %d (%v)", tc.args, f.gcPercent, f.set["gc-percent"], tc.want, tc.wantSet)
		}
	}
}
