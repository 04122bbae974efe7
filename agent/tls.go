package agent

// TLS for the agent: the tls block becomes *tls.Config values for the RPC
// port (server side), for dialing servers (node agents), and for the HTTP
// API. The configs never hold certificates themselves: their callbacks
// read the current generation of loaded files, which Reload swaps
// atomically, so established sessions and streams keep going and new
// handshakes use the new files.
//
// Names follow Nomad: a server's certificate is valid for
// server.<region>.nomad, a node's for client.<region>.nomad. With
// tls.verify_server_hostname, a node checks the server's name (so a node
// certificate signed by the same CA cannot impersonate a server), and a
// server accepts RPC peers only with one of those two names (CVE-2020-7956,
// CVE-2021-37218).

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"tether/rpc"
)

// tlsVersions maps Nomad's tls_min_version names to Go's versions.
var tlsVersions = map[string]uint16{
	"tls10": tls.VersionTLS10,
	"tls11": tls.VersionTLS11,
	"tls12": tls.VersionTLS12,
	"tls13": tls.VersionTLS13,
}

// defaultTLSMinVersion applies when tls_min_version is empty, as Nomad.
const defaultTLSMinVersion = "tls12"

// tlsMaterial is one generation of the tls block: the settings, the files
// they name, loaded and checked, and the server-side configs built from
// them. It is never modified once built.
type tlsMaterial struct {
	settings   TLSConfig
	cert       *tls.Certificate
	pool       *x509.CertPool // nil without tls.ca_file
	minVersion uint16
	ciphers    []uint16 // nil means Go's defaults

	rpcServer  *tls.Config // handshakes on the RPC port
	httpServer *tls.Config // handshakes on the HTTP port
}

// agentTLS holds the agent's current TLS material and builds the tls
// configs whose callbacks read it.
type agentTLS struct {
	region string
	now    func() time.Time
	cur    atomic.Pointer[tlsMaterial]
}

// newAgentTLS loads the files c names. Its errors name the setting and
// the file.
func newAgentTLS(c TLSConfig, region string) (*agentTLS, error) {
	t := &agentTLS{region: region, now: time.Now}
	m, err := t.load(c)
	if err != nil {
		return nil, err
	}
	t.cur.Store(m)
	return t, nil
}

// reload loads the files c names and, only if all of them are good, makes
// them the ones new handshakes use. On error the current files stay.
func (t *agentTLS) reload(c TLSConfig) error {
	m, err := t.load(c)
	if err != nil {
		return err
	}
	t.cur.Store(m)
	return nil
}

// current returns the material new handshakes use.
func (t *agentTLS) current() *tlsMaterial { return t.cur.Load() }

// load reads and checks the files of c and builds the server configs.
func (t *agentTLS) load(c TLSConfig) (*tlsMaterial, error) {
	now := t.now()
	m := &tlsMaterial{settings: c}

	v := c.TLSMinVersion
	if v == "" {
		v = defaultTLSMinVersion
	}
	var ok bool
	if m.minVersion, ok = tlsVersions[v]; !ok {
		return nil, fmt.Errorf("tls.tls_min_version %q is invalid; want tls10, tls11, tls12 or tls13", c.TLSMinVersion)
	}
	var err error
	if m.ciphers, err = parseCipherSuites(c.TLSCipherSuites); err != nil {
		return nil, err
	}

	if c.CAFile != "" {
		if m.pool, err = loadCAFile(c.CAFile, now); err != nil {
			return nil, err
		}
	}
	switch {
	case c.RPC && m.pool == nil:
		return nil, errors.New("tls.ca_file is required when tls.rpc is true: nodes and servers verify each other's certificates")
	case c.VerifyHTTPSClient && m.pool == nil:
		return nil, errors.New("tls.ca_file is required when tls.verify_https_client is true")
	case c.CertFile == "":
		return nil, errors.New("tls.cert_file must be set when tls.http or tls.rpc is true")
	case c.KeyFile == "":
		return nil, errors.New("tls.key_file must be set when tls.http or tls.rpc is true")
	}
	if m.cert, err = loadKeyPair(c.CertFile, c.KeyFile, now); err != nil {
		return nil, err
	}

	m.rpcServer = &tls.Config{
		Certificates:           []tls.Certificate{*m.cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              m.pool,
		MinVersion:             m.minVersion,
		CipherSuites:           m.ciphers,
		SessionTicketsDisabled: true, // a reload that changes the CA applies to every new connection
	}
	if c.VerifyServerHostname {
		m.rpcServer.VerifyConnection = t.verifyRPCPeer
	}
	m.httpServer = &tls.Config{
		Certificates:           []tls.Certificate{*m.cert},
		ClientAuth:             tls.NoClientCert,
		ClientCAs:              m.pool,
		MinVersion:             m.minVersion,
		CipherSuites:           m.ciphers,
		NextProtos:             []string{"http/1.1"}, // streaming endpoints flush HTTP/1.1 chunks, as Nomad
		SessionTicketsDisabled: true,
	}
	if c.VerifyHTTPSClient {
		m.httpServer.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return m, nil
}

// rpcServerConfig returns the config of the RPC port: every handshake
// takes the current certificate, CA and settings.
func (t *agentTLS) rpcServerConfig() *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.current().rpcServer, nil
		},
	}
}

