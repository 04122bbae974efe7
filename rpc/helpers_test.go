package rpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testLogger returns a logger writing to t.Log that goes quiet once the
// test is over (goroutines may still log while they wind down).
func testLogger(t testing.TB) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return hclog.New(&hclog.LoggerOptions{
		Name:   t.Name(),
		Level:  hclog.Debug,
		Output: w,
	})
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// testConfig returns a config for tests: short handshake timeout, logs to
// t.
func testConfig(t testing.TB) *Config {
	cfg := DefaultConfig()
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.Logger = testLogger(t)
	return cfg
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// recvWithin receives from ch or fails the test.
func recvWithin[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		panic("unreachable")
	}
}

// goroutinesSettle waits until the goroutine count is back to at most
// baseline, and dumps the stacks if it is not within the deadline.
func goroutinesSettle(t testing.TB, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines = %d; want <= %d\n%s", n, baseline, buf)
		}
		<-tick.C
	}
}

// codedError is an application error with a status code.
type codedError struct {
	code int
	msg  string
}

func (e *codedError) Error() string   { return e.msg }
func (e *codedError) StatusCode() int { return e.code }

// Test message types.
type inner struct {
	Name  string
	Count int
	Tags  []string
}

type echoArgs struct {
	Msg    string
	Data   []byte
	Meta   map[string]*string
	Dur    time.Duration
	When   time.Time
	Nested *inner
	List   []inner

	// Behaviour switches for the test handlers.
	Code      int    // Test.Error: status code to fail with
	Wrap      bool   // Test.Error: wrap the coded error
	ReplySize int    // Test.Big, Test.Frames: size of the reply's (frames') Data
	Frames    int    // Test.Frames: frames to send
	EndErr    string // Test.Frames / Test.EchoStream: error to end with
}

type echoReply struct {
	Msg       string
	Data      []byte
	Meta      map[string]*string
	Dur       time.Duration
	When      time.Time
	Nested    *inner
	List      []inner
	SessionID uint64
	HasDL     bool
}

type frame struct {
	Seq  int
	Data []byte
	End  bool
}

// hooks lets a test observe handlers.
type hooks struct {
	started   chan string // a blocking handler started
	cancelled chan error  // a blocking handler's ctx ended, with ctx.Err()
}

func newHooks() *hooks {
	return &hooks{started: make(chan string, 2048), cancelled: make(chan error, 2048)}
}

