package client

import (
	"bytes"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFleetConfig_Verify(t *testing.T) {
	valid := func() *FleetConfig {
		c := DefaultFleetConfig()
		c.Servers = []string{"127.0.0.1:4647"}
		c.Nodes = 1
		return c
	}
	d := DefaultFleetConfig()
	if d.Datacenter != "dc1" || d.Region != "global" || d.NodePool != "default" || d.NamePrefix != "fleet-" ||
		d.StartRate != 500 || d.StartBurst != 50 || d.StatsInterval != time.Second ||
		d.MetaSyncDelay != 5*time.Second || d.ReconnectMin != 250*time.Millisecond || d.ReconnectMax != 10*time.Second ||
		d.ACLEnabled || d.Token != "" || d.DataDir != "" {
		t.Fatalf("defaults %+v", d)
	}
	cases := []struct {
		name    string
		mod     func(c *FleetConfig)
		wantErr string
	}{
		{"valid", func(*FleetConfig) {}, ""},
		{"no servers", func(c *FleetConfig) { c.Servers = nil }, "at least one server"},
		{"empty server", func(c *FleetConfig) { c.Servers = []string{"a:1", ""} }, "must not be empty"},
		{"no nodes", func(c *FleetConfig) { c.Nodes = 0 }, "nodes must be at least 1"},
		{"no datacenter", func(c *FleetConfig) { c.Datacenter = "" }, "datacenter"},
		{"no prefix", func(c *FleetConfig) { c.NamePrefix = "" }, "name prefix"},
		{"zero rate", func(c *FleetConfig) { c.StartRate = 0 }, "start rate"},
		{"zero burst", func(c *FleetConfig) { c.StartBurst = 0 }, "start burst"},
		{"zero stats interval", func(c *FleetConfig) { c.StatsInterval = 0 }, "stats interval"},
		{"backoff", func(c *FleetConfig) { c.ReconnectMax = c.ReconnectMin / 2 }, "backoff"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mod(c)
			err := c.Verify()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Verify = %v; want an error with %q", err, tc.wantErr)
			}
			if _, err := NewFleet(c); err == nil {
				t.Fatal("NewFleet accepted an invalid config")
			}
		})
	}
}

// labelledGoroutines counts goroutines carrying FleetLabels.
func labelledGoroutines() int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	n := 0
	count := 0
	for _, line := range strings.Split(buf.String(), "\n") {
		if c, _, ok := strings.Cut(line, " @ "); ok {
			count, _ = strconv.Atoi(c)
			continue
		}
		if strings.HasPrefix(line, "# labels: ") && strings.Contains(line, `"tether":"fleet"`) {
			n += count
		}
	}
	return n
}

// TestFleet_StartShutdown starts nodes against servers that are not there:
// every node is created with its own identity and its own first server,
// and Shutdown stops them all and removes the temporary data dir.
func TestFleet_StartShutdown(t *testing.T) {
	cfg := DefaultFleetConfig()
	cfg.Servers = []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	cfg.Nodes = 7
	cfg.StartRate = 1000
	f, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := f.DataDir()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	f.Start()
	select {
	case <-f.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("nodes did not start")
	}
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	nodes := f.Nodes()
	if len(nodes) != cfg.Nodes {
		t.Fatalf("%d nodes started; want %d", len(nodes), cfg.Nodes)
	}
	ids := map[string]bool{}
	for i, c := range nodes {
		ids[c.NodeID()] = true
		if c.cfg.Name != f.NodeName(i) || !slices.Equal(c.cfg.Servers, cfg.Servers) {
			t.Fatalf("node %d: name %q servers %v", i, c.cfg.Name, c.cfg.Servers)
		}
		if c.stats != f.stats || c.fp != f.fp || c.ownStats || !c.cfg.Drivers[DriverMock] || len(c.cfg.Drivers) != 1 {
			t.Fatalf("node %d does not run on the fleet's shared sources", i)
		}
	}
	if len(ids) != cfg.Nodes {
		t.Fatalf("%d distinct node IDs for %d nodes", len(ids), cfg.Nodes)
	}
	if st := f.Status(); st.Started != cfg.Nodes || st.Registered != 0 || st.Connected != 0 {
		t.Fatalf("status %+v", st)
	}
	if g := labelledGoroutines(); g < cfg.Nodes {
		t.Fatalf("%d goroutines carry the fleet's labels; want at least one per node", g)
	}
	if err := f.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := f.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary data dir after Shutdown: %v", err)
	}
	waitFor(t, "no goroutine of the fleet left", func() bool { return labelledGoroutines() == 0 })
}

// TestFleet_DataDirKept keeps a given data dir, and nodes keep their
// identity across runs on it.
func TestFleet_DataDirKept(t *testing.T) {
	dir := t.TempDir()
	run := func() []string {
		cfg := DefaultFleetConfig()
		cfg.Servers = []string{"127.0.0.1:1"}
		cfg.Nodes = 2
		cfg.DataDir = dir
		f, err := NewFleet(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.Start()
		<-f.Started()
		var ids []string
		for _, c := range f.Nodes() {
			ids = append(ids, c.NodeID())
		}
		if err := f.Shutdown(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	first, second := run(), run()
	if strings.Join(first, ",") != strings.Join(second, ",") || len(first) != 2 {
		t.Fatalf("node IDs %v then %v; want the same two", first, second)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data dir removed: %v", err)
	}
}
