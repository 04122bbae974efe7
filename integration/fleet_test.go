package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
	"tether/client"
	"tether/rpc"
	"tether/server"
)

// fleetServers lifts the per-IP connection cap of in-process servers: a
// fleet dials from one address.
func fleetServers(c *server.Config) {
	rc := rpc.DefaultConfig()
	if c.RPC != nil {
		cp := *c.RPC
		rc = &cp
	}
	rc.MaxConnsPerIP = -1
	c.RPC = rc
	c.RebalanceInterval = 500 * time.Millisecond
	c.SessionDrainTimeout = 10 * time.Second
	c.NoLeaveOnShutdown = true // a stop is like kill -9: peers find out by failure detection
}

// startTestFleet starts a fleet of n nodes against servers and stops it
// when the test ends (if the test did not).
func startTestFleet(t testing.TB, n int, servers []string) *client.Fleet {
	t.Helper()
	cfg := client.DefaultFleetConfig()
	cfg.Servers = servers
	cfg.Nodes = n
	cfg.DataDir = t.TempDir()
	cfg.StartRate = 1000
	cfg.StartBurst = 100
	cfg.MetaSyncDelay = 200 * time.Millisecond
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "fleet", Level: hclog.Warn, Output: newTestWriter(t)})
	cfg.NodeLogger = hclog.New(&hclog.LoggerOptions{Name: "fleet.node", Level: hclog.Error, Output: newTestWriter(t)})
	f, err := client.NewFleet(cfg)
	if err != nil {
		t.Fatalf("NewFleet: %v", err)
	}
	f.Start()
	t.Cleanup(func() { _ = f.Shutdown() })
	return f
}

// forEachLimited runs fn for 0..n-1, at most limit at a time, and returns
// the first error.
func forEachLimited(n, limit int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range min(limit, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// nodeAnswers checks that node id answers stats and metadata through the
// server behind api.
func nodeAnswers(api *nomad.Client, id string) error {
	hs, err := api.Nodes().Stats(id, nil)
	if err != nil {
		return fmt.Errorf("stats of %s: %w", id, err)
	}
	if hs.Memory == nil || len(hs.CPU) == 0 {
		return fmt.Errorf("stats of %s: %+v has no memory or CPU", id, hs)
	}
	m, err := api.Nodes().Meta().Read(id, nil)
	if err != nil {
		return fmt.Errorf("metadata of %s: %w", id, err)
	}
	if m.Meta["connect.log_level"] == "" {
		return fmt.Errorf("metadata of %s: %v lacks the default static keys", id, m.Meta)
	}
	return nil
}

// fleetGoroutines counts the goroutines that carry the fleet's profiler
// labels: every goroutine a node starts inherits them.
func fleetGoroutines() int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	n := 0
	var count int
	for _, line := range strings.Split(buf.String(), "\n") {
		if c, _, ok := strings.Cut(line, " @ "); ok {
			count, _ = strconv.Atoi(c)
			continue
		}
		if strings.HasPrefix(line, "# labels: ") && strings.Contains(line, `"tether":"fleet"`) {
			n += count
		}
	}
	return n
}

// portPair is the local and remote port of a TCP connection.
type portPair struct{ local, remote int }

// fleetSockets returns the socket inodes of this process's open TCP
// connections whose local and remote ports are one of conns, each with
// its /proc/net/tcp line.
func fleetSockets(t testing.TB, conns map[portPair]bool) map[string]string {
	t.Helper()
	lines := map[string]string{}
	for _, file := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 {
				continue
			}
			_, lp, _ := strings.Cut(fields[1], ":")
			_, rp, _ := strings.Cut(fields[2], ":")
			l, err1 := strconv.ParseInt(lp, 16, 32)
			r, err2 := strconv.ParseInt(rp, 16, 32)
			if err1 == nil && err2 == nil && conns[portPair{int(l), int(r)}] {
				lines[fields[9]] = strings.TrimSpace(line)
			}
		}
	}
	open := map[string]string{}
	for ino := range openSocketInodes() {
		if line, ok := lines[ino]; ok {
			open[ino] = line
		}
	}
	return open
}

// openSocketInodes returns the inodes of this process's open sockets.
func openSocketInodes() map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			out[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return out
}

