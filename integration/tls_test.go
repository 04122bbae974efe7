package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
	"tether/rpc"
	"tether/structs"
)

// testPKI is a CA generated for one test and the certificate files it
// issued, made with the same generator as `tether tls`.
type testPKI struct {
	t        *testing.T
	dir      string
	caPEM    []byte
	caKeyPEM []byte
	caFile   string
}

// pkiFiles are a certificate and key on disk.
type pkiFiles struct{ cert, key string }

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, key, err := agent.GenerateCA(agent.CAOptions{})
	if err != nil {
		t.Fatalf("GenerateCA: %v", err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), caPEM: ca, caKeyPEM: key}
	p.caFile = p.write(agent.DefaultCAFile, ca)
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

// issue writes a new certificate of role under name (overwriting an older
// one of the same name) and returns its files and serial number.
// tlsHCL is an agent's tls block with mutual TLS on HTTP and RPC, f its
// certificate.
func (p *testPKI) tlsHCL(f pkiFiles) string {
	return fmt.Sprintf(`
tls {
  http                   = true
  rpc                    = true
  ca_file                = %q
  cert_file              = %q
  key_file               = %q
  verify_server_hostname = true
  verify_https_client    = true
}
`, p.caFile, f.cert, f.key)
}

func (p *testPKI) issue(name, role string) (pkiFiles, *big.Int) {
	p.t.Helper()
	c, k, err := agent.GenerateCert(agent.CertOptions{Role: role, CACert: p.caPEM, CAKey: p.caKeyPEM})
	if err != nil {
		p.t.Fatalf("GenerateCert: %v", err)
	}
	f := pkiFiles{cert: p.write(name+".pem", c), key: p.write(name+"-key.pem", k)}
	return f, parseLeaf(p.t, c).SerialNumber
}

// parseLeaf parses the certificate of a PEM block.
func parseLeaf(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsBlock is the tls block of an agent using files, with every check on:
// mTLS on the RPC port with hostname verification, HTTPS requiring a
// client certificate.
func (p *testPKI) tlsBlock(f pkiFiles) agent.TLSConfig {
	return agent.TLSConfig{
		HTTP: true, RPC: true,
		CAFile: p.caFile, CertFile: f.cert, KeyFile: f.key,
		VerifyServerHostname: true, VerifyHTTPSClient: true,
	}
}

// pool is a cert pool holding the CA.
func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	return pool
}

