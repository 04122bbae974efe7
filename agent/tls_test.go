package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testPKI is a CA and the files of certificates it issued, in a temp dir.
type testPKI struct {
	t          *testing.T
	dir        string
	caPEM      []byte
	caKeyPEM   []byte
	caFile     string
	certs      map[string][2]string // name → cert file, key file
	certLeaves map[string]*x509.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, caKey, err := GenerateCA(CAOptions{})
	if err != nil {
		t.Fatalf("GenerateCA: %v", err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), caPEM: ca, caKeyPEM: caKey, certs: map[string][2]string{}, certLeaves: map[string]*x509.Certificate{}}
	p.caFile = p.write("ca.pem", ca)
	return p
}

func (p *testPKI) write(name string, b []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue generates a certificate for o (CA filled in) and writes it as
// <name>.pem and <name>-key.pem.
func (p *testPKI) issue(name string, o CertOptions) (certFile, keyFile string) {
	p.t.Helper()
	o.CACert, o.CAKey = p.caPEM, p.caKeyPEM
	c, k, err := GenerateCert(o)
	if err != nil {
		p.t.Fatalf("GenerateCert(%s): %v", name, err)
	}
	certFile, keyFile = p.write(name+".pem", c), p.write(name+"-key.pem", k)
	p.certs[name] = [2]string{certFile, keyFile}
	leaf, err := parseCertPEM(c)
	if err != nil {
		p.t.Fatal(err)
	}
	p.certLeaves[name] = leaf
	return certFile, keyFile
}

// tlsSettings returns a tls block using the CA and the certificate name.
func (p *testPKI) tlsSettings(name string) TLSConfig {
	f := p.certs[name]
	return TLSConfig{HTTP: true, RPC: true, CAFile: p.caFile, CertFile: f[0], KeyFile: f[1], VerifyServerHostname: true, VerifyHTTPSClient: true}
}

// handshake runs a TLS handshake between the two configs over a pipe and
// one byte of application data from server to client, so that a TLS 1.3
// server's refusal of the client certificate is seen by the client too.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	deadline := time.Now().Add(5 * time.Second)
	c1.SetDeadline(deadline)
	c2.SetDeadline(deadline)
	srvErr := make(chan error, 1)
	go func() {
		s := tls.Server(c2, server)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		c2.Close()
		srvErr <- err
	}()
	c := tls.Client(c1, client)
	cerr := c.Handshake()
	if cerr == nil {
		var b [1]byte
		_, cerr = c.Read(b[:])
	}
	cs := c.ConnectionState()
	c1.Close()
	return cs, cerr, <-srvErr
}

// plainClient is a client config that trusts pool and presents cert
// whatever CAs the server asks for (Go would otherwise send no certificate
// to a server whose CA did not sign it), offering HTTP/2 and HTTP/1.1.
func plainClient(pool *x509.CertPool, cert *tls.Certificate, serverName string) *tls.Config {
	c := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}

