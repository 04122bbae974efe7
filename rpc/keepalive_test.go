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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scfg := testConfig(t)
	scfg.KeepAliveInterval = -1 // only the gated end pings
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	srv := NewServer(scfg, mux)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-served })

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	g := &gateConn{Conn: raw, open: make(chan struct{}), done: make(chan struct{})}
	cfg := testConfig(t)
	cfg.KeepAliveInterval = 20 * time.Millisecond
	cfg.KeepAliveTimeout = 100 * time.Millisecond
	cfg.Counters = &Counters{}
	s, err := NewClientSession(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go s.Serve(ctx, NewMux())

	waitFor(t, 5*time.Second, "a ping wait extended", func() bool {
		return cfg.Counters.Stats()["rpc_keepalive_extended"] >= 2
	})
	if s.IsClosed() || cfg.Counters.Stats()["rpc_keepalive_timeouts"] != 0 {
		t.Fatalf("session closed (%v) or timed out (%d) while the answer sat unread", s.IsClosed(), cfg.Counters.Stats()["rpc_keepalive_timeouts"])
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
