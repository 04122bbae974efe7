package rpc

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// poolServer serves the test methods and records server-side sessions.
type poolServer struct {
	addr     string
	ln       *countingListener
	mu       sync.Mutex
	sessions []*Session
	stop     func()
	hooks    *hooks
}

func newPoolServer(t *testing.T) *poolServer {
	t.Helper()
	ps := &poolServer{hooks: newHooks()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps.ln = &countingListener{Listener: ln}
	ps.addr = ln.Addr().String()
	mux := NewMux()
	registerTestMethods(mux, "server", ps.hooks)
	srv := NewServer(testConfig(t), mux)
	srv.OnSession = func(s *Session) {
		ps.mu.Lock()
		ps.sessions = append(ps.sessions, s)
		ps.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ps.ln)
	}()
	var once sync.Once
	ps.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(ps.stop)
	return ps
}

func (ps *poolServer) closeSessions() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, s := range ps.sessions {
		s.Close()
	}
}

func TestPool_SingleDialUnderConcurrency(t *testing.T) {
	base := numGoroutines()
	ps := newPoolServer(t)
	p := NewPool(testConfig(t))

	const callers = 50
	var wg sync.WaitGroup
	var start sync.WaitGroup
	start.Add(1)
	sessions := make([]*Session, callers)
	errs := make([]error, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			start.Wait()
			sessions[i], errs[i] = p.Session(context.Background(), ps.addr)
			if errs[i] == nil {
				errs[i] = p.Call(context.Background(), ps.addr, "Test.Echo", &echoArgs{}, &echoReply{})
			}
		}(i)
	}
	start.Done()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if sessions[i] != sessions[0] {
			t.Fatalf("caller %d got session %d; want %d", i, sessions[i].ID(), sessions[0].ID())
		}
	}
	if n := ps.ln.n.Load(); n != 1 {
		t.Errorf("dials = %d; want 1", n)
	}
	p.Close()
	if _, err := p.Session(context.Background(), ps.addr); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Session after Close = %v; want ErrPoolClosed", err)
	}
	ps.stop()
	goroutinesSettle(t, base)
}

func TestPool_RedialAfterRemoteClose(t *testing.T) {
	ps := newPoolServer(t)
	p := NewPool(testConfig(t))
	defer p.Close()

	ctx := context.Background()
	first, err := p.Session(ctx, ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Call(ctx, ps.addr, "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
		t.Fatal(err)
	}
	ps.closeSessions()
	<-first.CloseChan()

	// The dead session is noticed and replaced, and the call succeeds.
	var reply echoReply
	if err := p.Call(ctx, ps.addr, "Test.Echo", &echoArgs{Msg: "again"}, &reply); err != nil {
		t.Fatalf("Call after remote close: %v", err)
	}
	if reply.Msg != "server:again" {
		t.Errorf("reply = %q", reply.Msg)
	}
	second, err := p.Session(ctx, ps.addr)
	if err != nil || second == first {
		t.Fatalf("Session = %v, %v; want a new session", second, err)
	}
	if n := ps.ln.n.Load(); n != 2 {
		t.Errorf("dials = %d; want 2", n)
	}

	// Same for streams.
	ps.closeSessions()
	<-second.CloseChan()
	st, err := p.OpenStream(ctx, ps.addr, "Test.Frames", &echoArgs{Frames: 1})
	if err != nil {
		t.Fatalf("OpenStream after remote close: %v", err)
	}
	defer st.Close()
	if err := st.Recv(nil); err != nil {
		t.Fatal(err)
	}
}

func TestPool_MidCallFailureNotRetried(t *testing.T) {
	ps := newPoolServer(t)
	p := NewPool(testConfig(t))
	defer p.Close()
	errCh := make(chan error, 1)
	go func() { errCh <- p.Call(context.Background(), ps.addr, "Test.Block", &echoArgs{}, nil) }()
	recvWithin(t, ps.hooks.started, 5*time.Second, "handler start")
	ps.closeSessions()
	if err := recvWithin(t, errCh, 5*time.Second, "call"); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("err = %v; want ErrSessionClosed", err)
	}
	if n := ps.ln.n.Load(); n != 1 {
		t.Errorf("dials = %d; want 1 (a call that may have run is not retried)", n)
	}
}

