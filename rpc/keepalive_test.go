package rpc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// gateConn holds every Read until open is closed: a process too starved
// to read its socket while the peer answers.
type gateConn struct {
	net.Conn
	open     chan struct{}
	done     chan struct{}
	doneOnce sync.Once
}

func (g *gateConn) NetConn() net.Conn { return g.Conn }

func (g *gateConn) Read(p []byte) (int, error) {
	select {
	case <-g.open:
	case <-g.done:
		return 0, net.ErrClosed
	}
	return g.Conn.Read(p)
}

func (g *gateConn) Close() error {
	g.doneOnce.Do(func() { close(g.done) })
	return g.Conn.Close()
}

// TestKeepAlive_UnreadAnswerExtends checks that a ping whose answer sits
// unread in this process's socket (this end is behind, the peer is not
// silent) does not close the session at KeepAliveTimeout, and that the
// session works once this end reads again; a silent peer still closes it
// (TestSession_KeepAliveTimer/unanswered).
func TestKeepAlive_UnreadAnswerExtends(t *testing.T) {
	counters := &Counters{}
	var g *gateConn
	p := newTestPair(t, "tcp", pairOpts{
		serverCfg: func(c *Config) { c.KeepAliveInterval = -1 }, // only the gated end pings
		clientCfg: func(c *Config) {
			c.KeepAliveInterval = 20 * time.Millisecond
			c.KeepAliveTimeout = 100 * time.Millisecond
			c.Counters = counters
		},
		clientConn: func(c net.Conn) net.Conn {
			g = &gateConn{Conn: c, open: make(chan struct{}), done: make(chan struct{})}
			return g
		},
	})
	s := p.node

	waitFor(t, 5*time.Second, "a ping wait extended", func() bool {
		return counters.Stats()["rpc_keepalive_extended"] >= 2
	})
	if s.IsClosed() || counters.Stats()["rpc_keepalive_timeouts"] != 0 {
		t.Fatalf("session closed (%v) or timed out (%d) while the answer sat unread", s.IsClosed(), counters.Stats()["rpc_keepalive_timeouts"])
	}
	close(g.open)
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	var out echoReply
	if err := s.Call(cctx, "Test.Echo", &echoArgs{Msg: "hi"}, &out); err != nil || out.Msg != "server:hi" {
		t.Fatalf("call after reading again = %q, %v", out.Msg, err)
	}
}

// TestUnreadBytes checks the kernel's count through the wrappers that
// expose the socket under them.
func TestUnreadBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, tc := range []struct {
		name string
		conn net.Conn
	}{
		{"tcp", c},
		{"batcher", NewRecordBatcher(c)},
		{"dialConn over batcher", &dialConn{Conn: NewRecordBatcher(c)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := unreadBytes(tc.conn); n != 0 {
				t.Fatalf("unread before any write = %d", n)
			}
		})
	}
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "5 bytes in the socket", func() bool { return unreadBytes(c) == 5 })
	if n := unreadBytes(&dialConn{Conn: NewRecordBatcher(c)}); n != 5 {
		t.Errorf("through the wrappers = %d; want 5", n)
	}
	if n := unreadBytes(a); n != 0 {
		t.Errorf("a pipe = %d; want 0", n)
	}
}

// TestKeepAlive_PingsOnlyQuietPeers checks what the keepalive costs: an
// idle session is pinged about once per interval in all, not once from
// each end, and a session whose peer keeps talking is not pinged at all.
func TestKeepAlive_PingsOnlyQuietPeers(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		busy     bool
	}{
		{"idle", 100 * time.Millisecond, false},
		{"busy", time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counters := &Counters{}
			set := func(c *Config) {
				c.KeepAliveInterval = tt.interval
				c.KeepAliveTimeout = 5 * time.Second
				c.Counters = counters
			}
			p := newTestPair(t, "tcp", pairOpts{clientCfg: set, serverCfg: set})
			pings := func() uint64 { return counters.Stats()["rpc_keepalive_pings"] }
			if !tt.busy {
				// Both ends pinging would send one each per 0.75-1
				// interval: 16 pings well inside 10 intervals. Pinging
				// only a quiet peer spaces the session's pings by at
				// least 0.75 of one; two may cross now and then.
				const want = 16
				start := time.Now()
				waitFor(t, 30*time.Second, "pings", func() bool { return pings() >= want })
				elapsed := time.Since(start)
				if limit := int(elapsed/(tt.interval*3/4)) + 2; want > limit {
					t.Fatalf("%d pings in %v: more than %d, both ends are pinging", want, elapsed, limit)
				}
				return
			}
			// Calls back to back for 2.5 intervals: each end hears the
			// other all along, and neither pings.
			deadline := time.Now().Add(tt.interval * 5 / 2)
			calls := 0
			for time.Now().Before(deadline) {
				var r echoReply
				if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "m"}, &r); err != nil {
					t.Fatal(err)
				}
				calls++
			}
			if n := pings(); n > 1 {
				t.Fatalf("%d pings during %d calls over %v; want none on a busy session", n, calls, tt.interval*5/2)
			}
			if counters.Stats()["rpc_keepalive_timeouts"] != 0 {
				t.Fatal("keepalive timed out")
			}
		})
	}
}