// httpClient is an HTTPS client trusting the CA, presenting f (if set) and
// expecting serverName.
func (p *testPKI) httpClient(t *testing.T, f *pkiFiles, serverName string) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.pool(), ServerName: serverName, MinVersion: tls.VersionTLS12}
	if f != nil {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// api is an official Go client for https://addr with f as client
// certificate; serverName "" lets it verify the address's host.
func (p *testPKI) api(t *testing.T, addr string, f pkiFiles, serverName string) *nomad.Client {
	t.Helper()
	c, err := nomad.NewClient(&nomad.Config{
		Address: "https://" + addr,
		TLSConfig: &nomad.TLSConfig{
			CACert: p.caFile, ClientCert: f.cert, ClientKey: f.key, TLSServerName: serverName,
		},
	})
	if err != nil {
		t.Fatalf("nomad api client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// tlsCluster is a server and a node talking mTLS, and an operator's
// certificate.
type tlsCluster struct {
	pki         *testPKI
	srv, node   *testAgent
	serverFiles pkiFiles
	nodeFiles   pkiFiles
	cli         pkiFiles
}

func startTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	c := &tlsCluster{pki: newTestPKI(t)}
	c.serverFiles, _ = c.pki.issue("server", agent.RoleServer)
	c.nodeFiles, _ = c.pki.issue("client", agent.RoleClient)
	c.cli, _ = c.pki.issue("cli", agent.RoleCLI)

	scfg := baseConfig(t, "server1")
	scfg.Server.Enabled = true
	scfg.Server.BootstrapExpect = 1
	scfg.TLS = c.pki.tlsBlock(c.serverFiles)
	c.srv = startAgent(t, scfg)

	ncfg := baseConfig(t, "node1")
	ncfg.Client.Enabled = true
	ncfg.Client.Servers = []string{c.srv.RPCAddr()}
	withRawExec()(ncfg)
	ncfg.TLS = c.pki.tlsBlock(c.nodeFiles)
	c.node = startAgent(t, ncfg)
	select {
	case <-c.node.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatal("TLS node did not register")
	}
	return c
}

// runTicker starts a job whose task prints "tick N" every 50ms and
// returns its allocation.
func runTicker(t *testing.T, api *nomad.Client) *nomad.Allocation {
	t.Helper()
	task := shellTask("tick", `i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.05; done`)
	job := &nomad.Job{ID: ptr("ticker"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{task}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatalf("Jobs().Register: %v", err)
	}
	stub := waitAllocsStatus(t, api, "ticker", 1, "running")[0]
	alloc, _, err := api.Allocations().Info(stub.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return alloc
}

// followStream is a followed log stream read in a goroutine it owns.
type followStream struct {
	data   chan string
	cancel context.CancelFunc
	done   chan struct{}
}

// follow starts GET url (a follow=true logs call) with hc and decodes its
// frames until the stream ends or stop is called.
func follow(t *testing.T, hc *http.Client, url string) *followStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s = %d %q", url, resp.StatusCode, b)
	}
	f := &followStream{data: make(chan string, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var fr nomad.StreamFrame
			if err := dec.Decode(&fr); err != nil {
				close(f.data)
				return
			}
			if len(fr.Data) > 0 {
				select {
				case f.data <- string(fr.Data):
				case <-ctx.Done():
				}
			}
		}
	}()
	t.Cleanup(f.stop)
	return f
}

// stop ends the stream and waits for its reader.
func (f *followStream) stop() {
	f.cancel()
	<-f.done
}

// waitData reads the stream until its data contains want.
func (f *followStream) waitData(t *testing.T, want string) {
	t.Helper()
	var got strings.Builder
	deadline := time.After(20 * time.Second)
	for !strings.Contains(got.String(), want) {
		select {
		case s, ok := <-f.data:
			if !ok {
				t.Fatalf("stream ended before %q; read %d bytes", want, got.Len())
			}
			got.WriteString(s)
		case <-deadline:
			t.Fatalf("stream did not deliver %q within 20s; read %d bytes", want, got.Len())
		}
	}
}

// nextTick returns a tick line the task has not written yet, so a wait
// for it proves data flowed after this call.
func nextTick(t *testing.T, node *testAgent, alloc *nomad.Allocation) string {
	t.Helper()
	path := filepath.Join(node.cfg.DataDir, "alloc", alloc.ID, "alloc", "logs", "tick.stdout.0")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("tick %d\n", bytes.Count(b, []byte("\n"))+5)
}

// TestTLS_EndToEnd runs a server and a node with mTLS on every hop and
// checks, through the official Go client: forwarded stats and a follow
// stream via the server, direct HTTPS on the node, node TLS fields; and
// that callers without the CA's certificate, and plain HTTP, are refused.
func TestTLS_EndToEnd(t *testing.T) {
	c := startTLSCluster(t)
	nodeID := c.node.Client().NodeID()
	api := c.pki.api(t, c.srv.HTTPAddr(), c.cli, "server.global.nomad")

	// What the Go client reads to reach the node directly. (Decoded by
	// hand: api.Nodes().Info cannot decode a node with a driver yet, its
	// DriverInfo.UpdateTime is empty.)
	hc := c.pki.httpClient(t, &c.cli, "server.global.nomad")
	resp, err := hc.Get("https://" + c.srv.HTTPAddr() + "/v1/node/" + nodeID)
	if err != nil {
		t.Fatalf("GET /v1/node over HTTPS: %v", err)
	}
	var info struct {
		HTTPAddr, Status string
		TLSEnabled       bool
	}
	err = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if err != nil || !info.TLSEnabled || info.HTTPAddr != c.node.HTTPAddr() || info.Status != "ready" {
		t.Fatalf("node TLSEnabled=%t HTTPAddr=%q Status=%q (%v); want true, %q, ready", info.TLSEnabled, info.HTTPAddr, info.Status, err, c.node.HTTPAddr())
	}
	stats, err := api.Nodes().Stats(nodeID, nil)
	if err != nil || stats.Memory == nil || stats.Memory.Total == 0 {
		t.Fatalf("forwarded Nodes().Stats = %+v, %v; want host stats", stats, err)
	}

	alloc := runTicker(t, api)
	t.Run("follow via server", func(t *testing.T) {
		f := follow(t, hc, "https://"+c.srv.HTTPAddr()+"/v1/client/fs/logs/"+alloc.ID+"?task=tick&type=stdout&follow=true&origin=start")
		f.waitData(t, "tick 0\n")
		f.waitData(t, nextTick(t, c.node, alloc))
	})
	t.Run("direct on node", func(t *testing.T) {
		// As the Go client does for a TLSEnabled node: https://<HTTPAddr>,
		// server name client.<region>.nomad.
		direct := c.pki.api(t, c.node.HTTPAddr(), c.cli, "client.global.nomad")
		stats, err := direct.Nodes().Stats(nodeID, nil)
		if err != nil || stats.Memory == nil {
			t.Fatalf("direct Nodes().Stats = %+v, %v", stats, err)
		}
		f := follow(t, c.pki.httpClient(t, &c.cli, "client.global.nomad"),
			"https://"+c.node.HTTPAddr()+"/v1/client/fs/logs/"+alloc.ID+"?task=tick&type=stdout&follow=true&origin=start")
		f.waitData(t, nextTick(t, c.node, alloc))
	})
	t.Run("bulk reads on TLS data connections", func(t *testing.T) {
		big := bytes.Repeat([]byte("secret bytes "), 100_000)
		path := filepath.Join(c.node.cfg.DataDir, "alloc", alloc.ID, "alloc", "data", "big.bin")
		if err := os.WriteFile(path, big, 0o644); err != nil {
			t.Fatal(err)
		}
		around := func() uint64 {
			st := c.srv.Server().Stats()
			return st["data_connections"] + st["data_calls"]
		}
		before, callsBefore := around(), c.srv.Server().Stats()["data_calls"]
		// The second cat is a data call on the connection the first left.
		cat := "cat/" + alloc.ID + "?path=alloc/data/big.bin"
		for _, q := range []string{cat, "logs/" + alloc.ID + "?task=tick&type=stdout&plain=true", cat} {
			resp, err := hc.Get("https://" + c.srv.HTTPAddr() + "/v1/client/fs/" + q)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s: %d, %v", q, resp.StatusCode, err)
			}
			if strings.HasPrefix(q, "cat/") && !bytes.Equal(body, big) {
				t.Fatalf("cat read %d bytes; want the %d written", len(body), len(big))
			}
			if strings.HasPrefix(q, "logs/") && !strings.HasPrefix(string(body), "tick 0\n") {
				t.Fatalf("logs read %q", body)
			}
		}
		if n := around() - before; n != 3 {
			t.Fatalf("%d of 3 reads came on a data connection", n)
		}
		if c.srv.Server().Stats()["data_calls"] == callsBefore {
			t.Fatal("no read was a data call over TLS")
		}
		// On the node itself a cat is answered from the file, over HTTPS.
		nodeHC := c.pki.httpClient(t, &c.cli, "client.global.nomad")
		resp, err := nodeHC.Get("https://" + c.node.HTTPAddr() + "/v1/client/fs/" + cat)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, big) {
			t.Fatalf("cat on the node: %d, %d bytes, %v; want the %d written", resp.StatusCode, len(body), err, len(big))
		}
	})
	t.Run("go client logs", func(t *testing.T) {
		api := c.pki.api(t, c.srv.HTTPAddr(), c.cli, "")
		cancel := make(chan struct{})
		defer close(cancel)
		frames, errs := api.AllocFS().Logs(alloc, true, "tick", "stdout", "start", 0, cancel, nil)
		var got strings.Builder
		for !strings.Contains(got.String(), "tick 2\n") {
			select {
			case fr := <-frames:
				if fr == nil {
					t.Fatalf("Logs ended early; read %q", got.String())
				}
				got.Write(fr.Data)
			case err := <-errs:
				t.Fatalf("AllocFS().Logs: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatalf("AllocFS().Logs delivered %q in 20s", got.String())
			}
		}
	})

	foreign := newTestPKI(t)
	foreignCLI, _ := foreign.issue("cli", agent.RoleCLI)
	foreignPair, err := tls.LoadX509KeyPair(foreignCLI.cert, foreignCLI.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"no client certificate", &tls.Config{RootCAs: c.pki.pool(), ServerName: "server.global.nomad"}, "certificate required"},
		{"certificate from another CA", &tls.Config{RootCAs: c.pki.pool(), ServerName: "server.global.nomad",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreignPair, nil }}, "unknown certificate authority"},
		{"untrusted server", &tls.Config{RootCAs: foreign.pool(), ServerName: "server.global.nomad"}, "certificate signed by unknown authority"},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) {
			for _, target := range []*testAgent{c.srv, c.node} {
				tc.cfg.ServerName = map[*testAgent]string{c.srv: "server.global.nomad", c.node: "client.global.nomad"}[target]
				tr := &http.Transport{TLSClientConfig: tc.cfg}
				resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + target.HTTPAddr() + "/v1/client/stats")
				tr.CloseIdleConnections()
				if err == nil {
					resp.Body.Close()
					t.Fatalf("%s: GET = %d; want a TLS failure", target.cfg.Name, resp.StatusCode)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s: GET = %v; want %q", target.cfg.Name, err, tc.want)
				}
			}
		})
	}
	t.Run("raft refuses a node certificate", func(t *testing.T) {
		// A node's certificate opens sessions, but must not speak raft
		// (CVE-2021-37218): ByteTLS, handshake, then ByteRaft.
		pair, err := tls.LoadX509KeyPair(c.nodeFiles.cert, c.nodeFiles.key)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := net.DialTimeout("tcp", c.srv.RPCAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		raw.Write([]byte{0x04})
		tc := tls.Client(raw, &tls.Config{RootCAs: c.pki.pool(), ServerName: "server.global.nomad", Certificates: []tls.Certificate{pair}})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake with a node certificate: %v", err)
		}
		tc.Write([]byte{0x02})
		tc.Write([]byte("raft bytes that must not reach raft"))
		if n, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("raft connection with a node certificate: read %d bytes, %v; want it closed", n, err)
		}
	})
	t.Run("refused plain HTTP", func(t *testing.T) {
		for _, target := range []*testAgent{c.srv, c.node} {
			code, body, err := tryGet("http://" + target.HTTPAddr() + "/v1/client/stats?node_id=" + nodeID)
			if err == nil && (code != http.StatusBadRequest || !strings.Contains(body, "HTTPS server")) {
				t.Fatalf("%s: plain GET = %d %q; want 400 from the TLS server", target.cfg.Name, code, body)
			}
		}
	})
}

