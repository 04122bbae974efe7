package rpc

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests of what an idle session keeps (idle_cost_test.go measures
// it): streams kept for reuse expire, the flusher and the keepalive run
// only when needed, AfterClose runs without a goroutine per session.

// gateMethod registers Test.Gate on m: each call waits until n calls are
// in flight together, so that n streams are open at once.
func gateMethod(m *Mux, n int) {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	HandleUnary(m, "Test.Gate", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		mu.Lock()
		if arrived++; arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-ctx.Done():
			return ctx.Err()
		}
		resp.Msg = req.Msg
		return nil
	})
}

func (s *Session) idleCount() int {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	return len(s.idle)
}

// TestSession_IdleStreamsExpire checks that the streams a burst of
// concurrent calls leaves idle are kept for reuse and closed on both ends once unused for IdleStreamTimeout;
// a stream in use in the meantime is kept.
func TestSession_IdleStreamsExpire(t *testing.T) {
	const burst = 8
	const ttl = 100 * time.Millisecond
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{
			clientCfg: func(c *Config) { c.IdleStreamTimeout = ttl },
		})
		gateMethod(p.srvMx, burst)
		var wg sync.WaitGroup
		big := bytes.Repeat([]byte("x"), 8<<10) // grows yamux's receive buffers
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r echoReply
				if err := p.node.Call(context.Background(), "Test.Gate", &echoArgs{Msg: "m", Data: big}, &r); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if n := p.node.idleCount(); n != burst {
			t.Fatalf("%d idle streams after a burst of %d; want all kept", n, burst)
		}
		// Keep one stream busy: the others expire, one stays.
		stop := make(chan struct{})
		busy := make(chan struct{})
		go func() {
			defer close(busy)
			tick := time.NewTicker(ttl / 4)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				var r echoReply
				if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "keep"}, &r); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		waitFor(t, 10*time.Second, "the unused idle streams to close", func() bool {
			return p.node.idleCount() == 1 && p.server.NumStreams() == 1 && p.node.NumStreams() == 1
		})
		close(stop)
		<-busy
		waitFor(t, 10*time.Second, "the last idle stream to close", func() bool {
			return p.node.idleCount() == 0 && p.server.NumStreams() == 0 && p.node.NumStreams() == 0
		})
		// Calls still work afterwards, on a fresh stream.
		var r echoReply
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "again"}, &r); err != nil || r.Msg != "server:again" {
			t.Fatalf("call after expiry = %q, %v", r.Msg, err)
		}
	})
}

// TestFrameCoalescer_FlusherOnlyWhileQueued checks that the flusher
// goroutine ends once the queue is written, gives its buffers back, and
// that the next frame starts it again.
func TestFrameCoalescer_FlusherOnlyWhileQueued(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := c2.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	fc := coalesceFrames(c1, nil)
	defer fc.Close()
	idle := func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return !fc.started && fc.queue == nil && fc.spare == nil
	}
	for i, msg := range []string{"first", "second"} {
		if _, err := fc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if b := recvWithin(t, got, 5*time.Second, "frame "+msg); string(b) != msg {
			t.Fatalf("write %d: got %q, want %q", i, b, msg)
		}
		waitFor(t, 5*time.Second, "the flusher to end", idle)
	}
}