// httpServerConfig returns the config of the HTTP port.
func (t *agentTLS) httpServerConfig() *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.current().httpServer, nil
		},
	}
}

// rpcClientConfig returns the config for dialing servers. It presents the
// current certificate and verifies the server against the current CA
// itself (Go's built-in verification would pin the CA of the moment the
// config was built), checking the name server.<region>.nomad when
// tls.verify_server_hostname is set. The version and cipher suites offered
// are those at start; a reload can only narrow them (a handshake outside
// the current settings is refused).
func (t *agentTLS) rpcClientConfig() *tls.Config {
	m := t.current()
	return &tls.Config{
		ServerName:         TLSName(RoleServer, t.region, DefaultTLSDomain),
		InsecureSkipVerify: true, // verifyServer does the verification, against the current CA
		MinVersion:         m.minVersion,
		CipherSuites:       m.ciphers,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return t.current().cert, nil
		},
		VerifyConnection: t.verifyServer,
	}
}

// verifyServer checks a server's certificate chain against the current CA
// and, with verify_server_hostname, its name.
func (t *agentTLS) verifyServer(cs tls.ConnectionState) error {
	m := t.current()
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server presented no certificate")
	}
	if cs.Version < m.minVersion {
		return fmt.Errorf("server negotiated %s, below tls.tls_min_version", tls.VersionName(cs.Version))
	}
	if m.ciphers != nil && cs.Version < tls.VersionTLS13 && !slices.Contains(m.ciphers, cs.CipherSuite) {
		return fmt.Errorf("server negotiated %s, not in tls.tls_cipher_suites", tls.CipherSuiteName(cs.CipherSuite))
	}
	opts := x509.VerifyOptions{
		Roots:         m.pool,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   t.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if m.settings.VerifyServerHostname {
		opts.DNSName = TLSName(RoleServer, t.region, DefaultTLSDomain)
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verifying server certificate: %w", err)
	}
	return nil
}

// verifyRPCPeer, with verify_server_hostname, admits on the RPC port only
// certificates of nodes and servers of this region: an operator's (cli)
// certificate or another region's is refused. The chain was verified
// already (RequireAndVerifyClientCert).
func (t *agentTLS) verifyRPCPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	client := TLSName(RoleClient, t.region, DefaultTLSDomain)
	server := TLSName(RoleServer, t.region, DefaultTLSDomain)
	if leaf.VerifyHostname(client) == nil || leaf.VerifyHostname(server) == nil {
		return nil
	}
	return fmt.Errorf("peer certificate %q is valid for neither %s nor %s", leaf.Subject.CommonName, client, server)
}