// TestTLS_ServerCluster runs three servers with mTLS on the RPC port, so
// that raft and the servers' forwarding pool run over TLS with server
// certificates, and reads a node's stats and a follow stream through a
// server that does not hold the node's session.
func TestTLS_ServerCluster(t *testing.T) {
	pki := newTestPKI(t)
	var servers []*testAgent
	for i := 1; i <= 3; i++ {
		f, _ := pki.issue(fmt.Sprintf("server%d", i), agent.RoleServer)
		cfg := baseConfig(t, fmt.Sprintf("server%d", i))
		cfg.Server.Enabled = true
		cfg.Server.BootstrapExpect = 3
		cfg.TLS = pki.tlsBlock(f)
		if i > 1 {
			cfg.Server.RetryJoin = []string{servers[0].SerfAddr()}
		}
		servers = append(servers, startAgent(t, cfg))
	}
	waitFor(t, 30*time.Second, "a leader and 3 voters on every server", func() (bool, error) {
		for _, s := range servers {
			if s.Server().Leader() == "" || len(s.Server().Peers()) != 3 {
				return false, fmt.Errorf("%s: leader %q, peers %v", s.cfg.Name, s.Server().Leader(), s.Server().Peers())
			}
		}
		return true, nil
	})

	nodeFiles, _ := pki.issue("client", agent.RoleClient)
	cli, _ := pki.issue("cli", agent.RoleCLI)
	ncfg := baseConfig(t, "node1")
	ncfg.Client.Enabled = true
	ncfg.Client.Servers = []string{servers[0].RPCAddr()}
	withRawExec()(ncfg)
	ncfg.TLS = pki.tlsBlock(nodeFiles)
	node := startAgent(t, ncfg)
	select {
	case <-node.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatal("TLS node did not register")
	}
	if n := servers[2].Server().ConnectedNodes(); n != 0 {
		t.Fatalf("server3 holds %d node sessions; want the node on server1 only", n)
	}

	api := pki.api(t, servers[2].HTTPAddr(), cli, "server.global.nomad")
	var stats *nomad.HostStats
	waitFor(t, 20*time.Second, "stats through server3", func() (bool, error) {
		var err error
		stats, err = api.Nodes().Stats(node.Client().NodeID(), nil)
		return err == nil, err
	})
	if stats.Memory == nil || stats.Memory.Total == 0 {
		t.Fatalf("stats through server3 = %+v; want host stats", stats)
	}
	alloc := runTicker(t, api)
	f := follow(t, pki.httpClient(t, &cli, "server.global.nomad"),
		"https://"+servers[2].HTTPAddr()+"/v1/client/fs/logs/"+alloc.ID+"?task=tick&type=stdout&follow=true&origin=start")
	f.waitData(t, nextTick(t, node, alloc))
}