// registerTestMethods registers the test methods on m; name tells which
// side serves them.
func registerTestMethods(m *Mux, side string, h *hooks) {
	HandleUnary(m, "Test.Echo", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		*resp = echoReply{Msg: side + ":" + req.Msg, Data: req.Data, Meta: req.Meta, Dur: req.Dur,
			When: req.When, Nested: req.Nested, List: req.List}
		if s := SessionFromContext(ctx); s != nil {
			resp.SessionID = s.ID()
		}
		_, resp.HasDL = ctx.Deadline()
		return nil
	})
	HandleUnary(m, "Test.Error", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		if req.Code == 0 {
			return errors.New(req.Msg)
		}
		err := &codedError{code: req.Code, msg: req.Msg}
		if req.Wrap {
			return fmt.Errorf("wrapped: %w", err)
		}
		return err
	})
	HandleUnary(m, "Test.Block", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		h.started <- req.Msg
		<-ctx.Done()
		h.cancelled <- ctx.Err()
		return ctx.Err()
	})
	HandleUnary(m, "Test.Panic", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		panic("boom")
	})
	HandleUnary(m, "Test.Big", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		resp.Data = make([]byte, req.ReplySize)
		return nil
	})

	// Test.Frames sends args.Frames frames, then ends with args.EndErr.
	// Test.Raw: one msgpack frame, then Frames raw messages of Data with
	// the index in the first byte, alternating SendRaw and SendRawFrame.
	m.HandleStream("Test.Raw", func(ctx context.Context, s *Stream) error {
		var args echoArgs
		if err := s.Recv(&args); err != nil {
			return err
		}
		if err := s.Send(&frame{Seq: -1, Data: []byte(side)}); err != nil {
			return err
		}
		for i := 0; i < args.Frames; i++ {
			p := append([]byte{byte(i)}, args.Data...)
			var err error
			if i%2 == 0 {
				err = s.SendRaw(p)
			} else {
				err = s.SendRawFrame(append(make([]byte, RawHeaderSize), p...))
			}
			if err != nil {
				return err
			}
		}
		if args.EndErr != "" {
			return &codedError{code: args.Code, msg: args.EndErr}
		}
		return nil
	})
	// Test.RelayRaw opens Test.Raw back on the caller's session and relays
	// its messages unchanged.
	m.HandleStream("Test.RelayRaw", func(ctx context.Context, s *Stream) error {
		var args echoArgs
		if err := s.Recv(&args); err != nil {
			return err
		}
		src, err := SessionFromContext(ctx).OpenStream(ctx, "Test.Raw", &args)
		if err != nil {
			return err
		}
		defer src.Close()
		for {
			msg, err := src.RecvMsg()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := s.SendMsg(msg); err != nil {
				return err
			}
		}
	})
	m.HandleStream("Test.Frames", func(ctx context.Context, s *Stream) error {
		var args echoArgs
		if err := s.Recv(&args); err != nil {
			return err
		}
		for i := 0; i < args.Frames; i++ {
			data := []byte(side)
			if args.ReplySize > 0 {
				data = make([]byte, args.ReplySize)
			}
			if err := s.Send(&frame{Seq: i, Data: data}); err != nil {
				return err
			}
		}
		if args.EndErr != "" {
			return &codedError{code: args.Code, msg: args.EndErr}
		}
		return nil
	})
	// Test.EchoStream echoes frames until one has End set, then ends with
	// args.EndErr.
	m.HandleStream("Test.EchoStream", func(ctx context.Context, s *Stream) error {
		var args echoArgs
		if err := s.Recv(&args); err != nil {
			return err
		}
		for {
			var f frame
			if err := s.Recv(&f); err != nil {
				return err
			}
			if f.End {
				break
			}
			if err := s.Send(&f); err != nil {
				return err
			}
		}
		if args.EndErr != "" {
			return &codedError{code: args.Code, msg: args.EndErr}
		}
		return nil
	})
	// Test.BlockStream waits for its context to end.
	m.HandleStream("Test.BlockStream", func(ctx context.Context, s *Stream) error {
		var args echoArgs
		if err := s.Recv(&args); err != nil {
			return err
		}
		h.started <- args.Msg
		<-ctx.Done()
		h.cancelled <- ctx.Err()
		return ctx.Err()
	})
	m.HandleStream("Test.PanicStream", func(ctx context.Context, s *Stream) error {
		s.Recv(nil)
		s.Send(&frame{Seq: 1})
		panic("stream boom")
	})
	// Test.Sink reads frames until the caller closes.
	m.HandleStream("Test.Sink", func(ctx context.Context, s *Stream) error {
		for {
			if err := s.Recv(nil); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	})
}

// testCerts is a CA-signed certificate for 127.0.0.1 and the pool that
// trusts it, made once per test binary.
var testCerts = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "server.global.tether"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"server.global.tether"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
})