// TestFleet_InProcess runs 300 simulated nodes against three in-process
// servers: every node answers stats and metadata through every server;
// after one server stops, every node answers again through both others;
// stopping the fleet leaves no goroutine or descriptor behind.
func TestFleet_InProcess(t *testing.T) {
	const nodes = 300
	c := startCluster(t, 3, fleetServers)

	var addrs []string
	for _, s := range c.servers {
		addrs = append(addrs, s.RPCAddr())
	}
	f := startTestFleet(t, nodes, addrs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.WaitRegistered(ctx, 50*time.Millisecond); err != nil {
		t.Fatalf("fleet: %v", err)
	}
	st := f.Status()
	t.Logf("registered %d nodes in %s; sessions per server %v", st.Registered, st.Elapsed.Round(time.Millisecond), st.PerServer)
	if len(st.PerServer) != 3 {
		t.Fatalf("sessions per server %v; want nodes on all three", st.PerServer)
	}
	ids := make([]string, 0, nodes)
	for _, n := range f.Nodes() {
		ids = append(ids, n.NodeID())
	}

	apis := make([]*nomad.Client, len(c.servers))
	for i, s := range c.servers {
		apis[i] = s.API(t)
	}
	// Every node through every server. A node only just registered may
	// not be listed on a follower yet: wait for all, then check all.
	for si, s := range c.servers {
		waitFor(t, 20*time.Second, "every node ready on "+s.cfg.Name, func() (bool, error) {
			list, err := listNodes(s.URL())
			if err != nil {
				return false, err
			}
			ready := 0
			for _, n := range list {
				if n.Status == "ready" {
					ready++
				}
			}
			return ready == nodes, fmt.Errorf("%d of %d ready on srv%d", ready, nodes, si)
		})
	}
	err := forEachLimited(len(ids)*len(apis), 16, func(k int) error {
		return nodeAnswers(apis[k%len(apis)], ids[k/len(apis)])
	})
	if err != nil {
		t.Fatal(err)
	}

	// Stop the server holding the most nodes; they move to the others.
	victim := 0
	for i, s := range c.servers {
		if st.PerServer[s.RPCAddr()] > st.PerServer[c.servers[victim].RPCAddr()] {
			victim = i
		}
	}
	t.Logf("stopping %s, which holds %d nodes", c.cfgs[victim].Name, st.PerServer[c.servers[victim].RPCAddr()])
	c.stop(victim)
	var survivors []*nomad.Client
	for i := range c.servers {
		if i != victim {
			survivors = append(survivors, apis[i])
		}
	}
	waitFor(t, 45*time.Second, "every node answers through both survivors", func() (bool, error) {
		failed := atomic.Int64{}
		var firstErr atomic.Value
		_ = forEachLimited(len(ids)*len(survivors), 16, func(k int) error {
			if err := nodeAnswers(survivors[k%len(survivors)], ids[k/len(survivors)]); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			return nil
		})
		if n := failed.Load(); n > 0 {
			return false, fmt.Errorf("%d calls failed, first: %v", n, firstErr.Load())
		}
		return true, nil
	})
	// A node that reached a survivor while no leader was elected answers
	// already (its session is bound) and counts as connected once its
	// registration is accepted.
	waitFor(t, 20*time.Second, "every node registered with a survivor", func() (bool, error) {
		st := f.Status()
		return st.Connected == nodes && st.PerServer[addrs[victim]] == 0,
			fmt.Errorf("%d connected, per server %v", st.Connected, st.PerServer)
	})

	// Back again: the fleet moves a fair share to it.
	c.restart(victim)
	c.waitStable(3)
	waitFor(t, 60*time.Second, "sessions rebalanced after the restart", func() (bool, error) {
		counts := sessionCounts(c)
		return evenWithin(counts, nodes, 0.2), fmt.Errorf("sessions per server %v", counts)
	})
	// No node between two servers: a moving node is bound on both until it
	// releases the old session. (A node asked to move may also stay, when
	// its target does not take it in time: asked moves need not all end
	// in a release.)
	waitFor(t, 30*time.Second, "no node between two servers", func() (bool, error) {
		total := 0
		for _, k := range sessionCounts(c) {
			total += k
		}
		st := f.Status()
		return total == nodes && st.Connected == nodes, fmt.Errorf("%d sessions bound for %d nodes, %d connected", total, nodes, st.Connected)
	})
	t.Logf("after the restart: sessions per server %v", sessionCounts(c))
	err = forEachLimited(len(ids)*len(apis), 16, func(k int) error {
		return nodeAnswers(apis[k%len(apis)], ids[k/len(apis)])
	})
	if err != nil {
		t.Fatalf("after the rebalance: %v", err)
	}

	// The fleet's own sockets: the ports of its sessions now.
	conns := map[portPair]bool{}
	for _, n := range f.Nodes() {
		if l, r := n.LocalAddr(), n.ServerAddr(); l != "" && r != "" {
			conns[portPair{portOf(t, l), portOf(t, r)}] = true
		}
	}
	sockets := fleetSockets(t, conns)
	if len(sockets) != nodes {
		t.Fatalf("%d sockets on the ports of %d sessions; want one each", len(sockets), nodes)
	}
	g := fleetGoroutines()
	t.Logf("%d goroutines carry the fleet's labels: %.1f per node", g, float64(g)/nodes)
	if g < 3*nodes {
		t.Fatalf("%d goroutines carry the fleet's labels for %d nodes; the count does not see them", g, nodes)
	}
	if err := f.Shutdown(); err != nil {
		t.Fatalf("fleet shutdown: %v", err)
	}
	// Servers keep sessions to each other and redial the stopped one, so
	// process totals say nothing about the fleet: count what is its own.
	waitFor(t, 10*time.Second, "no goroutine or socket of the fleet left", func() (bool, error) {
		g := fleetGoroutines()
		var left []string
		for ino := range openSocketInodes() {
			if line, ok := sockets[ino]; ok {
				left = append(left, line)
			}
		}
		return g == 0 && len(left) == 0, fmt.Errorf("%d goroutines with the fleet's labels, %d of its sockets open %v", g, len(left), left)
	})
}

// startServerProc runs one server as a process of the built binary and
// returns its RPC address and HTTP URL once it leads.
func startServerProc(t testing.TB, extra string) (rpcAddr, httpURL string, p *proc) {
	t.Helper()
	ports := freePorts(t, 3)
	dir := t.TempDir()
	cfgFile := writeFile(t, dir, "server.hcl", agentHCL("srv1", dir, "WARN", ports[0], ports[1], ports[2], `
server {
  enabled          = true
  bootstrap_expect = 1
}
`+extra+"\n"))
	p = startProc(t, cfgFile)
	httpURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	waitFor(t, 20*time.Second, "server up", func() (bool, error) {
		code, body, err := tryGet(httpURL + "/v1/status/leader")
		return code == 200 && len(body) > 2, err
	})
	return fmt.Sprintf("127.0.0.1:%d", ports[1]), httpURL, p
}

// fleetProc is a running "tether fleet" process.
type fleetProc struct {
	cmd    *exec.Cmd
	out    *lockedWriter
	done   chan error
	exited bool
}

// startFleetProc runs "tether fleet args..." with TMPDIR set to tmp, in
// its own process group, killed when the test ends if it still runs.
func startFleetProc(t *testing.T, tmp string, args ...string) *fleetProc {
	t.Helper()
	p := &fleetProc{out: &lockedWriter{w: &bytes.Buffer{}}, done: make(chan error, 1)}
	p.cmd = exec.Command(tetherBin, append([]string{"fleet"}, args...)...)
	p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "NOMAD_TOKEN=")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting fleet: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.exited {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("fleet output:\n%s", p.out.String())
		}
	})
	return p
}