// verifyRaftPeer, with verify_server_hostname, admits to raft only
// certificates of servers of this region: a node's certificate, good for
// a session, is refused (CVE-2021-37218).
func (t *agentTLS) verifyRaftPeer(cs tls.ConnectionState) error {
	if !t.current().settings.VerifyServerHostname {
		return nil
	}
	server := TLSName(RoleServer, t.region, DefaultTLSDomain)
	if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].VerifyHostname(server) != nil {
		name := ""
		if len(cs.PeerCertificates) > 0 {
			name = cs.PeerCertificates[0].Subject.CommonName
		}
		return fmt.Errorf("raft peer certificate %q is not valid for %s", name, server)
	}
	return nil
}

// tlsFileError is a problem with a file named in the tls block.
type tlsFileError struct {
	Setting string // "tls.cert_file"
	Path    string
	Err     error
}

func (e *tlsFileError) Error() string { return fmt.Sprintf("%s %q: %v", e.Setting, e.Path, e.Err) }
func (e *tlsFileError) Unwrap() error { return e.Err }

// readTLSFile reads the file of setting, keeping the OS error (without
// repeating the path) as the cause.
func readTLSFile(setting, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &tlsFileError{setting, path, fmt.Errorf("cannot read: %w", err)}
	}
	return b, nil
}

