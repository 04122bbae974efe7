package rpc

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testCA is a throwaway CA that issues leaf certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a certificate for 127.0.0.1, usable on both ends.
func (ca *testCA) leaf(t *testing.T) tls.Certificate {
	t.Helper()
	return ca.leafCN(t, "leaf")
}

// leafCN is leaf with the common name cn.
func (ca *testCA) leafCN(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startMTLSServer serves the test methods on a server that requires
// client certificates from ca.
func startMTLSServer(t *testing.T, ca *testCA, mut func(*Config)) string {
	t.Helper()
	cfg := testConfig(t)
	cfg.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS12,
	}
	if mut != nil {
		mut(cfg)
	}
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	addr, _ := startServer(t, cfg, mux, nil)
	return addr
}

// TestDial_TLSRefusal checks that a server refusing the session fails Dial
// itself, with ErrRefused, the server's reason when it sent one, the same
// text on every attempt, and no yamux error logged: the node logs a
// refusal once.
func TestDial_TLSRefusal(t *testing.T) {
	ca, otherCA := newTestCA(t), newTestCA(t)
	tls13 := startMTLSServer(t, ca, nil)
	tls12 := startMTLSServer(t, ca, func(c *Config) { c.TLSConfig.MaxVersion = tls.VersionTLS12 })

	clientTLS := func(cert *tls.Certificate) *tls.Config {
		c := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	foreign := otherCA.leaf(t)
	for _, tc := range []struct {
		name    string
		addr    string
		tls     *tls.Config
		wantIs  error
		wantMsg string
	}{
		{"tls13 cert from another CA", tls13, clientTLS(&foreign), ErrRefused, "remote error: tls: unknown certificate authority"},
		{"tls13 no client cert", tls13, clientTLS(nil), ErrRefused, "remote error: tls: certificate required"},
		{"tls12 cert from another CA", tls12, clientTLS(&foreign), nil, "remote error: tls: unknown certificate authority"},
		{"plaintext to TLS server", tls13, nil, ErrRefused, "the server closed the connection (does it require TLS?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			cfg := testConfig(t)
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs})
			cfg.TLSConfig = tc.tls
			var first string
			for i := 0; i < 8; i++ {
				s, err := Dial(context.Background(), tc.addr, cfg)
				if err == nil {
					s.Close()
					t.Fatalf("attempt %d: Dial succeeded; want a refusal", i)
				}
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Fatalf("attempt %d: Dial = %v; want %v", i, err, tc.wantIs)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("attempt %d: Dial = %q; want it to contain %q", i, err, tc.wantMsg)
				}
				if i == 0 {
					first = err.Error()
				} else if err.Error() != first {
					t.Fatalf("attempt %d: Dial = %q; want the same text as attempt 0, %q", i, err, first)
				}
			}
			if l := logs.String(); l != "" {
				t.Fatalf("logs at Info and above = %q; want none (the caller reports the refusal)", l)
			}
		})
	}

	t.Run("accepted", func(t *testing.T) {
		good := ca.leaf(t)
		cfg := testConfig(t)
		cfg.TLSConfig = clientTLS(&good)
		s, err := Dial(context.Background(), tls13, cfg)
		if err != nil {
			t.Fatalf("Dial = %v; want a session", err)
		}
		defer s.Close()
		var reply echoReply
		if err := s.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "hi"}, &reply); err != nil || reply.Msg != "server:hi" {
			t.Fatalf("Call = %q, %v; want server:hi", reply.Msg, err)
		}
	})
}

// TestDial_NoAnswer checks that a peer that accepts the connection but
// never answers the ping fails Dial within the dial timeout.
func TestDial_NoAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var buf [64]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	}()
	cfg := testConfig(t)
	cfg.DialTimeout = 300 * time.Millisecond
	start := time.Now()
	s, err := Dial(context.Background(), ln.Addr().String(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Dial to a silent peer succeeded")
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Dial = %v; want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Dial took %v; want about the 300ms dial timeout", d)
	}
}