func loadPair(t *testing.T, files [2]string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(files[0], files[1])
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestTLSGen_CertNames(t *testing.T) {
	p := newTestPKI(t)
	caCert, err := parseCertPEM(p.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.IsCA || !strings.HasPrefix(caCert.Subject.CommonName, "Nomad Agent CA ") {
		t.Fatalf("CA IsCA=%t CN=%q; want a CA named Nomad Agent CA <serial>", caCert.IsCA, caCert.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	for _, tc := range []struct {
		opts    CertOptions
		wantDNS []string
		wantIPs []string
	}{
		{CertOptions{Role: RoleServer}, []string{"server.global.nomad", "localhost"}, []string{"127.0.0.1"}},
		{CertOptions{Role: RoleClient, Region: "eu"}, []string{"client.eu.nomad", "localhost"}, []string{"127.0.0.1"}},
		{CertOptions{Role: RoleCLI}, []string{"cli.global.nomad", "localhost"}, nil},
		{CertOptions{Role: RoleServer, Node: "s1", DNSNames: []string{"nomad.example.com", "localhost"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("127.0.0.1")}},
			[]string{"server.global.nomad", "localhost", "s1.server.global.nomad", "nomad.example.com"}, []string{"127.0.0.1", "10.0.0.1"}},
	} {
		name := tc.opts.Role + "-" + tc.opts.Region + tc.opts.Node
		t.Run(name, func(t *testing.T) {
			p.issue(name, tc.opts)
			leaf := p.certLeaves[name]
			if !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNSNames = %q; want %q", leaf.DNSNames, tc.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("IPAddresses = %q; want %q", ips, tc.wantIPs)
			}
			if leaf.Subject.CommonName != tc.wantDNS[0] {
				t.Errorf("CommonName = %q; want %q", leaf.Subject.CommonName, tc.wantDNS[0])
			}
			pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T; want ECDSA P-256", leaf.PublicKey)
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore).Round(time.Hour); got != 365*24*time.Hour {
				t.Errorf("validity = %v; want 365 days", got)
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.wantDNS[0], KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("Verify(%v) = %v; want the CA to vouch for %s", usage, err, tc.wantDNS[0])
				}
			}
		})
	}
}

func TestTLSGen_CertBadInput(t *testing.T) {
	p := newTestPKI(t)
	other, otherKey, err := GenerateCA(CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts CertOptions
		want string
	}{
		{"no role", CertOptions{}, `role "" is invalid`},
		{"node on client", CertOptions{Role: RoleClient, Node: "n"}, "only valid for server"},
		{"no CA", CertOptions{Role: RoleServer, CAKey: p.caKeyPEM}, "CA certificate: no PEM certificate found"},
		{"CA key mismatch", CertOptions{Role: RoleServer, CACert: p.caPEM, CAKey: otherKey}, "CA key does not match"},
		{"negative days", CertOptions{Role: RoleServer, CACert: other, CAKey: otherKey, Days: -1}, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := GenerateCert(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GenerateCert = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestTLSGen_CANameConstraint(t *testing.T) {
	ca, key, err := GenerateCA(CAOptions{NameConstraint: true, AdditionalDomains: []string{"example.com"}, Days: 10})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := parseCertPEM(ca)
	if want := []string{"nomad", "localhost", "example.com"}; !slices.Equal(c.PermittedDNSDomains, want) {
		t.Errorf("PermittedDNSDomains = %q; want %q", c.PermittedDNSDomains, want)
	}
	if got := c.NotAfter.Sub(c.NotBefore).Round(time.Hour); got != 10*24*time.Hour {
		t.Errorf("validity = %v; want 10 days", got)
	}
	// A certificate outside the constraint does not verify.
	leafPEM, _, err := GenerateCert(CertOptions{Role: RoleServer, DNSNames: []string{"evil.org"}, CACert: ca, CAKey: key})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := parseCertPEM(leafPEM)
	roots := x509.NewCertPool()
	roots.AddCert(c)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err == nil {
		t.Error("a certificate for evil.org verified under a CA constrained to nomad")
	}
}

// TestLoadTLS_BadInput checks that every bad file fails loading with an
// error naming the setting and the file, and never quoting key material.
func TestLoadTLS_BadInput(t *testing.T) {
	p := newTestPKI(t)
	p.issue("server", CertOptions{Role: RoleServer})
	p.issue("other", CertOptions{Role: RoleServer})
	p.issue("expired", CertOptions{Role: RoleServer, NotBefore: time.Now().Add(-72 * time.Hour), Days: 1})
	good := p.tlsSettings("server")
	keyPEM, err := os.ReadFile(good.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	encrypted := p.write("encrypted-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes}))
	garbageKey := p.write("garbage-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not a key at all")}))
	empty := p.write("empty.pem", nil)
	unreadable := p.write("unreadable.pem", p.caPEM)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	_, statErr := os.ReadFile(unreadable) // root reads anything
	missing := filepath.Join(p.dir, "missing.pem")

	for _, tc := range []struct {
		name   string
		mut    func(*TLSConfig)
		want   []string
		wantIs error
	}{
		{"missing cert", func(c *TLSConfig) { c.CertFile = missing }, []string{"tls.cert_file", missing, "cannot read"}, fs.ErrNotExist},
		{"missing key", func(c *TLSConfig) { c.KeyFile = missing }, []string{"tls.key_file", missing, "cannot read"}, fs.ErrNotExist},
		{"missing ca", func(c *TLSConfig) { c.CAFile = missing }, []string{"tls.ca_file", missing, "cannot read"}, fs.ErrNotExist},
		{"empty cert", func(c *TLSConfig) { c.CertFile = empty }, []string{"tls.cert_file", empty, "no PEM certificate"}, nil},
		{"key as cert", func(c *TLSConfig) { c.CertFile = good.KeyFile }, []string{"tls.cert_file", good.KeyFile, "no PEM certificate"}, nil},
		{"ca without certificates", func(c *TLSConfig) { c.CAFile = good.KeyFile }, []string{"tls.ca_file", good.KeyFile, "no PEM certificate"}, nil},
		{"key of another cert", func(c *TLSConfig) { c.KeyFile = p.certs["other"][1] }, []string{"tls.key_file", p.certs["other"][1], "does not match", good.CertFile}, nil},
		{"cert as key", func(c *TLSConfig) { c.KeyFile = good.CertFile }, []string{"tls.key_file", good.CertFile, "no PEM private key"}, nil},
		{"garbage key", func(c *TLSConfig) { c.KeyFile = garbageKey }, []string{"tls.key_file", garbageKey, "parsing ec private key"}, nil},
		{"encrypted key", func(c *TLSConfig) { c.KeyFile = encrypted }, []string{"tls.key_file", encrypted, "encrypted private keys are not supported"}, nil},
		{"expired cert", func(c *TLSConfig) { c.CertFile, c.KeyFile = p.certs["expired"][0], p.certs["expired"][1] }, []string{"tls.cert_file", p.certs["expired"][0], "expired on"}, nil},
		{"rpc without ca", func(c *TLSConfig) { c.CAFile, c.VerifyHTTPSClient = "", false }, []string{"tls.ca_file is required when tls.rpc"}, nil},
		{"https client check without ca", func(c *TLSConfig) { c.CAFile, c.RPC = "", false }, []string{"tls.ca_file is required when tls.verify_https_client"}, nil},
		{"no cert file", func(c *TLSConfig) { c.CertFile = "" }, []string{"tls.cert_file must be set"}, nil},
		{"bad min version", func(c *TLSConfig) { c.TLSMinVersion = "ssl3" }, []string{"tls.tls_min_version", "ssl3"}, nil},
		{"bad cipher", func(c *TLSConfig) { c.TLSCipherSuites = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_NOPE" }, []string{"tls.tls_cipher_suites", "TLS_NOPE"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mut(&c)
			_, err := newAgentTLS(c, "global")
			if err == nil {
				t.Fatal("newAgentTLS = nil; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q; want it to contain %q", err, w)
				}
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %q; want it to match %v", err, tc.wantIs)
			}
			for _, line := range strings.Split(string(keyPEM), "\n") {
				if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line) {
					t.Fatalf("error %q quotes the private key", err)
				}
			}
		})
	}
	if statErr != nil {
		t.Run("unreadable ca", func(t *testing.T) {
			c := good
			c.CAFile = unreadable
			_, err := newAgentTLS(c, "global")
			if err == nil || !strings.Contains(err.Error(), "tls.ca_file") || !errors.Is(err, fs.ErrPermission) {
				t.Fatalf("newAgentTLS = %v; want a permission error naming tls.ca_file", err)
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		c := good
		c.TLSMinVersion, c.TLSCipherSuites = "tls13", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256"
		at, err := newAgentTLS(c, "global")
		if err != nil {
			t.Fatalf("newAgentTLS = %v", err)
		}
		m := at.current()
		if m.minVersion != tls.VersionTLS13 || len(m.ciphers) != 2 {
			t.Fatalf("min version %x, ciphers %v; want TLS 1.3 and 2 suites", m.minVersion, m.ciphers)
		}
	})
}

// TestTLS_RPCRoles checks who may talk to whom on the RPC port: with
// verify_server_hostname, servers accept node and server certificates of
// their region only, and nodes accept only a server certificate, so a
// node's certificate cannot impersonate a server.
func TestTLS_RPCRoles(t *testing.T) {
	p := newTestPKI(t)
	p.issue("server", CertOptions{Role: RoleServer})
	p.issue("client", CertOptions{Role: RoleClient})
	p.issue("cli", CertOptions{Role: RoleCLI})
	p.issue("eu-client", CertOptions{Role: RoleClient, Region: "eu"})
	foreign := newTestPKI(t)
	foreign.issue("client", CertOptions{Role: RoleClient})
	foreign.issue("server", CertOptions{Role: RoleServer})

	agentTLSFor := func(name string, verifyHostname bool) *agentTLS {
		c := p.tlsSettings(name)
		c.VerifyServerHostname = verifyHostname
		at, err := newAgentTLS(c, "global")
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	server := agentTLSFor("server", true)
	serverNoVerify := agentTLSFor("server", false)
	node := agentTLSFor("client", true)
	nodeNoVerify := agentTLSFor("client", false)

	for _, tc := range []struct {
		name    string
		server  *tls.Config
		client  *tls.Config
		wantErr string // "" means the session is accepted
	}{
		{"node cert to server", server.rpcServerConfig(), node.rpcClientConfig(), ""},
		{"server cert to server", server.rpcServerConfig(), agentTLSFor("server", true).rpcClientConfig(), ""},
		{"cli cert to server", server.rpcServerConfig(), skipVerify(plainClient(nil, loadPair(t, p.certs["cli"]), "")), "is valid for neither client.global.nomad nor server.global.nomad"},
		{"other region's node", server.rpcServerConfig(), skipVerify(plainClient(nil, loadPair(t, p.certs["eu-client"]), "")), "valid for neither"},
		{"other region's node, no hostname check", serverNoVerify.rpcServerConfig(), skipVerify(plainClient(nil, loadPair(t, p.certs["eu-client"]), "")), ""},
		{"node cert from another CA", server.rpcServerConfig(), skipVerify(plainClient(nil, loadPair(t, foreign.certs["client"]), "")), "certificate signed by unknown authority"},
		{"no client cert", server.rpcServerConfig(), skipVerify(plainClient(nil, nil, "")), "client didn't provide a certificate"},
		{"node cert posing as server", serveAs(t, p.certs["client"]), node.rpcClientConfig(), "not server.global.nomad"},
		{"node cert posing as server, no hostname check", serveAs(t, p.certs["client"]), nodeNoVerify.rpcClientConfig(), ""},
		{"server from another CA", serveAs(t, foreign.certs["server"]), node.rpcClientConfig(), "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cerr, serr := handshake(t, tc.server, tc.client)
			err := errors.Join(serr, cerr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake = %v; want success", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("handshake succeeded; want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("handshake = %v; want %q", err, tc.wantErr)
			}
		})
	}
}

// TestTLS_RaftPeer checks that, with verify_server_hostname, raft takes
// only server certificates of the region.
func TestTLS_RaftPeer(t *testing.T) {
	p := newTestPKI(t)
	for _, role := range []string{RoleServer, RoleClient, RoleCLI} {
		p.issue(role, CertOptions{Role: role})
	}
	p.issue("eu-server", CertOptions{Role: RoleServer, Region: "eu"})
	for _, tc := range []struct {
		cert   string
		verify bool
		want   string // "" means accepted
	}{
		{RoleServer, true, ""},
		{RoleClient, true, `raft peer certificate "client.global.nomad" is not valid for server.global.nomad`},
		{RoleCLI, true, "is not valid for server.global.nomad"},
		{"eu-server", true, "is not valid for server.global.nomad"},
		{RoleClient, false, ""},
	} {
		t.Run(fmt.Sprintf("%s verify=%t", tc.cert, tc.verify), func(t *testing.T) {
			c := p.tlsSettings(RoleServer)
			c.VerifyServerHostname = tc.verify
			at, err := newAgentTLS(c, "global")
			if err != nil {
				t.Fatal(err)
			}
			err = at.verifyRaftPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.certLeaves[tc.cert]}})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("verifyRaftPeer = %v; want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("verifyRaftPeer = %v; want %q", err, tc.want)
			}
		})
	}
}

// skipVerify makes a test client skip verifying the server: these rows are
// about what the server accepts.
func skipVerify(c *tls.Config) *tls.Config {
	c.InsecureSkipVerify = true
	return c
}

// serveAs is a server config presenting the certificate in files.
func serveAs(t *testing.T, files [2]string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{*loadPair(t, files)}, ClientAuth: tls.RequestClientCert}
}