// logBuffer collects an agent's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many lines contain all of parts.
func (b *logBuffer) count(parts ...string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, line := range strings.Split(b.buf.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// startLoggedAgent starts an agent whose log also goes to a buffer.
func startLoggedAgent(t *testing.T, cfg *agent.Config) (*testAgent, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   cfg.Name,
		Level:  hclog.Debug,
		Output: io.MultiWriter(newTestWriter(t), buf),
	})
	a, err := agent.New(cfg, logger)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return &testAgent{Agent: a, cfg: cfg}, buf
}

// TestTLS_NodesRefused checks that nodes the TLS server must not accept
// never register — one with a certificate from another CA, one with an
// operator's certificate (not a node's), one without TLS — and that each
// logs the refusal once (at Warn, with the cause), then only at Debug
// while it keeps retrying.
func TestTLS_NodesRefused(t *testing.T) {
	pki := newTestPKI(t)
	serverFiles, _ := pki.issue("server", agent.RoleServer)
	scfg := baseConfig(t, "server1")
	scfg.Server.Enabled = true
	scfg.Server.BootstrapExpect = 1
	scfg.TLS = pki.tlsBlock(serverFiles)
	srv := startAgent(t, scfg)

	foreign := newTestPKI(t)
	foreignNode, _ := foreign.issue("client", agent.RoleClient)
	cliFiles, _ := pki.issue("cli", agent.RoleCLI)

	for _, tc := range []struct {
		name string
		tls  agent.TLSConfig
		want string // in the one Warn line
	}{
		// Trusts the server's CA, so the refusal is the server's.
		{"foreign-ca", agent.TLSConfig{RPC: true, CAFile: pki.caFile, CertFile: foreignNode.cert, KeyFile: foreignNode.key, VerifyServerHostname: true},
			"server refused the session: remote error: tls: unknown certificate authority"},
		{"cli-cert", agent.TLSConfig{RPC: true, CAFile: pki.caFile, CertFile: cliFiles.cert, KeyFile: cliFiles.key, VerifyServerHostname: true},
			"server refused the session: remote error: tls: bad certificate"},
		{"plaintext", agent.TLSConfig{},
			"server refused the session: the server closed the connection (does it require TLS?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t, tc.name)
			cfg.Client.Enabled = true
			cfg.Client.Servers = []string{srv.RPCAddr()}
			cfg.TLS = tc.tls
			node, logs := startLoggedAgent(t, cfg)
			// Three attempts at least: the first Warn, two Debug repeats.
			waitFor(t, 20*time.Second, "two retries", func() (bool, error) {
				return logs.count("server still unreachable", tc.want) >= 2, nil
			})
			if n := logs.count("[WARN]", "cannot reach server", tc.want); n != 1 {
				t.Fatalf("refusal logged at Warn %d times; want once", n)
			}
			if n := logs.count("[WARN]", "cannot reach server"); n != 1 {
				t.Fatalf("%d Warn lines about the server; want 1 (the same cause each attempt)", n)
			}
			if n := logs.count("[ERROR]"); n != 0 {
				t.Fatalf("%d Error lines; want none", n)
			}
			if node.Client().Connected() {
				t.Fatal("refused node is connected")
			}
			select {
			case <-node.Client().Registered():
				t.Fatal("refused node registered")
			default:
			}
		})
	}
	if n := srv.Server().ConnectedNodes(); n != 0 {
		t.Fatalf("server holds %d node sessions; want 0", n)
	}
	api := pki.api(t, srv.HTTPAddr(), cliFiles, "server.global.nomad")
	if nodes, _, err := api.Nodes().List(nil); err != nil || len(nodes) != 0 {
		t.Fatalf("Nodes().List = %d nodes, %v; want none registered", len(nodes), err)
	}
}

