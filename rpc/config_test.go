package rpc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

func contextDeadlineExceeded() error { return context.DeadlineExceeded }

func TestConfig_Verify(t *testing.T) {
	cases := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"default", func(*Config) {}, ""},
		{"zero values mean defaults", func(c *Config) { *c = Config{} }, ""},
		{"unlimited conns", func(c *Config) { c.MaxConnsPerIP = -1 }, ""},
		{"negative message size", func(c *Config) { c.MaxMessageSize = -1 }, "max message size must be positive"},
		{"huge message size", func(c *Config) { c.MaxMessageSize = 2 << 30 }, "max message size must be at most"},
		{"negative handshake", func(c *Config) { c.HandshakeTimeout = -time.Second }, "handshake timeout"},
		{"negative call timeout", func(c *Config) { c.CallTimeout = -1 }, "call timeout"},
		{"negative dial timeout", func(c *Config) { c.DialTimeout = -1 }, "dial timeout"},
		{"conns below -1", func(c *Config) { c.MaxConnsPerIP = -2 }, "max conns per ip"},
		{"always redial", func(c *Config) { c.DataRedialDelay = -1 }, ""},
		{"unlimited pool", func(c *Config) { c.MaxPooledData = -1 }, ""},
		{"pool below -1", func(c *Config) { c.MaxPooledData = -2 }, "max pooled data must"},
		{"negative pool per node", func(c *Config) { c.MaxPooledDataPerNode = -1 }, "max pooled data per node"},
		{"redial delay below -1", func(c *Config) { c.DataRedialDelay = -2 }, "data redial delay"},
		{"bad yamux", func(c *Config) { c.Yamux = &yamux.Config{} }, "yamux: backlog must be positive"},
		{"no idle streams", func(c *Config) { c.MaxIdleStreams = -1 }, ""},
		{"idle streams below -1", func(c *Config) { c.MaxIdleStreams = -2 }, "max idle streams"},
		{"too many idle streams", func(c *Config) { c.MaxIdleStreams = maxIdleStreams + 1 }, "max idle streams"},
		{"negative keepalive", func(c *Config) { c.TCPKeepAlive = -1 }, "tcp keepalive"},
		{"keepalive interval below -1", func(c *Config) { c.KeepAliveInterval = -2 }, "keepalive interval"},
		{"negative keepalive timeout", func(c *Config) { c.KeepAliveTimeout = -1 }, "keepalive timeout"},
		{"negative watch tick", func(c *Config) { c.CallWatchTick = -1 }, "call watch tick"},
		{"negative long call", func(c *Config) { c.LongCallAfter = -1 }, "long call after"},
		{"negative handler watch", func(c *Config) { c.HandlerWatchDelay = -1 }, "handler watch delay"},
		{"negative read probe", func(c *Config) { c.ReadProbeDelay = -1 }, "read probe delay"},
		{"negative bulk min", func(c *Config) { c.CoalesceBulkMin = -1 }, "coalesce bulk min"},
		{"huge queue", func(c *Config) { c.CoalesceMaxQueued = maxTunedBuffer + 1 }, "coalesce max queued"},
		{"huge keep", func(c *Config) { c.CoalesceKeep = maxTunedBuffer + 1 }, "coalesce keep"},
		{"negative data pool idle", func(c *Config) { c.DataPoolIdle = -1 }, "data pool idle"},
		{"negative data serve idle", func(c *Config) { c.DataServeIdle = -1 }, "data serve idle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(c)
			err := c.Verify()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Verify = %v; want nil", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Verify = %v; want %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfig_NormalizeClonesYamux(t *testing.T) {
	shared := yamux.DefaultConfig()
	shared.LogOutput = nil
	shared.AcceptBacklog = 512
	cfg := &Config{Yamux: shared}
	n1, err := cfg.normalize()
	if err != nil {
		t.Fatal(err)
	}
	n2, _ := cfg.normalize()
	if n1.Yamux == shared || n1.Yamux == n2.Yamux {
		t.Errorf("yamux config shared between consumers")
	}
	if shared.Logger != nil {
		t.Errorf("normalize mutated the caller's yamux config")
	}
	if n1.Yamux.AcceptBacklog != 512 || n1.Yamux.Logger == nil {
		t.Errorf("yamux = %+v; want backlog 512 and a logger", n1.Yamux)
	}
	if n1.MaxMessageSize != defaultMaxMessageSize || n1.MaxConnsPerIP != defaultMaxConnsPerIP ||
		n1.HandshakeTimeout != defaultHandshakeTimeout || n1.DataRedialDelay != defaultDataRedialDelay ||
		n1.MaxPooledData != defaultMaxPooledData || n1.MaxPooledDataPerNode != defaultMaxPooledPerNode || n1.Logger == nil {
		t.Errorf("defaults not filled: %+v", n1)
	}
	d, _ := (*Config)(nil).normalize()
	if d.Yamux.LogOutput != nil || d.Yamux.Logger == nil || !d.Yamux.EnableKeepAlive {
		t.Errorf("default yamux config: %+v", d.Yamux)
	}
}