// TestTLS_HTTPClientAuth checks verify_https_client.
func TestTLS_HTTPClientAuth(t *testing.T) {
	p := newTestPKI(t)
	p.issue("server", CertOptions{Role: RoleServer})
	p.issue("cli", CertOptions{Role: RoleCLI})
	foreign := newTestPKI(t)
	foreign.issue("cli", CertOptions{Role: RoleCLI})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)

	for _, tc := range []struct {
		name       string
		verify     bool
		cert       *tls.Certificate
		serverName string
		wantErr    string
	}{
		{"verify, cli cert", true, loadPair(t, p.certs["cli"]), "server.global.nomad", ""},
		{"verify, by IP", true, loadPair(t, p.certs["cli"]), "127.0.0.1", ""},
		{"verify, no cert", true, nil, "server.global.nomad", "certificate required"},
		{"verify, cert from another CA", true, loadPair(t, foreign.certs["cli"]), "server.global.nomad", "unknown certificate authority"},
		{"no verify, no cert", false, nil, "localhost", ""},
		{"wrong name", false, nil, "client.global.nomad", "certificate is valid for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.tlsSettings("server")
			c.VerifyHTTPSClient = tc.verify
			at, err := newAgentTLS(c, "global")
			if err != nil {
				t.Fatal(err)
			}
			cs, cerr, serr := handshake(t, at.httpServerConfig(), plainClient(pool, tc.cert, tc.serverName))
			err = errors.Join(cerr, serr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake = %v; want success", err)
			case tc.wantErr == "" && cs.NegotiatedProtocol != "http/1.1":
				t.Fatalf("ALPN = %q; want http/1.1", cs.NegotiatedProtocol)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("handshake = %v; want %q", err, tc.wantErr)
			}
		})
	}
}

