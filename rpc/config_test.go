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