// TestTLS_ReloadUnderFollow rotates certificates with Reload while a log
// stream is followed through the server: the stream and the node's
// session keep going, new connections see the new certificate, and a bad
// file fails the reload naming it while the running certificate stays.
func TestTLS_ReloadUnderFollow(t *testing.T) {
	c := startTLSCluster(t)
	api := c.pki.api(t, c.srv.HTTPAddr(), c.cli, "server.global.nomad")
	alloc := runTicker(t, api)
	hc := c.pki.httpClient(t, &c.cli, "server.global.nomad")
	f := follow(t, hc, "https://"+c.srv.HTTPAddr()+"/v1/client/fs/logs/"+alloc.ID+"?task=tick&type=stdout&follow=true&origin=start")
	f.waitData(t, "tick 1\n")

	// peerSerial handshakes afresh with addr (the RPC port needs ByteTLS
	// first) and returns the serial of the certificate presented.
	cliPair, err := tls.LoadX509KeyPair(c.cli.cert, c.cli.key)
	if err != nil {
		t.Fatal(err)
	}
	nodePair, err := tls.LoadX509KeyPair(c.nodeFiles.cert, c.nodeFiles.key)
	if err != nil {
		t.Fatal(err)
	}
	peerSerial := func(addr, serverName string, rpcPort bool) *big.Int {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		cert := cliPair
		if rpcPort {
			cert = nodePair
			if _, err := conn.Write([]byte{0x04}); err != nil {
				t.Fatal(err)
			}
		}
		tc := tls.Client(conn, &tls.Config{RootCAs: c.pki.pool(), ServerName: serverName, Certificates: []tls.Certificate{cert}})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber
	}

	sessionsBefore := c.srv.Server().ConnectedNodes()
	_, newServerSerial := c.pki.issue("server", agent.RoleServer) // same files, new certificate
	if err := c.srv.Reload(c.srv.cfg); err != nil {
		t.Fatalf("server Reload: %v", err)
	}
	_, newNodeSerial := c.pki.issue("client", agent.RoleClient)
	if err := c.node.Reload(c.node.cfg); err != nil {
		t.Fatalf("node Reload: %v", err)
	}
	for _, tc := range []struct {
		name       string
		addr       string
		serverName string
		rpc        bool
		want       *big.Int
	}{
		{"server https", c.srv.HTTPAddr(), "server.global.nomad", false, newServerSerial},
		{"server rpc", c.srv.RPCAddr(), "server.global.nomad", true, newServerSerial},
		{"node https", c.node.HTTPAddr(), "client.global.nomad", false, newNodeSerial},
	} {
		if got := peerSerial(tc.addr, tc.serverName, tc.rpc); got.Cmp(tc.want) != 0 {
			t.Errorf("%s: new connection sees serial %v; want the reloaded %v", tc.name, got, tc.want)
		}
	}
	// The stream opened before the reload still delivers new lines, over
	// the node session opened before it.
	f.waitData(t, nextTick(t, c.node, alloc))
	if got := c.srv.Server().ConnectedNodes(); got != sessionsBefore || !c.node.Client().Connected() {
		t.Fatalf("node sessions after reload = %d (connected %t); want %d kept", got, c.node.Client().Connected(), sessionsBefore)
	}

	// A bad key: Reload fails naming it; the running certificate stays.
	if err := os.WriteFile(c.serverFiles.key, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = c.srv.Reload(c.srv.cfg)
	if err == nil || !strings.Contains(err.Error(), "tls.key_file") || !strings.Contains(err.Error(), c.serverFiles.key) {
		t.Fatalf("Reload with a bad key = %v; want an error naming tls.key_file %s", err, c.serverFiles.key)
	}
	if got := peerSerial(c.srv.HTTPAddr(), "server.global.nomad", false); got.Cmp(newServerSerial) != 0 {
		t.Fatalf("after a failed reload the server presents %v; want %v kept", got, newServerSerial)
	}
	f.waitData(t, nextTick(t, c.node, alloc))
}

var benchTLS = flag.Bool("bench-tls", false, "run the TLS cost benchmark (forwarded stats and log streams, TLS beside plaintext)")

// benchCluster is a server and a node running as processes of the built
// binary, with TLS on every hop when pki is set.
type benchCluster struct {
	name              string
	serverURL, nodeID string
	hc                *http.Client
	api               *nomad.Client
	srvPID, nodePID   int
	nodeDataDir       string
}

func startBenchCluster(t *testing.T, name string, pki *testPKI) *benchCluster {
	t.Helper()
	f := newPairFiles(t)
	ports := f.ports
	b := &benchCluster{name: name, nodeDataDir: f.nodeDir}
	scheme, tlsServer, tlsNode := "http", "", ""
	b.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 60 * time.Second}
	if pki != nil {
		scheme = "https"
		sf, _ := pki.issue(name+"-server", agent.RoleServer)
		nf, _ := pki.issue(name+"-client", agent.RoleClient)
		cli, _ := pki.issue(name+"-cli", agent.RoleCLI)
		tlsServer, tlsNode = pki.tlsHCL(sf), pki.tlsHCL(nf)
		b.hc = pki.httpClient(t, &cli, "server.global.nomad")
		b.hc.Timeout = 60 * time.Second
		b.api = pki.api(t, fmt.Sprintf("127.0.0.1:%d", ports[0]), cli, "server.global.nomad")
	}
	serverCfg, clientCfg := f.write(t, tlsServer, tlsNode)
	b.serverURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
	if b.api == nil {
		var err error
		if b.api, err = nomad.NewClient(&nomad.Config{Address: b.serverURL}); err != nil {
			t.Fatal(err)
		}
	}
	sp := startProc(t, serverCfg)
	b.srvPID = sp.cmd.Process.Pid
	waitFor(t, 20*time.Second, name+" server up", func() (bool, error) {
		resp, err := b.hc.Get(b.serverURL + "/v1/status/leader")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	cp := startProc(t, clientCfg)
	b.nodePID = cp.cmd.Process.Pid
	waitFor(t, 20*time.Second, name+" node ready", func() (bool, error) {
		// By hand: the Go client cannot decode the node list yet (empty
		// DriverInfo.UpdateTime).
		resp, err := b.hc.Get(b.serverURL + "/v1/nodes")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var nodes []struct{ ID, Status string }
		if err := json.NewDecoder(resp.Body).Decode(&nodes); err != nil || len(nodes) != 1 || nodes[0].Status != "ready" {
			return false, err
		}
		b.nodeID = nodes[0].ID
		return true, nil
	})
	return b
}

// runBulkLog starts a task that writes size bytes of log and waits until
// all of it is on disk.
func (b *benchCluster) runBulkLog(t *testing.T, size int) string {
	t.Helper()
	task := shellTask("bulk", fmt.Sprintf(`yes "0123456789abcdefghi" | head -c %d; while :; do sleep 1; done`, size))
	task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(20), MaxFileSizeMB: ptr(16)}
	job := &nomad.Job{ID: ptr("bulk"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{task}}}}
	if _, _, err := b.api.Jobs().Register(job, nil); err != nil {
		t.Fatalf("Jobs().Register: %v", err)
	}
	allocID := waitAllocsStatus(t, b.api, "bulk", 1, "running")[0].ID
	logs := filepath.Join(b.nodeDataDir, "alloc", allocID, "alloc", "logs")
	waitFor(t, 60*time.Second, "bulk log written", func() (bool, error) {
		matches, _ := filepath.Glob(filepath.Join(logs, "bulk.stdout.*"))
		var n int64
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil {
				n += fi.Size()
			}
		}
		return n >= int64(size), nil
	})
	return allocID
}