// TestTLS_MinVersion checks tls_min_version on both ends, and that a
// reload can narrow what a node accepts from servers.
func TestTLS_MinVersion(t *testing.T) {
	p := newTestPKI(t)
	p.issue("server", CertOptions{Role: RoleServer})
	c := p.tlsSettings("server")
	c.TLSMinVersion = "tls13"
	srv, err := newAgentTLS(c, "global")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	old := plainClient(pool, nil, "server.global.nomad")
	old.MaxVersion = tls.VersionTLS12
	if _, cerr, _ := handshake(t, srv.httpServerConfig(), old); cerr == nil {
		t.Fatal("a TLS 1.2 client got through a tls13 minimum")
	}

	// The node started with tls12; after a reload to tls13 it refuses a
	// server that only speaks TLS 1.2.
	nodeCfg := p.tlsSettings("server")
	node, err := newAgentTLS(nodeCfg, "global")
	if err != nil {
		t.Fatal(err)
	}
	client := node.rpcClientConfig()
	tls12Server := serveAs(t, p.certs["server"])
	tls12Server.MaxVersion = tls.VersionTLS12
	if _, cerr, serr := handshake(t, tls12Server, client); cerr != nil || serr != nil {
		t.Fatalf("handshake before reload = %v, %v; want success", cerr, serr)
	}
	nodeCfg.TLSMinVersion = "tls13"
	if err := node.reload(nodeCfg); err != nil {
		t.Fatal(err)
	}
	if _, cerr, _ := handshake(t, tls12Server, client); cerr == nil || !strings.Contains(cerr.Error(), "below tls.tls_min_version") {
		t.Fatalf("handshake after reload = %v; want a refusal below tls.tls_min_version", cerr)
	}
}

