package rpc

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestCounters_OddPaths: each refusal of the transport counts once, in
// the server's own counters.
func TestCounters_OddPaths(t *testing.T) {
	const small = 1024
	cases := []struct {
		name string
		cfg  func(*Config)
		do   func(t *testing.T, p *testPair)
		key  string
	}{
		{"frame over limit", func(c *Config) { c.MaxMessageSize = small }, func(t *testing.T, p *testPair) {
			err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Data: make([]byte, 4*small)}, &echoReply{})
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("err = %v; want ErrMessageTooLarge", err)
			}
		}, "rpc_frames_over_limit"},
		{"unknown protocol byte", nil, func(t *testing.T, p *testPair) {
			rawSend(t, p, []byte{0xEE})
		}, "rpc_handshakes_refused"},
		{"no protocol byte", func(c *Config) { c.HandshakeTimeout = 100 * time.Millisecond }, func(t *testing.T, p *testPair) {
			rawSend(t, p, nil)
		}, "rpc_handshakes_refused"},
		{"conns over limit", func(c *Config) { c.MaxConnsPerIP = 1 }, func(t *testing.T, p *testPair) {
			rawSend(t, p, nil)
		}, "rpc_conns_over_limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPair(t, "tcp", pairOpts{serverCfg: tc.cfg})
			before := p.srv.Counters().Stats()
			tc.do(t, p)
			waitFor(t, 5*time.Second, tc.key, func() bool { return p.srv.Counters().Stats()[tc.key] == before[tc.key]+1 })
			for k, v := range p.srv.Counters().Stats() {
				if k != tc.key && v != before[k] {
					t.Errorf("%s = %d; want %d (only %s moves)", k, v, before[k], tc.key)
				}
			}
		})
	}
	if got := (*Counters)(nil).Stats(); len(got) != 0 {
		t.Errorf("nil Counters Stats = %v; want empty", got)
	}
}

// rawSend dials the pair's server, writes b and waits for the server to
// close the connection.
func rawSend(t *testing.T, p *testPair, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", p.serverLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf [1]byte
	if _, err := c.Read(buf[:]); err == nil {
		t.Fatalf("server answered a refused connection")
	}
}