// fetch reads url to the end and checks it returned at least size bytes.
func (b *benchCluster) fetch(t *testing.T, url string, size int) {
	t.Helper()
	resp, err := b.hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || n < int64(size) {
		t.Fatalf("GET %s = %d, %d bytes, %v; want 200 and at least %d bytes", url, resp.StatusCode, n, err, size)
	}
}

// sample is one timed run of a scenario on one cluster: its rate (req/s
// or MB/s) and the server's and node's CPU per unit.
type sample struct {
	rate            float64
	srvCPU, nodeCPU time.Duration
}

// timed runs fn, which does units of work (calls or MB), on b.
func (b *benchCluster) timed(units float64, fn func()) sample {
	s0, n0 := procCPU(b.srvPID), procCPU(b.nodePID)
	start := time.Now()
	fn()
	elapsed := time.Since(start)
	s1, n1 := procCPU(b.srvPID), procCPU(b.nodePID)
	per := func(d time.Duration) time.Duration { return time.Duration(float64(d) / units) }
	return sample{rate: units / elapsed.Seconds(), srvCPU: per(s1 - s0), nodeCPU: per(n1 - n0)}
}

// median returns the sample with the median rate, and the median CPUs.
func median(ss []sample) sample {
	rates := make([]float64, len(ss))
	srv := make([]time.Duration, len(ss))
	node := make([]time.Duration, len(ss))
	for i, s := range ss {
		rates[i], srv[i], node[i] = s.rate, s.srvCPU, s.nodeCPU
	}
	slices.Sort(rates)
	slices.Sort(srv)
	slices.Sort(node)
	m := len(ss) / 2
	return sample{rate: rates[m], srvCPU: srv[m], nodeCPU: node[m]}
}