// TestTLS_Reload checks that a reload changes what new handshakes see,
// leaves established connections alone, and keeps the current files when
// the new ones are bad.
func TestTLS_Reload(t *testing.T) {
	p := newTestPKI(t)
	p.issue("server", CertOptions{Role: RoleServer})
	p.issue("client", CertOptions{Role: RoleClient})
	firstSerial := p.certLeaves["server"].SerialNumber
	settings := p.tlsSettings("server")
	srv, err := newAgentTLS(settings, "global")
	if err != nil {
		t.Fatal(err)
	}
	node, err := newAgentTLS(p.tlsSettings("client"), "global")
	if err != nil {
		t.Fatal(err)
	}

	// An established connection, over TCP so it can outlive the reload.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.rpcServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echoDone := make(chan struct{})
	go func() {
		var conns sync.WaitGroup
		defer close(echoDone)
		defer conns.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	dial := func() (*tls.Conn, error) {
		d := tls.Dialer{Config: node.rpcClientConfig()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := echo(tc, "ping"); err != nil {
			tc.Close()
			return nil, err
		}
		return tc, nil
	}
	before, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if got := before.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(firstSerial) != 0 {
		t.Fatalf("serial before reload = %v; want %v", got, firstSerial)
	}

	// New certificate in the same files.
	p.issue("server", CertOptions{Role: RoleServer})
	secondSerial := p.certLeaves["server"].SerialNumber
	if err := srv.reload(settings); err != nil {
		t.Fatalf("reload = %v", err)
	}
	if err := echo(before, "still there"); err != nil {
		t.Fatalf("established connection after reload: %v", err)
	}
	after, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if got := after.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(secondSerial) != 0 {
		t.Fatalf("serial after reload = %v; want the new certificate's %v", got, secondSerial)
	}
	after.Close()

	// A bad new key: the reload fails naming the file, the current
	// certificate stays.
	badKey := p.write("bad-key.pem", []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	bad := settings
	bad.KeyFile = badKey
	if err := srv.reload(bad); err == nil || !strings.Contains(err.Error(), "tls.key_file") || !strings.Contains(err.Error(), badKey) {
		t.Fatalf("reload with a bad key = %v; want an error naming tls.key_file %s", err, badKey)
	}
	kept, err := dial()
	if err != nil {
		t.Fatalf("dial after a failed reload: %v", err)
	}
	if got := kept.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(secondSerial) != 0 {
		t.Fatalf("serial after a failed reload = %v; want %v kept", got, secondSerial)
	}
	kept.Close()

	// A new CA on the server: the node's certificate from the old CA is
	// refused by new handshakes, while the established connection stays.
	newCA := newTestPKI(t)
	newCA.issue("server", CertOptions{Role: RoleServer})
	rotated := newCA.tlsSettings("server")
	if err := srv.reload(rotated); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("a node with a certificate of the old CA got through after the CA rotation")
	}
	if err := echo(before, "and still"); err != nil {
		t.Fatalf("established connection after CA rotation: %v", err)
	}
	before.Close()
	ln.Close()
	<-echoDone
}

// echo writes s and reads it back.
func echo(c net.Conn, s string) error {
	if _, err := c.Write([]byte(s)); err != nil {
		return err
	}
	buf := make([]byte, len(s))
	n := 0
	for n < len(s) {
		m, err := c.Read(buf[n:])
		if err != nil {
			return err
		}
		n += m
	}
	if string(buf) != s {
		return errors.New("echo mismatch")
	}
	return nil
}

// TestAgent_TLSStartAndReload checks the agent-level rules: a bad file
// fails start-up naming it (no plaintext fallback), and a reload cannot
// switch TLS on or off for a port.
func TestAgent_TLSStartAndReload(t *testing.T) {
	p := newTestPKI(t)
	p.issue("server", CertOptions{Role: RoleServer})
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.Ports.HTTP, cfg.Ports.RPC = 0, 0
	cfg.Server.Enabled = true
	cfg.TLS = p.tlsSettings("server")
	cfg.TLS.CertFile = filepath.Join(p.dir, "nope.pem")
	a, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	err = a.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `tls.cert_file "`+cfg.TLS.CertFile+`"`) {
		t.Fatalf("Start with a missing cert = %v; want an error naming tls.cert_file and the file", err)
	}
	if a.HTTPAddr() != "" && a.httpSrv != nil {
		t.Fatal("the HTTP API is serving after a failed TLS start-up")
	}

	running := &Agent{cfg: &Config{TLS: p.tlsSettings("server")}, logger: hclog.NewNullLogger()}
	if running.tls, err = newAgentTLS(running.cfg.TLS, "global"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mut  func(*TLSConfig)
		want string
	}{
		{"http off", func(c *TLSConfig) { c.HTTP = false }, "tls.http cannot change"},
		{"rpc off", func(c *TLSConfig) { c.RPC = false }, "tls.rpc cannot change"},
		{"upgrade mode", func(c *TLSConfig) { c.RPCUpgradeMode = true }, "tls.rpc_upgrade_mode cannot change"},
		{"bad file", func(c *TLSConfig) { c.CAFile = filepath.Join(p.dir, "nope-ca.pem") }, "tls.ca_file"},
		{"same files", func(c *TLSConfig) {}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{TLS: p.tlsSettings("server")}
			tc.mut(&c.TLS)
			err := running.Reload(c)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Reload = %v; want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Reload = %v; want an error containing %q", err, tc.want)
			}
		})
	}
	plain := &Agent{cfg: &Config{}, logger: hclog.NewNullLogger()}
	if err := plain.Reload(&Config{TLS: TLSConfig{RPC: true}}); err == nil || !strings.Contains(err.Error(), "tls.rpc cannot change") {
		t.Fatalf("Reload turning TLS on = %v; want a refusal", err)
	}
}