// waitOutput waits until the fleet printed every one of want.
func (p *fleetProc) waitOutput(t *testing.T, want ...string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("fleet output %q", want), func() (bool, error) {
		s := p.out.String()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false, nil
			}
		}
		return true, nil
	})
}

// interrupt sends SIGINT and checks that the fleet exits 0, having said
// so, and that its process group is gone.
func (p *fleetProc) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.exited = true
		if err != nil {
			t.Fatalf("fleet exited with %v; want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("fleet did not exit within 20s of SIGINT")
	}
	if !strings.Contains(p.out.String(), "fleet: stopped") {
		t.Fatalf("no stop line in:\n%s", p.out.String())
	}
	// The process group is gone: nothing the fleet started survives it.
	if err := syscall.Kill(-p.cmd.Process.Pid, 0); err != syscall.ESRCH {
		t.Fatalf("process group of the fleet still exists (kill 0: %v)", err)
	}
}

// readyNodes waits until the server at httpURL lists n ready nodes (with
// token, if any) and returns their IDs.
func readyNodes(t *testing.T, api *nomad.Client, n int) []string {
	t.Helper()
	var ids []string
	waitFor(t, 30*time.Second, "every fleet node ready", func() (bool, error) {
		list, _, err := api.Nodes().List(nil)
		if err != nil {
			return false, err
		}
		ids = ids[:0]
		for _, s := range list {
			if s.Status == "ready" {
				ids = append(ids, s.ID)
			}
		}
		return len(ids) == n, fmt.Errorf("%d of %d ready", len(ids), n)
	})
	return ids
}