func TestPool_DialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := NewPool(testConfig(t))
	defer p.Close()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Call(context.Background(), addr, "Test.Echo", nil, nil); err == nil {
				t.Errorf("Call to a closed port succeeded")
			}
		}()
	}
	wg.Wait()
	// A waiter whose context ends stops waiting.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Session(ctx, addr); err == nil {
		t.Errorf("Session with a cancelled ctx succeeded")
	}
}

func TestPool_IdleReap(t *testing.T) {
	ps := newPoolServer(t)
	p := NewPool(testConfig(t))
	p.IdleTimeout = 100 * time.Millisecond
	defer p.Close()

	ctx := context.Background()
	// A session with an open stream is not reaped.
	st, err := p.OpenStream(ctx, ps.addr, "Test.BlockStream", &echoArgs{})
	if err != nil {
		t.Fatal(err)
	}
	recvWithin(t, ps.hooks.started, 5*time.Second, "handler start")
	sess, _ := p.Session(ctx, ps.addr)
	deadline := time.After(400 * time.Millisecond)
	select {
	case <-sess.CloseChan():
		t.Fatal("session with an open stream was reaped")
	case <-deadline:
	}
	st.Close()
	// Once idle, it is.
	select {
	case <-sess.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("idle session not reaped")
	}
	if err := p.Call(ctx, ps.addr, "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
		t.Fatalf("Call after reap: %v", err)
	}
}

// TestPool_IdleReapAfterUnaryCalls: the streams unary calls leave idle for
// reuse do not keep a session in use, so a peer session that only ever
// made unary calls idles out.
func TestPool_IdleReapAfterUnaryCalls(t *testing.T) {
	ps := newPoolServer(t)
	p := NewPool(testConfig(t))
	p.IdleTimeout = 100 * time.Millisecond
	defer p.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := p.Call(ctx, ps.addr, "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := p.Session(ctx, ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	if sess.NumStreams() == 0 {
		t.Fatal("no idle stream kept after unary calls; the test would prove nothing")
	}
	select {
	case <-sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatalf("session with only idle unary streams (%d) not reaped", sess.NumStreams())
	}
}

func TestPool_ServesMux(t *testing.T) {
	for _, withMux := range []bool{true, false} {
		name := "with mux"
		if !withMux {
			name = "without mux"
		}
		t.Run(name, func(t *testing.T) { testPoolServesMux(t, withMux) })
	}
}

// testPoolServesMux checks that a pool answers calls the remote makes back
// down the session it dialed: with its Mux, or with ErrUnknownMethod.
func testPoolServesMux(t *testing.T, withMux bool) {
	var mu sync.Mutex
	var remote *Session
	got := make(chan struct{})
	addr, _ := startServer(t, testConfig(t), NewMux(), func(s *Session) {
		mu.Lock()
		remote = s
		mu.Unlock()
		close(got)
	})
	p := NewPool(testConfig(t))
	if withMux {
		p.Mux = NewMux()
		registerTestMethods(p.Mux, "pool", newHooks())
	}
	defer p.Close()
	if _, err := p.Session(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, got, 5*time.Second, "server session")
	mu.Lock()
	defer mu.Unlock()
	var reply echoReply
	err := remote.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "back"}, &reply)
	if withMux && (err != nil || reply.Msg != "pool:back") {
		t.Fatalf("call back = %+v, %v", reply, err)
	}
	if !withMux && !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("call back = %v; want ErrUnknownMethod", err)
	}
}

// TestPool_DialWait checks that a caller waits at most DialWait for a
// dial to an address that accepts and never answers (a silent peer),
// that the dial goes on for the callers after it (one connection for
// all), and that Close ends it.
func TestPool_DialWait(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: raw}
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		raw.Close()
		for len(conns) > 0 {
			(<-conns).Close()
		}
	})
	cfg := testConfig(t)
	cfg.DialTimeout = time.Hour
	p := NewPool(cfg)
	p.DialWait = 20 * time.Millisecond
	for i := 0; i < 3; i++ {
		_, err := p.Session(context.Background(), ln.Addr().String())
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Session %d to a silent address = %v; want ErrTimeout", i, err)
		}
	}
	if n := ln.n.Load(); n > 1 {
		t.Errorf("%d connections for three waits; want the one dial going on", n)
	}
	p.Close() // ends the dial in progress, or this test would hang
}