// TestSession_KeepAliveTimer checks the session's own keepalive: an
// answering peer keeps the session open over many intervals with no
// keepalive goroutine, and a peer that stops answering gets the session
// closed.
func TestSession_KeepAliveTimer(t *testing.T) {
	fast := func(c *Config) {
		c.KeepAliveInterval = 20 * time.Millisecond
		c.KeepAliveTimeout = 200 * time.Millisecond
	}
	t.Run("answered", func(t *testing.T) {
		p := newTestPair(t, "tcp", pairOpts{clientCfg: fast, serverCfg: fast})
		deadline := time.Now().Add(300 * time.Millisecond) // 15 intervals
		for time.Now().Before(deadline) {
			if p.node.IsClosed() || p.server.IsClosed() {
				t.Fatal("session closed although the peer answers pings")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if p.node.cfg.yamuxSession.EnableKeepAlive || p.node.cfg.keepAliveInterval != 20*time.Millisecond {
			t.Fatalf("yamux keepalive on (%v) or session interval %v", p.node.cfg.yamuxSession.EnableKeepAlive, p.node.cfg.keepAliveInterval)
		}
	})
	t.Run("unanswered", func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		go func() { // reads everything, answers nothing
			buf := make([]byte, 1024)
			for {
				if _, err := c2.Read(buf); err != nil {
					return
				}
			}
		}()
		cfg := testConfig(t)
		fast(cfg)
		cfg.Counters = &Counters{}
		s, err := NewClientSession(c1, cfg)
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		s.AfterClose(func() { close(closed) })
		// Well before yamux's ConnectionWriteTimeout (10 s), which is
		// all its own ping waits for: the session's timeout closed it.
		recvWithin(t, s.CloseChan(), 5*time.Second, "the session to close")
		recvWithin(t, closed, 5*time.Second, "AfterClose to run")
		if got := cfg.Counters.Stats()["rpc_keepalive_timeouts"]; got != 1 {
			t.Errorf("rpc_keepalive_timeouts = %d; want 1", got)
		}
	})
}

// TestSession_AfterClose checks when AfterClose callbacks run: on Close,
// when the remote end goes away (Serve notices), at once for a closed
// session, never after stop.
func TestSession_AfterClose(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		p := newTestPair(t, "pipe", pairOpts{})
		var ran atomic.Int32
		done := make(chan struct{})
		p.node.AfterClose(func() { ran.Add(1); close(done) })
		stopped := p.node.AfterClose(func() { ran.Add(10) })
		if !stopped() {
			t.Fatal("stop after registering reported the callback as started")
		}
		p.node.Close()
		p.node.Close()
		recvWithin(t, done, 5*time.Second, "callback")
		late := make(chan struct{})
		p.node.AfterClose(func() { close(late) })
		recvWithin(t, late, 5*time.Second, "callback registered after close")
		if n := ran.Load(); n != 1 {
			t.Fatalf("callbacks ran %d (1 = once, 10 = the stopped one)", n)
		}
	})
	t.Run("remote goes away", func(t *testing.T) {
		p := newTestPair(t, "tcp", pairOpts{})
		done := make(chan struct{})
		p.server.AfterClose(func() { close(done) })
		p.node.Close() // the server's end notices: its Serve returns
		recvWithin(t, done, 5*time.Second, "the server's callback")
	})
}

// TestServeUnary_ReaderReleased checks that a unary stream kept idle
// serves its next request correctly after giving back its reader,
// whatever the request's size, and that a handler still sees its caller
// go away while the stream holds no reader.
func TestServeUnary_ReaderReleased(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{clientCfg: func(c *Config) { c.HandlerWatchDelay = time.Millisecond }})
		for _, size := range []int{0, 1, 100, 4095, 4096, 4097, 64 << 10} {
			var r echoReply
			data := bytes.Repeat([]byte{'d'}, size)
			if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "m", Data: data}, &r); err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(r.Data, data) {
				t.Fatalf("size %d: reply of %d bytes", size, len(r.Data))
			}
			if n := p.node.idleCount(); n != 1 {
				t.Fatalf("size %d: %d idle streams, want the one stream reused", size, n)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.server.Call(ctx, "Test.Block", &echoArgs{Msg: "b"}, nil) }()
		recvWithin(t, p.hooks.started, 5*time.Second, "the handler to start")
		cancel()
		if err := recvWithin(t, p.hooks.cancelled, 5*time.Second, "the handler to be cancelled"); !errors.Is(err, context.Canceled) {
			t.Fatalf("handler's context ended with %v", err)
		}
		if err := recvWithin(t, errc, 5*time.Second, "the call to end"); !errors.Is(err, context.Canceled) {
			t.Fatalf("call = %v", err)
		}
	})
}

// TestMux_EndWithSession checks a method marked EndWithSession: its
// handler is not watched for the caller leaving (no goroutine), and its
// context ends when the session closes or at the call's deadline.
func TestMux_EndWithSession(t *testing.T) {
	p := newTestPair(t, "tcp", pairOpts{serverCfg: func(c *Config) { c.HandlerWatchDelay = time.Millisecond }})
	ended := make(chan error, 4)
	started := make(chan struct{}, 4)
	HandleUnary(p.srvMx, "Test.Long", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	})
	p.srvMx.EndWithSession("Test.Long")

	// The deadline ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.node.Call(ctx, "Test.Long", &echoArgs{}, nil); err == nil {
		t.Fatal("call past its deadline succeeded")
	}
	recvWithin(t, started, 5*time.Second, "handler start")
	if err := recvWithin(t, ended, 5*time.Second, "handler end at the deadline"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler ended with %v; want the deadline", err)
	}

	// The session's end ends it, with no watch goroutine meanwhile.
	errc := make(chan error, 1)
	go func() { errc <- p.node.Call(context.Background(), "Test.Long", &echoArgs{}, nil) }()
	recvWithin(t, started, 5*time.Second, "handler start")
	base := runtime.NumGoroutine()
	time.Sleep(20 * time.Millisecond) // well past HandlerWatchDelay: a watch would have started
	if g := runtime.NumGoroutine(); g > base {
		t.Fatalf("goroutines %d -> %d while the call runs: a caller watch started", base, g)
	}
	p.node.Close()
	if err := recvWithin(t, ended, 5*time.Second, "handler end with the session"); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler ended with %v; want cancelled", err)
	}
	recvWithin(t, errc, 5*time.Second, "the call to fail")
}