// TestConfig_Defaults checks the documented defaults, in DefaultConfig
// and filled in for zero fields by normalize.
func TestConfig_Defaults(t *testing.T) {
	zero, err := (&Config{}).normalize()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Config{DefaultConfig(), zero} {
		checks := []struct {
			name      string
			got, want any
		}{
			{"TCPKeepAlive", c.TCPKeepAlive, 30 * time.Second},
			{"KeepAliveInterval", c.KeepAliveInterval, 4 * time.Second},
			{"KeepAliveTimeout", c.KeepAliveTimeout, 4 * time.Second},
			{"MaxIdleStreams", c.MaxIdleStreams, 64},
			{"CallWatchTick", c.CallWatchTick, 10 * time.Millisecond},
			{"LongCallAfter", c.LongCallAfter, 50 * time.Millisecond},
			{"HandlerWatchDelay", c.HandlerWatchDelay, 5 * time.Millisecond},
			{"ReadProbeDelay", c.ReadProbeDelay, 10 * time.Millisecond},
			{"CoalesceBulkMin", c.CoalesceBulkMin, 16 << 10},
			{"CoalesceMaxQueued", c.CoalesceMaxQueued, 256 << 10},
			{"CoalesceKeep", c.CoalesceKeep, 64 << 10},
			{"DataPoolIdle", c.DataPoolIdle, 20 * time.Second},
			{"DataServeIdle", c.DataServeIdle, 30 * time.Second},
			{"IdleStreamTimeout", c.IdleStreamTimeout, 5 * time.Second},
		}
		for _, tc := range checks {
			if tc.got != tc.want {
				t.Errorf("%s = %v; want %v", tc.name, tc.got, tc.want)
			}
		}
	}
}

// TestConfig_TunablesReachTheirUsers checks that a session takes its
// tunables from its Config, not from package constants.
func TestConfig_TunablesReachTheirUsers(t *testing.T) {
	p := newTestPair(t, "tcp", pairOpts{clientCfg: func(c *Config) {
		c.MaxIdleStreams = -1
		c.CallWatchTick = 3 * time.Millisecond
		c.LongCallAfter = 7 * time.Millisecond
	}})
	if w := p.node.watch; w.tick != 3*time.Millisecond || w.longTicks != 3 {
		t.Errorf("call watch tick %v after %d ticks; want 3ms after 3", w.tick, w.longTicks)
	}
	if w := p.server.watch; w.tick != defaultCallWatchTick || w.longTicks != 5 {
		t.Errorf("server call watch tick %v after %d ticks; want the defaults", w.tick, w.longTicks)
	}
	for range 3 {
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "x"}, &echoReply{}); err != nil {
			t.Fatal(err)
		}
	}
	p.node.idleMu.Lock()
	n := len(p.node.idle)
	p.node.idleMu.Unlock()
	if n != 0 {
		t.Errorf("%d idle streams kept with MaxIdleStreams -1", n)
	}
}

// TestConfig_KeepAlive checks which pings a session runs: the default
// interval, one set here over yamux's, none for -1 or for a yamux config
// that turns keepalive off; yamux's own keepalive goroutine never runs.
func TestConfig_KeepAlive(t *testing.T) {
	noYamuxKA := yamux.DefaultConfig()
	noYamuxKA.EnableKeepAlive = false
	cases := []struct {
		name string
		cfg  Config
		want time.Duration
	}{
		{"default", Config{}, 4 * time.Second},
		{"set", Config{KeepAliveInterval: time.Second, Yamux: yamux.DefaultConfig()}, time.Second},
		{"yamux interval ignored", Config{Yamux: yamux.DefaultConfig()}, 4 * time.Second},
		{"off", Config{KeepAliveInterval: -1}, 0},
		{"yamux off", Config{Yamux: noYamuxKA}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := tc.cfg.normalize()
			if err != nil {
				t.Fatal(err)
			}
			if n.keepAliveInterval != tc.want {
				t.Errorf("session keepalive = %v; want %v", n.keepAliveInterval, tc.want)
			}
			if n.yamuxSession.EnableKeepAlive {
				t.Error("yamux's keepalive goroutine is on")
			}
		})
	}
}