// TestBenchTLS prints the cost of TLS: forwarded stats throughput and log
// stream MB/s through a server, with TLS on every hop (HTTPS with client
// certificates, mTLS on the node's session) beside the same load in
// plaintext, and their ratios, plus the server's and node's CPU per call
// or MB. Both clusters run at once and the runs alternate (plain, TLS,
// TLS, plain, ...) so that other load on the machine hits both alike;
// medians are reported. It runs real processes of the built binary and
// only with -bench-tls; it asserts nothing about time.
func TestBenchTLS(t *testing.T) {
	if !*benchTLS {
		t.Skip("measurement only: set -bench-tls to run (make bench does)")
	}
	n, size, reps := 1000, 64<<20, 11
	if v := os.Getenv("TETHER_BENCH_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	if v := os.Getenv("TETHER_BENCH_REPS"); v != "" {
		fmt.Sscan(v, &reps)
	}
	clusters := []*benchCluster{startBenchCluster(t, "plain", nil), startBenchCluster(t, "tls", newTestPKI(t))}
	allocs := make([]string, 2)
	for i, b := range clusters {
		allocs[i] = b.runBulkLog(t, size)
	}
	mb := float64(size) / 1e6
	scenarios := []struct {
		name, unit string
		units      float64
		run        func(b *benchCluster, allocID string)
	}{
		{"stats c=1", "req/s", float64(n), func(b *benchCluster, _ string) {
			runLoad(b.hc, b.serverURL+"/v1/client/stats?node_id="+b.nodeID, n, 1)
		}},
		{"stats c=8", "req/s", float64(n), func(b *benchCluster, _ string) {
			runLoad(b.hc, b.serverURL+"/v1/client/stats?node_id="+b.nodeID, n, 8)
		}},
		{"framed logs", "MB/s", mb, func(b *benchCluster, allocID string) {
			b.fetch(t, b.serverURL+"/v1/client/fs/logs/"+allocID+"?task=bulk&type=stdout", size)
		}},
		{"plain logs", "MB/s", mb, func(b *benchCluster, allocID string) {
			b.fetch(t, b.serverURL+"/v1/client/fs/logs/"+allocID+"?task=bulk&type=stdout&plain=true", size)
		}},
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nvia server; TLS = HTTPS with client certificates + mTLS node session; median of %d alternating runs\n", reps)
	fmt.Fprintf(&out, "%-12s %-6s %10s %10s %9s   %-22s %-22s %s\n", "scenario", "unit", "plaintext", "TLS", "TLS/plain", "server CPU/unit", "node CPU/unit", "paired TLS/plain: median (range)")
	only := os.Getenv("TETHER_BENCH_ONLY") // a scenario name: run just that one
	for _, sc := range scenarios {
		if only != "" && sc.name != only {
			continue
		}
		for i, b := range clusters {
			runLoad(b.hc, b.serverURL+"/v1/client/stats?node_id="+b.nodeID, 100, 8) // warm up
			sc.run(b, allocs[i])
		}
		samples := [2][]sample{}
		var ratios []float64 // TLS/plain of each repetition's pair
		for r := 0; r < reps; r++ {
			order := []int{0, 1}
			if r%2 == 1 {
				order = []int{1, 0}
			}
			for _, i := range order {
				b := clusters[i]
				samples[i] = append(samples[i], b.timed(sc.units, func() { sc.run(b, allocs[i]) }))
			}
			ratios = append(ratios, samples[1][r].rate/samples[0][r].rate)
		}
		p, s := median(samples[0]), median(samples[1])
		sort.Float64s(ratios)
		cpu := func(a, b time.Duration) string {
			return fmt.Sprintf("%v → %v", a.Round(time.Microsecond), b.Round(time.Microsecond))
		}
		fmt.Fprintf(&out, "%-12s %-6s %10.1f %10.1f %9.2f   %-22s %-22s %.2f (%.2f–%.2f)\n", sc.name, sc.unit, p.rate, s.rate, s.rate/p.rate,
			cpu(p.srvCPU, s.srvCPU), cpu(p.nodeCPU, s.nodeCPU), ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
	}
	t.Log(out.String())
}

// TestTLS_PeerMethodsNeedServerCert: under mutual TLS with
// verify_server_hostname, a session made with a node's certificate that
// has not registered cannot call server-to-server methods (apply raft
// entries, relay to nodes); one made with a server's certificate can.
func TestTLS_PeerMethodsNeedServerCert(t *testing.T) {
	pki := newTestPKI(t)
	serverFiles, _ := pki.issue("server", agent.RoleServer)
	nodeFiles, _ := pki.issue("client", agent.RoleClient)
	scfg := baseConfig(t, "server1")
	scfg.Server.Enabled = true
	scfg.Server.BootstrapExpect = 1
	scfg.TLS = pki.tlsBlock(serverFiles)
	srv := startAgent(t, scfg)
	waitFor(t, 20*time.Second, "a leader", func() (bool, error) { return srv.Server().Leader() != "", nil })

	type raftApplyArgs struct{ Data []byte }
	type hasNodeArgs struct{ NodeID string }
	for _, tc := range []struct {
		name   string
		files  pkiFiles
		denied bool
	}{
		{"node certificate", nodeFiles, true},
		{"server certificate", serverFiles, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc2, err := agent.NodeRPCTLS(agent.TLSConfig{CAFile: pki.caFile, CertFile: tc.files.cert, KeyFile: tc.files.key, VerifyServerHostname: true}, "global")
			if err != nil {
				t.Fatal(err)
			}
			cfg := rpc.DefaultConfig()
			cfg.TLSConfig = tc2
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sess, err := rpc.Dial(ctx, srv.RPCAddr(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			calls := []struct {
				method string
				args   any
			}{
				{"Raft.Apply", &raftApplyArgs{Data: []byte{0xff}}},
				{"Routing.HasNode", &hasNodeArgs{NodeID: structs.GenerateUUID()}},
			}
			for _, c := range calls {
				var reply map[string]any
				err := sess.Call(ctx, c.method, c.args, &reply)
				denied := err != nil && strings.Contains(err.Error(), "Permission denied")
				if denied != tc.denied {
					t.Errorf("%s: err %v; want denied %v", c.method, err, tc.denied)
				}
			}
		})
	}
}