// TestServer_TLSRaftPeer checks that a raft connection inside TLS
// reaches RaftHandler only when VerifyRaftPeer accepts the peer, so a node
// certificate that may open sessions cannot speak raft.
func TestServer_TLSRaftPeer(t *testing.T) {
	ca := newTestCA(t)
	handed := make(chan net.Conn, 4)
	addr := startMTLSServer(t, ca, func(c *Config) {
		c.RaftHandler = func(conn net.Conn) { handed <- conn }
		c.VerifyRaftPeer = func(cs tls.ConnectionState) error {
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != "server" {
				return errors.New("not a server: " + cn)
			}
			return nil
		}
	})
	raftConn := func(t *testing.T, cn string) *tls.Conn {
		t.Helper()
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		raw.Write([]byte{ByteTLS})
		cert := ca.leafCN(t, cn)
		tc := tls.Client(raw, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Write([]byte{ByteRaft}); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	for _, tc := range []struct {
		cn   string
		want bool
	}{{"server", true}, {"client", false}} {
		t.Run(tc.cn, func(t *testing.T) {
			conn := raftConn(t, tc.cn)
			if !tc.want {
				expectClosed(t, conn, 5*time.Second)
				select {
				case c := <-handed:
					c.Close()
					t.Fatal("a refused raft peer reached RaftHandler")
				default:
				}
				return
			}
			c := recvWithin(t, handed, 5*time.Second, "raft handoff")
			defer c.Close()
			st, ok := c.(*tls.Conn)
			if !ok {
				t.Fatalf("RaftHandler got %T; want the *tls.Conn", c)
			}
			if cn := st.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "server" {
				t.Fatalf("handed peer CN = %q; want server", cn)
			}
		})
	}
}

// TestSession_TLSConnectionState checks the TLS state sessions report on
// both ends, over each transport.
func TestSession_TLSConnectionState(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		for _, end := range []struct {
			name string
			sess *Session
		}{{"node", p.node}, {"server", p.server}} {
			cs, ok := end.sess.ConnectionState()
			if ok != (kind == "tls") {
				t.Fatalf("%s end: ConnectionState ok = %t; want %t over %s", end.name, ok, kind == "tls", kind)
			}
			if ok && !cs.HandshakeComplete {
				t.Fatalf("%s end: handshake not complete", end.name)
			}
		}
		if cs, ok := p.node.ConnectionState(); ok && len(cs.PeerCertificates) == 0 {
			t.Fatal("node end: no server certificate in the TLS state")
		}
	})
}

// TestServer_HandshakesBounded: with every TLS handshake slot taken, a
// new connection waits for one within HandshakeTimeout and is then
// refused; once a slot is free, the same dial succeeds.
func TestServer_HandshakesBounded(t *testing.T) {
	ca := newTestCA(t)
	cfg := testConfig(t)
	cfg.HandshakeTimeout = 300 * time.Millisecond
	cfg.MaxConcurrentHandshakes = 1
	cfg.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
	}
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	srv := NewServer(cfg, mux)
	if cap(srv.handshakes) != 1 {
		t.Fatalf("%d handshake slots; want 1", cap(srv.handshakes))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		recvWithin(t, done, 10*time.Second, "Serve to return")
	}()

	leaf := ca.leaf(t)
	ccfg := testConfig(t)
	ccfg.TLSConfig = &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{leaf}}

	srv.handshakes <- struct{}{} // the one slot is taken
	if s, err := Dial(context.Background(), ln.Addr().String(), ccfg); err == nil {
		s.Close()
		t.Fatal("a handshake ran with every slot taken")
	}
	<-srv.handshakes
	s, err := Dial(context.Background(), ln.Addr().String(), ccfg)
	if err != nil {
		t.Fatalf("Dial with a free slot: %v", err)
	}
	defer s.Close()
	var out echoReply
	if err := s.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "hi"}, &out); err != nil {
		t.Fatalf("call on the session: %v", err)
	}
	if len(srv.handshakes) != 0 {
		t.Fatalf("%d handshake slots still held after the handshake", len(srv.handshakes))
	}
}
