package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// startServer serves mux on a loopback listener until the test ends. It
// returns the address and a stop function that waits for Serve.
func startServer(t *testing.T, cfg *Config, mux *Mux, onSession func(*Session)) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(cfg, mux)
	srv.OnSession = onSession
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := recvWithin(t, done, 10*time.Second, "Serve to return"); err != nil {
				t.Errorf("Serve = %v; want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// expectClosed checks that the server closes conn within timeout.
func expectClosed(t *testing.T, conn net.Conn, timeout time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 256)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		if isTimeout(err) {
			t.Errorf("connection still open after %v", timeout)
		}
		return
	}
}

func TestServer_ShutdownClosesSessions(t *testing.T) {
	base := numGoroutines()
	cfg := testConfig(t)
	mux := NewMux()
	h := newHooks()
	registerTestMethods(mux, "server", h)
	var mu sync.Mutex
	var accepted []*Session
	addr, stop := startServer(t, cfg, mux, func(s *Session) {
		mu.Lock()
		accepted = append(accepted, s)
		mu.Unlock()
	})

	const nodes = 3
	var serveWG sync.WaitGroup
	var sessions []*Session
	for i := 0; i < nodes; i++ {
		s, err := Dial(context.Background(), addr, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
		nodeMux := NewMux()
		registerTestMethods(nodeMux, "node", newHooks())
		serveWG.Add(1)
		go func() {
			defer serveWG.Done()
			s.Serve(context.Background(), nodeMux)
		}()
		if err := s.Call(context.Background(), "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
			t.Fatal(err)
		}
	}
	// Leave a call and a stream in flight.
	callErr := make(chan error, 1)
	go func() { callErr <- sessions[0].Call(context.Background(), "Test.Block", &echoArgs{}, nil) }()
	st, err := sessions[1].OpenStream(context.Background(), "Test.BlockStream", &echoArgs{})
	if err != nil {
		t.Fatal(err)
	}
	recvWithin(t, h.started, 5*time.Second, "handler start")
	recvWithin(t, h.started, 5*time.Second, "handler start")

	stop()

	// The handler is cancelled; its answer may beat the session's close.
	err = recvWithin(t, callErr, 5*time.Second, "in-flight call")
	var re *RemoteError
	if !errors.Is(err, ErrSessionClosed) && !(errors.As(err, &re) && re.Message == context.Canceled.Error()) {
		t.Errorf("in-flight call = %v; want ErrSessionClosed or the handler's cancellation", err)
	}
	if err := st.Recv(nil); err == nil {
		t.Errorf("Recv on a stream of a stopped server succeeded")
	}
	st.Close()
	mu.Lock()
	for _, s := range accepted {
		if !s.IsClosed() {
			t.Errorf("server session %d still open after Serve returned", s.ID())
		}
	}
	mu.Unlock()
	for _, s := range sessions {
		select {
		case <-s.CloseChan():
		case <-time.After(5 * time.Second):
			t.Fatalf("node session %d not closed", s.ID())
		}
	}
	serveWG.Wait()
	goroutinesSettle(t, base)
}

func TestServer_MaxConnsPerIP(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnsPerIP = 2
	addr, _ := startServer(t, cfg, NewMux(), nil)

	var sessions []*Session
	for i := 0; i < 2; i++ {
		s, err := Dial(context.Background(), addr, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		sessions = append(sessions, s)
	}
	// Make sure both are being served (the count is taken on accept).
	for _, s := range sessions {
		if err := s.Call(context.Background(), "Nope", nil, nil); !errors.Is(err, ErrUnknownMethod) {
			t.Fatalf("Call = %v", err)
		}
	}
	// The third connection from the same IP is closed at once.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	expectClosed(t, conn, 5*time.Second)
	conn.Close()

	// Once one closes, a new one is accepted.
	sessions[0].Close()
	waitFor(t, 5*time.Second, "a slot to free up", func() bool {
		s, err := Dial(context.Background(), addr, testConfig(t))
		if err != nil {
			return false
		}
		defer s.Close()
		return errors.Is(s.Call(context.Background(), "Nope", nil, nil), ErrUnknownMethod)
	})
}

func TestServer_BadConnections(t *testing.T) {
	cfg := testConfig(t)
	cfg.HandshakeTimeout = 300 * time.Millisecond
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	addr, _ := startServer(t, cfg, mux, nil)

	cases := []struct {
		name  string
		bytes []byte
	}{
		{"silent", nil},
		{"unknown first byte", []byte{0xff}},
		{"legacy multiplex", []byte{0x03}},
		{"TLS not configured", []byte{ByteTLS, 0x16, 0x03, 0x01}},
		{"raft without handler", []byte{ByteRaft}},
		{"multiplex then garbage", append([]byte{ByteMultiplex}, []byte("GET / HTTP/1.1\r\n\r\n")...)},
		{"unary then garbage", []byte{ByteRPC, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01}},
		{"streaming then nothing", []byte{ByteStreaming}},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			if len(tc.bytes) > 0 {
				conn.Write(tc.bytes)
			}
			expectClosed(t, conn, 5*time.Second)
		}()
	}
	// Meanwhile, a good client is served.
	s, err := Dial(context.Background(), addr, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Call(context.Background(), "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
		t.Fatalf("Call: %v", err)
	}
	wg.Wait()
}

func TestServer_RawConnections(t *testing.T) {
	cfg := testConfig(t)
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	addr, _ := startServer(t, cfg, mux, nil)
	ncfg, _ := testConfig(t).normalize()

	t.Run("unary requests in sequence", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := 1; i <= 3; i++ {
			var reply echoReply
			err := unaryCall(context.Background(), time.Now().Add(10*time.Second), conn, nil, ncfg, "Test.Echo", uint64(i), &echoArgs{Msg: "raw"}, &reply, i == 1)
			if err != nil || reply.Msg != "server:raw" || reply.SessionID != 0 {
				t.Fatalf("call %d = %+v, %v", i, reply, err)
			}
		}
		err = unaryCall(context.Background(), time.Now().Add(10*time.Second), conn, nil, ncfg, "Test.Error", 4, &echoArgs{Code: 409, Msg: "conflict"}, nil, false)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != 409 {
			t.Fatalf("error call = %v", err)
		}
	})
	t.Run("one streaming call", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br, err := streamHandshake(context.Background(), conn, nil, ncfg, "Test.Frames", &echoArgs{Frames: 2})
		if err != nil {
			t.Fatal(err)
		}
		st, err := startCallerStream(context.Background(), conn, br, nil, ncfg, "Test.Frames", &echoArgs{Frames: 2}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for i := 0; i < 2; i++ {
			if err := st.Recv(nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Recv(nil); err != io.EOF {
			t.Fatalf("end = %v; want io.EOF", err)
		}
	})
}

func TestServer_TLS(t *testing.T) {
	cfg := testConfig(t)
	cfg.TLSConfig = serverTLSConfig()
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	addr, _ := startServer(t, cfg, mux, nil)

	t.Run("TLS session", func(t *testing.T) {
		ccfg := testConfig(t)
		ccfg.TLSConfig = clientTLSConfig()
		s, err := Dial(context.Background(), addr, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Call(context.Background(), "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("plaintext refused", func(t *testing.T) {
		s, err := Dial(context.Background(), addr, testConfig(t))
		if err == nil {
			s.Close()
		}
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("plaintext Dial = %v; want ErrRefused", err)
		}
	})
	t.Run("TLS inside TLS refused", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte{ByteTLS})
		tc := tls.Client(conn, &tls.Config{RootCAs: clientTLSConfig().RootCAs, ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.Write([]byte{ByteTLS})
		expectClosed(t, tc, 5*time.Second)
	})
	t.Run("bad certificate", func(t *testing.T) {
		ccfg := testConfig(t)
		ccfg.TLSConfig = &tls.Config{} // system roots do not know our CA
		if _, err := Dial(context.Background(), addr, ccfg); err == nil {
			t.Fatal("Dial with an untrusted certificate succeeded")
		}
	})
}

func TestServer_TLSUpgradeMode(t *testing.T) {
	cfg := testConfig(t)
	cfg.TLSConfig = serverTLSConfig()
	cfg.TLSUpgradeMode = true
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	addr, _ := startServer(t, cfg, mux, nil)
	s, err := Dial(context.Background(), addr, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Call(context.Background(), "Test.Echo", &echoArgs{}, &echoReply{}); err != nil {
		t.Fatalf("plaintext Call in upgrade mode = %v", err)
	}
}

func TestServer_Raft(t *testing.T) {
	cfg := testConfig(t)
	got := make(chan string, 1)
	cfg.RaftHandler = func(c net.Conn) {
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			got <- line
		}()
	}
	addr, _ := startServer(t, cfg, NewMux(), nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(append([]byte{ByteRaft}, "append entries\n"...))
	if line := recvWithin(t, got, 5*time.Second, "raft handler"); line != "append entries\n" {
		t.Errorf("raft handler read %q", line)
	}
}

func TestServer_InvalidConfig(t *testing.T) {
	srv := NewServer(&Config{MaxMessageSize: -1}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := srv.Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve with an invalid config = nil")
	}
	if _, err := Dial(context.Background(), ln.Addr().String(), &Config{MaxMessageSize: -1}); err == nil {
		t.Fatal("Dial with an invalid config = nil")
	}
}