func serverTLSConfig() *tls.Config {
	cert, _ := testCerts()
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func clientTLSConfig() *tls.Config {
	_, pool := testCerts()
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// recordingListener records the connections it accepts.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *recordingListener) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// count returns how many connections were accepted.
func (l *recordingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// connTypes are the transports every session test runs over.
var connTypes = []string{"pipe", "tcp", "tls"}

// testConnTypes runs fn once per transport.
func testConnTypes(t *testing.T, fn func(t *testing.T, kind string)) {
	for _, kind := range connTypes {
		t.Run(kind, func(t *testing.T) { fn(t, kind) })
	}
}

// pairOpts tunes a test pair.
type pairOpts struct {
	serverCfg func(*Config) // adjust the server's config
	clientCfg func(*Config) // adjust the node's config
	// clientConn, with "tcp", wraps the node's connection (plain TCP,
	// dialled here) before its session starts on it.
	clientConn func(net.Conn) net.Conn
}

// testPair is a node (client, the dialer) and a server connected by one
// session, each serving the test methods on its end.
type testPair struct {
	node, server   *Session
	hooks          *hooks
	srv            *Server
	dropConn       func() // closes the server's end of the underlying connection
	serverCfg      *Config
	clientCfg      *Config
	ctx            context.Context
	cancelServe    context.CancelFunc
	serveWG        sync.WaitGroup
	nodeServeErr   chan error
	serverLn       *recordingListener
	nodeMux, srvMx *Mux
}

// newTestPair connects a node to a server over kind ("pipe", "tcp",
// "tls"). Everything is torn down when the test ends.
func newTestPair(t *testing.T, kind string, opts pairOpts) *testPair {
	t.Helper()
	p := &testPair{hooks: newHooks(), nodeServeErr: make(chan error, 1)}
	p.serverCfg, p.clientCfg = testConfig(t), testConfig(t)
	if kind == "tls" {
		p.serverCfg.TLSConfig = serverTLSConfig()
		p.clientCfg.TLSConfig = clientTLSConfig()
	}
	if opts.serverCfg != nil {
		opts.serverCfg(p.serverCfg)
	}
	if opts.clientCfg != nil {
		opts.clientCfg(p.clientCfg)
	}
	p.srvMx, p.nodeMux = NewMux(), NewMux()
	registerTestMethods(p.srvMx, "server", p.hooks)
	registerTestMethods(p.nodeMux, "node", p.hooks)

	p.srv = NewServer(p.serverCfg, p.srvMx)
	sessCh := make(chan *Session, 1)
	p.srv.OnSession = func(s *Session) { sessCh <- s }
	p.ctx, p.cancelServe = context.WithCancel(context.Background())

	var err error
	switch kind {
	case "pipe":
		c1, c2 := net.Pipe()
		p.serveWG.Add(1)
		go func() {
			defer p.serveWG.Done()
			p.srv.ServeConn(p.ctx, c2)
		}()
		p.dropConn = func() { c2.Close() }
		p.node, err = NewClientSession(c1, p.clientCfg)
	case "tcp", "tls":
		ln, lerr := net.Listen("tcp", "127.0.0.1:0")
		if lerr != nil {
			t.Fatal(lerr)
		}
		p.serverLn = &recordingListener{Listener: ln}
		p.serveWG.Add(1)
		go func() {
			defer p.serveWG.Done()
			if err := p.srv.Serve(p.ctx, p.serverLn); err != nil {
				t.Errorf("Serve: %v", err)
			}
		}()
		p.dropConn = p.serverLn.closeConns
		if opts.clientConn == nil || kind != "tcp" {
			p.node, err = Dial(context.Background(), ln.Addr().String(), p.clientCfg)
			break
		}
		raw, derr := net.Dial("tcp", ln.Addr().String())
		if derr != nil {
			p.cancelServe()
			t.Fatal(derr)
		}
		p.node, err = NewClientSession(opts.clientConn(raw), p.clientCfg)
	default:
		t.Fatalf("unknown conn type %q", kind)
	}
	if err != nil {
		p.cancelServe()
		t.Fatalf("connect: %v", err)
	}
	p.server = recvWithin(t, sessCh, 5*time.Second, "server session")
	p.serveWG.Add(1)
	go func() {
		defer p.serveWG.Done()
		p.nodeServeErr <- p.node.Serve(p.ctx, p.nodeMux)
	}()
	t.Cleanup(p.close)
	return p
}

// close tears the pair down and waits for its goroutines.
func (p *testPair) close() {
	p.node.Close()
	p.cancelServe()
	p.serveWG.Wait()
}

// numGoroutines is the baseline for goroutinesSettle.
func numGoroutines() int { return runtime.NumGoroutine() }

// busyStreams closes both sessions' idle unary streams (kept for reuse)
// and returns how many streams remain open on either side.
func (p *testPair) busyStreams() int {
	p.node.closeIdle()
	p.server.closeIdle()
	return p.node.NumStreams() + p.server.NumStreams()
}