// TestProcess_Fleet runs "tether fleet" as a process of the built binary
// against a server process: its nodes register and answer through the
// server, and SIGINT makes it stop every node, remove its temporary data
// dir, exit 0 and leave no process.
func TestProcess_Fleet(t *testing.T) {
	const nodes = 40
	rpcAddr, httpURL, _ := startServerProc(t, "")
	tmp := t.TempDir()
	p := startFleetProc(t, tmp, "-servers", rpcAddr, "-nodes", strconv.Itoa(nodes), "-progress", "1s", "-log-level", "INFO")
	api, err := nomad.NewClient(&nomad.Config{Address: httpURL})
	if err != nil {
		t.Fatal(err)
	}
	ids := readyNodes(t, api, nodes)
	if err := forEachLimited(len(ids), 8, func(i int) error { return nodeAnswers(api, ids[i]) }); err != nil {
		t.Fatal(err)
	}
	p.waitOutput(t, fmt.Sprintf("all %d nodes registered", nodes), fmt.Sprintf("the servers list %d of %d nodes ready", nodes, nodes))
	dirs, _ := filepath.Glob(filepath.Join(tmp, "tether-fleet-*"))
	if len(dirs) != 1 {
		t.Fatalf("temporary data dirs %v; want one", dirs)
	}
	p.interrupt(t)
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "tether-fleet-*")); len(dirs) != 0 {
		t.Fatalf("temporary data dir left: %v", dirs)
	}
	// Its nodes are gone from the server's view of sessions.
	waitFor(t, 10*time.Second, "No path to a fleet node", func() (bool, error) {
		code, body, err := tryGet(httpURL + "/v1/client/stats?node_id=" + ids[0])
		return code == 404 && strings.Contains(body, "No path to node"), err
	})
}

// TestProcess_FleetACLTLS runs the fleet against a server with ACLs and
// mutual TLS on the RPC port (hostname verification on): the nodes
// register with their secrets over mTLS, -token (node:read) lets the fleet
// see them listed, and calls with a token answer (each node resolves the
// token through the server itself) while calls without one are refused.
func TestProcess_FleetACLTLS(t *testing.T) {
	const nodes = 20
	pki := newTestPKI(t)
	sf, _ := pki.issue("server", agent.RoleServer)
	nf, _ := pki.issue("fleet", agent.RoleClient)
	rpcAddr, httpURL, _ := startServerProc(t, fmt.Sprintf(`
acl {
  enabled = true
}
tls {
  rpc       = true
  ca_file   = %q
  cert_file = %q
  key_file  = %q
  verify_server_hostname = true
}
`, pki.caFile, sf.cert, sf.key))
	anon, err := nomad.NewClient(&nomad.Config{Address: httpURL})
	if err != nil {
		t.Fatal(err)
	}
	var mgmtSecret string
	waitFor(t, 20*time.Second, "ACL bootstrap", func() (bool, error) {
		tok, _, err := anon.ACLTokens().Bootstrap(nil)
		if err != nil {
			return false, err
		}
		mgmtSecret = tok.SecretID
		return true, nil
	})
	mgmt, err := nomad.NewClient(&nomad.Config{Address: httpURL, SecretID: mgmtSecret})
	if err != nil {
		t.Fatal(err)
	}
	reader := makeToken(t, mgmt, "node-read", `node { policy = "read" }`)

	p := startFleetProc(t, t.TempDir(), "-servers", rpcAddr, "-nodes", strconv.Itoa(nodes), "-progress", "0",
		"-tls-ca-file", pki.caFile, "-tls-cert-file", nf.cert, "-tls-key-file", nf.key, "-tls-verify-server-hostname",
		"-token", reader)
	ids := readyNodes(t, mgmt, nodes)
	p.waitOutput(t, fmt.Sprintf("the servers list %d of %d nodes ready", nodes, nodes))
	withToken, err := nomad.NewClient(&nomad.Config{Address: httpURL, SecretID: reader})
	if err != nil {
		t.Fatal(err)
	}
	if err := forEachLimited(len(ids), 8, func(i int) error { return nodeAnswers(withToken, ids[i]) }); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Nodes().Stats(ids[0], nil); err == nil || !isDenied(err) {
		t.Fatalf("stats without a token: %v; want 403", err)
	}
	p.interrupt(t)
}