// loadCAFile reads a PEM CA bundle: at least one certificate, and at least
// one still valid.
func loadCAFile(path string, now time.Time) (*x509.CertPool, error) {
	b, err := readTLSFile("tls.ca_file", path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(b)
	if err != nil {
		return nil, &tlsFileError{"tls.ca_file", path, err}
	}
	pool := x509.NewCertPool()
	var latest time.Time
	for _, c := range certs {
		pool.AddCert(c)
		if c.NotAfter.After(latest) {
			latest = c.NotAfter
		}
	}
	if now.After(latest) {
		return nil, &tlsFileError{"tls.ca_file", path, fmt.Errorf("every certificate has expired (the last on %s)", latest.UTC().Format(time.RFC3339))}
	}
	return pool, nil
}

// loadKeyPair reads the agent's certificate chain and its key and checks
// that they belong together and that the certificate is in date. Errors
// never contain key material.
func loadKeyPair(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := readTLSFile("tls.cert_file", certFile)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, &tlsFileError{"tls.cert_file", certFile, err}
	}
	leaf := certs[0]
	if now.After(leaf.NotAfter) {
		return nil, &tlsFileError{"tls.cert_file", certFile, fmt.Errorf("certificate expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	if now.Before(leaf.NotBefore) {
		return nil, &tlsFileError{"tls.cert_file", certFile, fmt.Errorf("certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	keyPEM, err := readTLSFile("tls.key_file", keyFile)
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, &tlsFileError{"tls.key_file", keyFile, err}
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, &tlsFileError{"tls.key_file", keyFile, fmt.Errorf("key does not match the certificate in tls.cert_file %q", certFile)}
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// parseCertsPEM parses every CERTIFICATE block of b, ignoring other blocks.
func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// parseKeyPEM parses the first private key block of b: PKCS#1 RSA, SEC 1
// EC or PKCS#8. Errors never quote the input.
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, errors.New("encrypted private keys are not supported")
		}
		var key any
		var err error
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue // "EC PARAMETERS", certificates, ...
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", strings.ToLower(block.Type), err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return s, nil
	}
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// parseCipherSuites turns tls.tls_cipher_suites (Go's names, comma
// separated) into IDs; "" means Go's defaults.
func parseCipherSuites(s string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	byName := map[string]uint16{}
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		byName[cs.Name] = cs.ID
	}
	var ids []uint16
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		id, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("tls.tls_cipher_suites: unsupported cipher suite %q", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// startTLS loads the agent's TLS files when the tls block enables TLS.
// A bad file fails start-up; there is no fallback to plaintext.
func (a *Agent) startTLS() error {
	c := a.cfg.TLS
	if !c.HTTP && !c.RPC {
		return nil
	}
	t, err := newAgentTLS(c, a.cfg.Region)
	if err != nil {
		return err
	}
	a.tls = t
	return nil
}

// serverRPCConfig returns the transport config of the server's RPC port:
// TLS when tls.rpc is set (plaintext refused unless rpc_upgrade_mode),
// nil (defaults, plaintext) otherwise.
func (a *Agent) serverRPCConfig() *rpc.Config {
	if a.tls == nil || !a.cfg.TLS.RPC {
		return nil
	}
	cfg := rpc.DefaultConfig()
	cfg.TLSConfig = a.tls.rpcServerConfig()
	cfg.TLSUpgradeMode = a.cfg.TLS.RPCUpgradeMode
	cfg.VerifyRaftPeer = a.tls.verifyRaftPeer
	return cfg
}

// withLimits applies the limits block to a transport config (nil: the
// defaults): the keepalive settings, and on a server's listener
// (accepting) the per-IP connection cap. It returns c itself when the
// block sets nothing.
func (a *Agent) withLimits(c *rpc.Config, accepting bool) *rpc.Config {
	l := a.cfg.Limits
	if l.RPCKeepAliveInterval == 0 && l.RPCKeepAliveTimeout == 0 && (!accepting || l.RPCMaxConnsPerClient == 0) {
		return c
	}
	if c == nil {
		c = rpc.DefaultConfig()
	}
	rc := *c
	if l.RPCKeepAliveInterval > 0 {
		rc.KeepAliveInterval = l.RPCKeepAliveInterval
	}
	if l.RPCKeepAliveTimeout > 0 {
		rc.KeepAliveTimeout = l.RPCKeepAliveTimeout
	}
	if accepting && l.RPCMaxConnsPerClient > 0 {
		rc.MaxConnsPerIP = l.RPCMaxConnsPerClient
	}
	return &rc
}

// clientRPCConfig returns the transport config for dialing servers: the
// node agent's, and a server's for its peers (forwarding pool and raft).
// TLS when tls.rpc is set, presenting this agent's certificate.
func (a *Agent) clientRPCConfig() *rpc.Config {
	if a.tls == nil || !a.cfg.TLS.RPC {
		return nil
	}
	cfg := rpc.DefaultConfig()
	cfg.TLSConfig = a.tls.rpcClientConfig()
	return cfg
}

// httpListener wraps the HTTP listener in TLS when tls.http is set.
func (a *Agent) httpListener() net.Listener {
	if a.tls == nil || !a.cfg.TLS.HTTP {
		return rpc.BatchingListener(a.httpLn, nil)
	}
	return rpc.BatchingTLSListener(a.httpLn, a.tls.httpServerConfig())
}

// reloadTLS applies the tls block of a reloaded configuration: new files,
// CA, verification and version settings take effect for new handshakes;
// established connections keep theirs. Turning TLS on or off for a port,
// or rpc_upgrade_mode, needs a restart. On any error nothing changes.
func (a *Agent) reloadTLS(c TLSConfig) error {
	running := a.cfg.TLS
	switch {
	case c.HTTP != running.HTTP:
		return fmt.Errorf("tls.http cannot change on reload (running %t); restart the agent", running.HTTP)
	case c.RPC != running.RPC:
		return fmt.Errorf("tls.rpc cannot change on reload (running %t); restart the agent", running.RPC)
	case c.RPCUpgradeMode != running.RPCUpgradeMode:
		return fmt.Errorf("tls.rpc_upgrade_mode cannot change on reload (running %t); restart the agent", running.RPCUpgradeMode)
	case a.tls == nil:
		return nil
	}
	if err := a.tls.reload(c); err != nil {
		return fmt.Errorf("reloading TLS, keeping the current certificates: %w", err)
	}
	a.logger.Info("TLS certificates reloaded", "cert_file", c.CertFile, "ca_file", c.CAFile)
	return nil
}

// NodeRPCTLS returns the TLS config a node agent of region dials servers
// with, from the files of c (CAFile, CertFile, KeyFile and the
// verification settings; c.RPC is implied): what tether fleet gives its
// nodes. The files are read once.
func NodeRPCTLS(c TLSConfig, region string) (*tls.Config, error) {
	c.RPC = true
	t, err := newAgentTLS(c, region)
	if err != nil {
		return nil, err
	}
	return t.rpcClientConfig(), nil
}