// lockedWriter serialises writes of a process's stdout and stderr into
// one buffer, which the test reads while the process runs.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// BenchmarkFleet_Memory measures what a fleet costs its process per node:
// N nodes (TETHER_FLEET_NODES, default 1000) against one server that runs
// as a process of its own, so every byte counted here is the fleet's. It
// reports heap plus stacks in use (after a GC), RSS and goroutines per
// node, once every node has registered and pulled its allocations.
// The loop runs once whatever b.N is: the figure is a size, not a rate.
func BenchmarkFleet_Memory(b *testing.B) {
	nodes := 1000
	if v := os.Getenv("TETHER_FLEET_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("TETHER_FLEET_NODES=%q", v)
		}
		nodes = n
	}
	rpcAddr, httpURL, _ := startServerProc(b, "")
	var stack0, stack1 uint64
	measure := func() (heapStack, rss uint64, goroutines int) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		stack1 = ms.StackInuse
		return ms.HeapInuse + ms.StackInuse, rssBytes(b), runtime.NumGoroutine()
	}
	for b.Loop() {
		h0, r0, g0 := measure()
		stack0 = stack1
		f := startTestFleet(b, nodes, []string{rpcAddr})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		err := f.WaitRegistered(ctx, 100*time.Millisecond)
		cancel()
		if err != nil {
			b.Fatalf("fleet: %v", err)
		}
		// Once the server lists every node ready, give the fleet a few
		// heartbeats' worth of steady state, sampled, and keep the
		// largest figure.
		waitFor(b, time.Minute, "every node ready", func() (bool, error) {
			list, err := listNodes(httpURL)
			if err != nil {
				return false, err
			}
			ready := 0
			for _, n := range list {
				if n.Status == "ready" {
					ready++
				}
			}
			return ready == nodes, fmt.Errorf("%d of %d ready", ready, nodes)
		})
		sample := func() (h1, r1 uint64, g1 int) {
			for range 5 {
				time.Sleep(time.Second) // sampling over time, not synchronisation
				h, r, g := measure()
				h1, r1, g1 = max(h1, h), max(r1, r), max(g1, g)
			}
			return h1, r1, g1
		}
		report := func(h1, r1 uint64, g1 int, suffix string) {
			b.ReportMetric(float64(h1-h0)/1024/float64(nodes), "heap+stack-KiB/node"+suffix)
			b.ReportMetric(float64(r1-r0)/1024/float64(nodes), "RSS-KiB/node"+suffix)
			b.ReportMetric(float64(g1-g0)/float64(nodes), "goroutines/node"+suffix)
			b.ReportMetric(float64(stack1-stack0)/1024/float64(nodes), "stack-KiB/node"+suffix)
		}
		h1, r1, g1 := sample()
		report(h1, r1, g1, "")
		// Then after every node has answered stats and metadata through
		// the server: what calls leave behind on a node (reused streams).
		api, err := nomad.NewClient(&nomad.Config{Address: httpURL})
		if err != nil {
			b.Fatal(err)
		}
		nodesNow := f.Nodes()
		if err := forEachLimited(len(nodesNow), 8, func(i int) error { return nodeAnswers(api, nodesNow[i].NodeID()) }); err != nil {
			b.Fatal(err)
		}
		h1, r1, g1 = sample()
		report(h1, r1, g1, "-after-calls")
		if p := os.Getenv("TETHER_FLEET_HEAPPROFILE"); p != "" {
			writeHeapProfile(b, p)
		}
		if err := f.Shutdown(); err != nil {
			b.Fatal(err)
		}
	}
}

// rssBytes reads the process's resident set size from /proc/self/statm.
func rssBytes(t testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatalf("statm %q: %v", b, err)
	}
	return pages * uint64(os.Getpagesize())
}

// writeHeapProfile writes the heap profile to path (for a look at what a
// fleet node holds: TETHER_FLEET_HEAPPROFILE, with -memprofilerate).
func writeHeapProfile(t testing.TB, path string) {
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := pprof.WriteHeapProfile(fh); err != nil {
		t.Fatal(err)
	}
}
