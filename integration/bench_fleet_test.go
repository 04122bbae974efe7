package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tether/agent"
)

var (
	benchFleet         = flag.Bool("bench-fleet", false, "run the fleet benchmark (make bench-fleet)")
	benchFleetNodes    = flag.String("bench-fleet-nodes", "1000,5000,10000", "fleet sizes to measure, comma-separated")
	benchFleetProcs    = flag.Int("bench-fleet-procs", 1, "tether fleet processes the nodes are split between")
	benchFleetRate     = flag.Int("bench-fleet-rate", 1000, "open-loop rate of forwarded stats and metadata calls, req/s")
	benchFleetLoad     = flag.Duration("bench-fleet-load", 30*time.Second, "duration of the steady load")
	benchFleetSteady   = flag.Duration("bench-fleet-steady", 30*time.Second, "idle window for heartbeats and CPU at steady state")
	benchFleetFollows  = flag.Int("bench-fleet-follows", 1000, "concurrent log follows (at most one per node)")
	benchFleetSettle   = flag.Duration("bench-fleet-settle", 5*time.Minute, "time after the killed server's restart before sessions are counted")
	benchFleetSettleRt = flag.Int("bench-fleet-settle-rate", 100, "req/s of the load kept running while the fleet rebalances")
	benchFleetOut      = flag.String("bench-fleet-out", "", "also write the table (markdown) to this file")
)

// Targets at 10,000 nodes (issue 14), printed beside the figures.
const (
	targetKiBPerSession = 24
	targetServerRSSMiB  = 500
	targetColdStart     = 60 * time.Second
	targetStatsP99      = 20 * time.Millisecond
	targetFailover      = 30 * time.Second
	targetEvenPct       = 20
)

// TestBenchFleet measures a fleet of simulated nodes (tether fleet)
// against three servers, all real processes of the built binary with ACLs
// and mutual TLS on, everything on this machine: per-session cost on a
// server, cold start, forwarded calls at a fixed open-loop rate, the
// memory of log follows, kill -9 of the server holding a third of the
// fleet under load, rebalancing after its restart, the leader's heartbeat
// load and the fleet process's own cost. It prints one table per run and
// asserts nothing about time: it runs only with -bench-fleet.
func TestBenchFleet(t *testing.T) {
	if !*benchFleet {
		t.Skip("measurement only: set -bench-fleet to run (make bench-fleet does)")
	}
	var sizes []int
	for _, s := range strings.Split(*benchFleetNodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 3 {
			t.Fatalf("-bench-fleet-nodes: %q is not a fleet size", s)
		}
		sizes = append(sizes, n)
	}
	ctx, cancel := benchContext(t)
	defer cancel()
	var results []*fleetResult
	for _, n := range sizes {
		if ctx.Err() != nil {
			break
		}
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			r := runFleetBench(ctx, t, n)
			results = append(results, r)
			t.Log("\n" + fleetTable([]*fleetResult{r}))
		})
	}
	table := fleetTable(results)
	t.Log("\n" + table)
	if *benchFleetOut != "" {
		if err := os.WriteFile(*benchFleetOut, []byte(table), 0o644); err != nil {
			t.Errorf("writing %s: %v", *benchFleetOut, err)
		}
	}
}

// benchContext ends a minute before the test binary's deadline and on
// SIGINT or SIGTERM; either way every process the benchmark started is
// killed (they run in their own process groups, so a ^C does not reach
// them, and a test that times out runs no cleanup).
func benchContext(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-time.Minute))
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "bench-fleet: %v: killing every process started\n", sig)
			benchProcs.killAll()
			os.Exit(1)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				benchProcs.killAll()
			}
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
		benchProcs.killAll()
	}
}

// benchProcs are the processes the fleet benchmark runs.
var benchProcs procSet

type procSet struct {
	mu    sync.Mutex
	procs map[*benchProc]bool
}

func (s *procSet) add(p *benchProc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procs == nil {
		s.procs = map[*benchProc]bool{}
	}
	s.procs[p] = true
}

func (s *procSet) remove(p *benchProc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.procs, p)
}

func (s *procSet) killAll() {
	s.mu.Lock()
	ps := make([]*benchProc, 0, len(s.procs))
	for p := range s.procs {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	for _, p := range ps {
		p.kill()
	}
}

// benchProc is a process of the built binary in its own process group.
// It is started from a goroutine locked to its OS thread for the
// process's life, with a parent-death signal: if the test binary dies
// (a timeout panic, a kill), the kernel kills the process too.
type benchProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startBenchProc(t *testing.T, name string, args ...string) *benchProc {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tetherBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &benchProc{name: name, cmd: cmd, done: make(chan struct{}), log: logf.Name()}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the process ends:
		// keep this one until the process has exited.
		runtime.LockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	benchProcs.add(p)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("%s log (tail):\n%s", name, b)
		}
	})
	return p
}

func (p *benchProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and then SIGKILL to the group.
func (p *benchProc) stop() {
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.kill()
		}
	}
	benchProcs.remove(p)
}

// kill sends SIGKILL to the group and waits for the process.
func (p *benchProc) kill() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// fleetServer is one of the three server processes.
type fleetServer struct {
	name, cfg, url, rpc string
	p                   *benchProc
}

// fleetBench is one run at one fleet size.
type fleetBench struct {
	t       *testing.T
	ctx     context.Context
	n       int
	hc      *http.Client
	token   string
	servers []*fleetServer
	fleets  []*benchProc
	// fleetArgs are the fleet's TLS and token flags.
	fleetArgs []string
	nodeIDs   []string
	alive     [3]atomic.Bool
	pki       *testPKI // the CA and its files, for more agents (the soak's nodes)
}

// serverSample is what a server costs at one moment.
type serverSample struct {
	rssKiB     int64
	heapLive   int64 // bytes, after a forced GC
	stacks     int64 // bytes
	goroutines int64
	fds        int64
	cpu        time.Duration
	stats      map[string]uint64 // stats.tether
	raft       map[string]string
	leader     bool
}

// fleetResult holds the figures of one fleet size.
type fleetResult struct {
	n, procs int
	// per connected node on a server (mean over the three) and RSS
	perSessKiB, perSessGoroutines, perSessFDs float64
	perSessKiBMax                             float64
	rssMiB                                    [3]float64
	sessions                                  [3]int
	// cold start
	registered, answered time.Duration
	// load
	load loadResult
	// follows
	placeJob, runAllocs time.Duration // log job: registered (placed), all running
	followNodes         int
	follows             int
	followKiB, followRS float64 // heap+stacks and RSS per follow, KiB
	followGoroutines    float64
	// kill
	killed                           int
	killedHeld                       int
	failover                         [2]durStats // per survivor, nodes that were on the killed server
	peakSessions, peakRegs, peakRaft float64     // per second, on the survivors
	meanRaft                         float64
	failedKilled, failedOthers       int
	callsKilled, callsOthers         int
	viaKilled                        int // calls sent to the killed server
	unanswered                       int
	// restart
	settle        time.Duration
	after         [3]int
	settleErrors  int
	settleCalls   int
	evenDeviation float64 // max |share - 1/3| / (1/3), %
	// steady state
	leaderHB, leaderCPU    float64 // heartbeat RPCs/s, CPU fraction of one core
	serverCPU              [3]float64
	fleetRSSKiB, fleetCPUs float64 // per node: KiB, µs of CPU per second
	notes                  []string
}

// durStats are percentiles of n durations; of, when set, is how many
// there should have been (the rest never happened: never answered).
type durStats struct {
	p50, p99, max time.Duration
	n, of         int
}

func durStatsOf(ds []time.Duration) durStats {
	if len(ds) == 0 {
		return durStats{}
	}
	return durStats{p50: pct(ds, 50), p99: pct(ds, 99), max: slices.Max(ds), n: len(ds)}
}

func (d durStats) String() string {
	r := func(x time.Duration) string {
		if x >= time.Second {
			return x.Round(10 * time.Millisecond).String()
		}
		return x.Round(10 * time.Microsecond).String()
	}
	out := fmt.Sprintf("%s / %s / %s", r(d.p50), r(d.p99), r(d.max))
	if d.of > d.n {
		out += fmt.Sprintf(" of the %d of %d that answered", d.n, d.of)
	}
	return out
}

func (r *fleetResult) note(format string, a ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

func runFleetBench(ctx context.Context, t *testing.T, n int) *fleetResult {
	b := &fleetBench{t: t, ctx: ctx, n: n}
	res := &fleetResult{n: n, procs: max(1, *benchFleetProcs)}
	b.startServers()
	base := b.sampleAll()

	// Cold start: the fleet until every node is registered (every session
	// bound) and every node answers stats through every server.
	start := time.Now()
	b.startFleet(res.procs)
	b.waitFor(3*time.Minute, "every node's session bound", func() (bool, error) {
		total := 0
		for i := range b.servers {
			st, err := b.self(i)
			if err != nil {
				return false, err
			}
			total += int(st.stats["sessions"])
		}
		return total >= n, fmt.Errorf("%d of %d sessions", total, n)
	})
	res.registered = time.Since(start)
	b.loadNodeIDs()
	b.sweep(start, 3*time.Minute, []int{0, 1, 2}, b.nodeIDs)
	res.answered = time.Since(start)
	t.Logf("cold start: %d nodes registered after %v, answering through every server after %v", n, res.registered, res.answered)

	// Idle cost per session.
	idle := b.sampleAll()
	var kibs []float64
	var gs, fds float64
	for i := range b.servers {
		s, b0 := idle[i], base[i]
		sess := float64(s.stats["sessions"])
		res.sessions[i] = int(sess)
		res.rssMiB[i] = float64(s.rssKiB) / 1024
		if sess == 0 {
			continue
		}
		kib := float64((s.heapLive+s.stacks)-(b0.heapLive+b0.stacks)) / 1024 / sess
		kibs = append(kibs, kib)
		gs += float64(s.goroutines-b0.goroutines) / sess
		fds += float64(s.fds-b0.fds) / sess
	}
	if len(kibs) > 0 {
		var sum float64
		for _, k := range kibs {
			sum += k
		}
		res.perSessKiB = sum / float64(len(kibs))
		res.perSessKiBMax = slices.Max(kibs)
		res.perSessGoroutines = gs / float64(len(kibs))
		res.perSessFDs = fds / float64(len(kibs))
	}

	b.steady(res)
	res.load = b.runLoad(*benchFleetRate, *benchFleetLoad, b.holders(), nil)
	t.Logf("load: %+v", res.load.summary())
	if f := failures(res.load.calls, func(loadCall) bool { return true }); f != "" {
		t.Logf("load: failed calls: %s", f)
	}
	if sl := slowCalls(res.load.calls, 100*time.Millisecond); sl != "" {
		t.Logf("load: %s", sl)
	}
	b.logKeepAlives("after the load")
	b.follows(res)
	b.killAndRestart(res)
	return res
}

// startServers writes the three servers' configs (ACLs, mutual TLS on
// both ports, bootstrap_expect 3, joined), starts them, waits for a
// leader and bootstraps ACLs.
func (b *fleetBench) startServers() {
	t := b.t
	pki := newTestPKI(t)
	b.pki = pki
	cli, _ := pki.issue("cli", agent.RoleCLI)
	b.hc = pki.httpClient(t, &cli, "server.global.nomad")
	b.hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 512
	b.hc.Timeout = 0 // each call has its context's bound
	fleetFiles, _ := pki.issue("fleet", agent.RoleClient)
	ports := freePorts(t, 9)
	var joins []string
	for i := 0; i < 3; i++ {
		joins = append(joins, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", ports[i*3+2])))
	}
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		f, _ := pki.issue(fmt.Sprintf("srv%d", i), agent.RoleServer)
		hp, rp, sp := ports[i*3], ports[i*3+1], ports[i*3+2]
		s := &fleetServer{
			name: fmt.Sprintf("srv%d", i),
			url:  fmt.Sprintf("https://127.0.0.1:%d", hp),
			rpc:  fmt.Sprintf("127.0.0.1:%d", rp),
		}
		s.cfg = writeFile(t, dir, "server.hcl", agentHCL(s.name, dir, "WARN", hp, rp, sp, fmt.Sprintf(`
enable_debug = true
server {
  enabled          = true
  bootstrap_expect = 3
  server_join {
    retry_join = [%s]
  }
}
acl {
  enabled = true
}
`, strings.Join(joins, ", "))+pki.tlsHCL(f)))
		b.servers = append(b.servers, s)
	}
	for _, s := range b.servers {
		s.p = startBenchProc(t, s.name, "agent", "-config", s.cfg)
	}
	for i := range b.alive {
		b.alive[i].Store(true)
	}
	b.waitStable()
	var boot struct{ SecretID string }
	b.waitFor(30*time.Second, "ACL bootstrap", func() (bool, error) {
		code, body, err := b.call("PUT", b.servers[0].url+"/v1/acl/bootstrap", nil, false)
		if code != 200 {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		return json.Unmarshal(body, &boot) == nil && boot.SecretID != "", nil
	})
	b.token = boot.SecretID
	b.waitFor(30*time.Second, "the management token on every server", func() (bool, error) {
		for i := range b.servers {
			if _, err := b.self(i); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	b.fleetArgs = []string{
		"-tls-ca-file", pki.caFile, "-tls-cert-file", fleetFiles.cert, "-tls-key-file", fleetFiles.key,
		"-tls-verify-server-hostname", "-token", b.token,
	}
}

// waitStable waits until every live server names the same leader and
// lists 3 voters.
func (b *fleetBench) waitStable() string {
	var leader string
	b.waitFor(60*time.Second, "a leader and 3 voters", func() (bool, error) {
		leader = ""
		for i, s := range b.servers {
			if !b.alive[i].Load() {
				continue
			}
			code, body, err := b.call("GET", s.url+"/v1/status/leader", nil, false)
			var l string
			if code != 200 || json.Unmarshal(body, &l) != nil || l == "" || (leader != "" && l != leader) {
				return false, fmt.Errorf("%s leader: %d %s %v", s.name, code, body, err)
			}
			leader = l
			code, body, err = b.call("GET", s.url+"/v1/status/peers", nil, false)
			var peers []string
			if code != 200 || json.Unmarshal(body, &peers) != nil || len(peers) != 3 {
				return false, fmt.Errorf("%s peers: %d %s %v", s.name, code, body, err)
			}
		}
		return true, nil
	})
	return leader
}

// startFleet starts procs fleet processes sharing the n nodes.
func (b *fleetBench) startFleet(procs int) {
	var addrs []string
	for _, s := range b.servers {
		addrs = append(addrs, s.rpc)
	}
	for k := 0; k < procs; k++ {
		nodes := b.n / procs
		if k < b.n%procs {
			nodes++
		}
		args := append([]string{"fleet", "-servers", strings.Join(addrs, ","), "-nodes", strconv.Itoa(nodes),
			"-data-dir", b.t.TempDir(), "-name-prefix", fmt.Sprintf("fleet%d-", k), "-progress", "10s"}, b.fleetArgs...)
		b.fleets = append(b.fleets, startBenchProc(b.t, fmt.Sprintf("fleet%d", k), args...))
	}
}

// call makes one HTTPS request with the management token (when auth),
// bounded by 30 s.
func (b *fleetBench) call(method, url string, body io.Reader, auth bool) (int, []byte, error) {
	return b.do(30*time.Second, method, url, body, auth)
}

// callTimeout is call with the token and its own bound.
func (b *fleetBench) callTimeout(d time.Duration, method, url string, body io.Reader) (int, []byte, error) {
	return b.do(d, method, url, body, true)
}

func (b *fleetBench) do(d time.Duration, method, url string, body io.Reader, auth bool) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, nil, err
	}
	if auth {
		req.Header.Set("X-Nomad-Token", b.token)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// waitFor polls cond until it holds, the timeout passes (fatal) or the
// benchmark's context ends (fatal).
func (b *fleetBench) waitFor(timeout time.Duration, what string, cond func() (bool, error)) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.t.Fatalf("waiting for %s: gave up after %v (last: %v)", what, timeout, last)
		}
		select { // polling interval, not synchronisation
		case <-time.After(250 * time.Millisecond):
		case <-b.ctx.Done():
		}
	}
}

// logKeepAlives logs each live server's keepalive counters (sessions it
// accepted): pings sent, waits extended, sessions closed unanswered.
func (b *fleetBench) logKeepAlives(when string) {
	var parts []string
	for i := range b.servers {
		if !b.alive[i].Load() {
			continue
		}
		s, err := b.self(i)
		if err != nil {
			b.t.Logf("keepalives %s: %v", when, err)
			return
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d/%d", b.servers[i].name,
			s.stats["rpc_keepalive_pings"], s.stats["rpc_keepalive_extended"], s.stats["rpc_keepalive_timeouts"]))
	}
	b.t.Logf("keepalives %s (pings/extended/closed, since each server started): %s", when, strings.Join(parts, ", "))
}

// self reads server i's /v1/agent/self figures.
func (b *fleetBench) self(i int) (*serverSample, error) {
	code, body, err := b.call("GET", b.servers[i].url+"/v1/agent/self", nil, true)
	if code != 200 {
		return nil, fmt.Errorf("%s agent/self: %d %s %v", b.servers[i].name, code, body, err)
	}
	var self struct {
		Stats map[string]map[string]string `json:"stats"`
	}
	if err := json.Unmarshal(body, &self); err != nil {
		return nil, err
	}
	s := &serverSample{stats: map[string]uint64{}, raft: self.Stats["raft"]}
	for k, v := range self.Stats["tether"] {
		s.stats[k], _ = strconv.ParseUint(v, 10, 64)
	}
	num := func(k string) int64 { v, _ := strconv.ParseInt(self.Stats["runtime"][k], 10, 64); return v }
	s.heapLive, s.stacks, s.goroutines = num("heap_live_bytes"), num("stack_bytes"), num("goroutines")
	s.leader = self.Stats["nomad"]["leader"] == "true"
	return s, nil
}

// sample reads server i after a forced GC (pprof's heap?gc=1, served with
// enable_debug), so the live heap is exact, and its process figures.
func (b *fleetBench) sample(i int) *serverSample {
	if code, body, err := b.call("GET", b.servers[i].url+"/debug/pprof/heap?gc=1", nil, true); code != 200 {
		b.t.Fatalf("%s forced GC: %d %.200s %v", b.servers[i].name, code, body, err)
	}
	s, err := b.self(i)
	if err != nil {
		b.t.Fatal(err)
	}
	pid := b.servers[i].p.pid()
	s.rssKiB = procStatusKiB(pid, "VmRSS")
	s.fds = procFDs(pid)
	s.cpu = procCPU(pid)
	return s
}

func (b *fleetBench) sampleAll() []*serverSample {
	out := make([]*serverSample, len(b.servers))
	for i := range b.servers {
		out[i] = b.sample(i)
	}
	return out
}

// procStatusKiB reads a "kB" field of /proc/PID/status.
func procStatusKiB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// procFDs counts /proc/PID/fd.
func procFDs(pid int) int64 {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return int64(len(ents))
}

// loadNodeIDs waits until the servers list n ready nodes and keeps their
// IDs.
func (b *fleetBench) loadNodeIDs() {
	b.waitFor(2*time.Minute, fmt.Sprintf("%d ready nodes listed", b.n), func() (bool, error) {
		code, body, err := b.call("GET", b.servers[0].url+"/v1/nodes", nil, true)
		if code != 200 {
			return false, fmt.Errorf("%d %.200s %v", code, body, err)
		}
		var nodes []struct{ ID, Status string }
		if err := json.Unmarshal(body, &nodes); err != nil {
			return false, err
		}
		b.nodeIDs = b.nodeIDs[:0]
		for _, nd := range nodes {
			if nd.Status == "ready" {
				b.nodeIDs = append(b.nodeIDs, nd.ID)
			}
		}
		return len(b.nodeIDs) >= b.n, fmt.Errorf("%d of %d nodes ready", len(b.nodeIDs), b.n)
	})
}

// holders maps each node ID to the index of the server its session is on.
func (b *fleetBench) holders() map[string]int {
	out := map[string]int{}
	for i, s := range b.servers {
		if !b.alive[i].Load() {
			continue
		}
		code, body, err := b.call("GET", s.url+"/v1/agent/sessions", nil, true)
		var resp struct{ NodeIDs []string }
		if code != 200 || json.Unmarshal(body, &resp) != nil {
			b.t.Fatalf("%s sessions: %d %.200s %v", s.name, code, body, err)
		}
		for _, id := range resp.NodeIDs {
			out[id] = i
		}
	}
	return out
}

// sweep calls stats of every given node through every given server until
// each answers once; it returns, per server and node, when the node first
// answered (since since; 0: never). Failed pairs are tried
// again after 100 ms.
func (b *fleetBench) sweep(since time.Time, timeout time.Duration, servers []int, nodes []string) [][]time.Duration {
	type pair struct{ s, n int }
	start := since
	todo := make(chan pair, len(servers)*len(nodes))
	for _, n := range rand.Perm(len(nodes)) {
		for si := range servers {
			todo <- pair{si, n}
		}
	}
	out := make([][]time.Duration, len(servers))
	for i := range out {
		out[i] = make([]time.Duration, len(nodes))
	}
	var mu sync.Mutex
	var left atomic.Int64
	left.Store(int64(len(servers) * len(nodes)))
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Load() > 0 {
				var p pair
				select {
				case p = <-todo:
				case <-ctx.Done():
					return
				case <-time.After(50 * time.Millisecond): // the rest are waiting to be retried
					continue
				}
				code, _, _ := b.call("GET", b.servers[servers[p.s]].url+"/v1/client/stats?node_id="+nodes[p.n], nil, true)
				if code == 200 {
					d := time.Since(start)
					mu.Lock()
					out[p.s][p.n] = d
					mu.Unlock()
					left.Add(-1)
					continue
				}
				go func() { // retry later
					select {
					case <-time.After(100 * time.Millisecond):
						todo <- p
					case <-ctx.Done():
					}
				}()
			}
		}()
	}
	wg.Wait()
	if l := left.Load(); l > 0 {
		b.t.Logf("sweep: %d of %d (server, node) pairs never answered within %v", l, len(servers)*len(nodes), timeout)
	}
	return out
}

// steady measures, with the fleet idle, the leader's heartbeat RPCs/s and
// CPU, every server's CPU, and the fleet processes' RSS and CPU per node.
func (b *fleetBench) steady(res *fleetResult) {
	w := *benchFleetSteady
	before := make([]*serverSample, 3)
	for i := range b.servers {
		s, err := b.self(i)
		if err != nil {
			b.t.Fatal(err)
		}
		s.cpu = procCPU(b.servers[i].p.pid())
		before[i] = s
	}
	var fleetCPU0 time.Duration
	for _, f := range b.fleets {
		fleetCPU0 += procCPU(f.pid())
	}
	start := time.Now()
	select {
	case <-time.After(w):
	case <-b.ctx.Done():
		return
	}
	el := time.Since(start).Seconds()
	for i := range b.servers {
		s, err := b.self(i)
		if err != nil {
			b.t.Fatal(err)
		}
		cpu := procCPU(b.servers[i].p.pid())
		res.serverCPU[i] = (cpu - before[i].cpu).Seconds() / el
		if s.leader {
			res.leaderHB = float64(s.stats["leader_heartbeats"]-before[i].stats["leader_heartbeats"]) / el
			res.leaderCPU = res.serverCPU[i]
		}
	}
	var fleetCPU time.Duration
	var rss int64
	for _, f := range b.fleets {
		fleetCPU += procCPU(f.pid())
		rss += procStatusKiB(f.pid(), "VmRSS")
	}
	res.fleetRSSKiB = float64(rss) / float64(b.n)
	res.fleetCPUs = float64((fleetCPU - fleetCPU0).Microseconds()) / el / float64(b.n)
}

// call outcome of the load generator.
type loadCall struct {
	server, node int
	metadata     bool
	at           time.Duration // since the load began
	lat          time.Duration
	ok           bool
	code         int    // HTTP status, 0 for a transport error
	errText      string // the start of a failed call's body or error
}

type loadResult struct {
	rate                int
	dur                 time.Duration
	calls               []loadCall
	skipped             int // calls not sent: too many in flight
	stats, meta         durStats
	hop0, hop1          durStats
	statsErrs, metaErrs int
}

func (l loadResult) summary() string {
	return fmt.Sprintf("%d calls at %d/s over %v: stats p50/p99/max %v (%d errors), metadata %v (%d errors); 0 hops %v, 1 hop %v; %d not sent",
		len(l.calls), l.rate, l.dur, l.stats, l.statsErrs, l.meta, l.metaErrs, l.hop0, l.hop1, l.skipped)
}

// runLoad sends rate calls a second for dur, open loop (each call is sent
// at its time whatever the others are doing; at most 4096 in flight),
// half stats and half metadata, each to a uniformly chosen node through a
// uniformly chosen live server. holders, if set, tells the 0- and 1-hop
// latencies apart. stop, if set, ends the load early when closed.
func (b *fleetBench) runLoad(rate int, dur time.Duration, holders map[string]int, stop <-chan struct{}) loadResult {
	res := loadResult{rate: rate, dur: dur}
	if rate <= 0 || len(b.nodeIDs) == 0 {
		return res
	}
	var mu sync.Mutex
	sem := make(chan struct{}, 4096)
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
loop:
	for {
		select {
		case <-tick.C:
		case <-stop:
			break loop
		case <-b.ctx.Done():
			break loop
		}
		el := time.Since(start)
		if el >= dur {
			break
		}
		due := int(el.Seconds() * float64(rate))
		for ; sent < due; sent++ {
			var live []int
			for i := range b.alive {
				if b.alive[i].Load() {
					live = append(live, i)
				}
			}
			c := loadCall{server: live[rand.IntN(len(live))], node: rand.IntN(len(b.nodeIDs)), metadata: sent%2 == 1}
			select {
			case sem <- struct{}{}:
			default:
				res.skipped++
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ep := "stats"
				if c.metadata {
					ep = "metadata"
				}
				t0 := time.Now()
				c.at = t0.Sub(start)
				code, body, err := b.call("GET", b.servers[c.server].url+"/v1/client/"+ep+"?node_id="+b.nodeIDs[c.node], nil, true)
				c.lat, c.ok, c.code = time.Since(t0), code == 200, code
				if !c.ok {
					c.errText = string(body)
					if err != nil {
						c.errText = err.Error()
					}
					c.errText = failureKind(c.errText)
				}
				mu.Lock()
				res.calls = append(res.calls, c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	res.dur = time.Since(start)
	var stats, meta, hop0, hop1 []time.Duration
	for _, c := range res.calls {
		if c.metadata {
			meta = append(meta, c.lat)
			if !c.ok {
				res.metaErrs++
			}
		} else {
			stats = append(stats, c.lat)
			if !c.ok {
				res.statsErrs++
			}
		}
		if holders != nil && c.ok {
			if h, ok := holders[b.nodeIDs[c.node]]; ok && h == c.server {
				hop0 = append(hop0, c.lat)
			} else {
				hop1 = append(hop1, c.lat)
			}
		}
	}
	res.stats, res.meta, res.hop0, res.hop1 = durStatsOf(stats), durStatsOf(meta), durStatsOf(hop0), durStatsOf(hop1)
	return res
}

// slowCalls says when the calls slower than over were sent (per second
// of the load) and through which server: a p99 of seconds made by a
// stall of everything for a moment reads differently from one spread
// thinly over the run.
func slowCalls(calls []loadCall, over time.Duration) string {
	bySec := map[int]int{}
	byServer := map[int]int{}
	n := 0
	for _, c := range calls {
		if c.lat > over {
			bySec[int(c.at/time.Second)]++
			byServer[c.server]++
			n++
		}
	}
	if n == 0 {
		return ""
	}
	secs := slices.Sorted(maps.Keys(bySec))
	var parts []string
	for _, sec := range secs {
		parts = append(parts, fmt.Sprintf("%ds:%d", sec, bySec[sec]))
	}
	var srv []string
	for _, i := range slices.Sorted(maps.Keys(byServer)) {
		srv = append(srv, fmt.Sprintf("srv%d:%d", i, byServer[i]))
	}
	return fmt.Sprintf("%d calls over %v, sent at %s; entered through %s", n, over, strings.Join(parts, " "), strings.Join(srv, " "))
}

// failureKind shortens a failed call's text to what tells failures
// apart: up to the first colon or digit run that names a node or port.
func failureKind(s string) string {
	if i := strings.IndexAny(s, ":\n"); i > 0 {
		s = s[:i]
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// failures counts the failed calls by status and kind, most first.
func failures(calls []loadCall, keep func(loadCall) bool) string {
	counts := map[string]int{}
	for _, c := range calls {
		if !c.ok && keep(c) {
			counts[fmt.Sprintf("%d %s", c.code, c.errText)]++
		}
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return counts[kinds[i]] > counts[kinds[j]] })
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d× %q", counts[k], k))
	}
	return strings.Join(parts, ", ")
}

// follows runs a mock_driver job with one allocation on each of F nodes,
// writing a line a second, opens F concurrent follows of their stdout
// spread over the three servers, and reports the servers' memory per
// follow.
func (b *fleetBench) follows(res *fleetResult) {
	f := min(*benchFleetFollows, b.n)
	if f <= 0 {
		return
	}
	// No distinct_hosts: the scheduler puts each allocation on the least
	// loaded node, so F allocations land on F nodes anyway, and the
	// constraint's check grows with the allocations placed so far.
	job := fmt.Sprintf(`{"Job":{"ID":"fleet-logs","Type":"service","Datacenters":["dc1"],
		"TaskGroups":[{"Name":"g","Count":%d,"Tasks":[{"Name":"t","Driver":"mock_driver",
		"Config":{"run_for":"24h","stdout_string":"line of the fleet benchmark\n","stdout_repeat":1000000,"stdout_repeat_duration":"1s"},
		"Resources":{"CPU":10,"MemoryMB":10}}]}]}}`, f)
	placed := time.Now()
	code, body, err := b.callTimeout(5*time.Minute, "PUT", b.servers[0].url+"/v1/jobs", strings.NewReader(job))
	res.placeJob = time.Since(placed)
	if code != 200 {
		res.note("registering the %d-allocation log job failed after %v: %d %.200s %v; no follows measured", f, res.placeJob.Round(time.Second), code, body, err)
		return
	}
	var allocs []string
	deadline := time.Now().Add(5 * time.Minute)
	for b.ctx.Err() == nil {
		code, body, err := b.call("GET", b.servers[1].url+"/v1/job/fleet-logs/allocations", nil, true)
		var as []struct{ ID, NodeID, ClientStatus string }
		if code == 200 && json.Unmarshal(body, &as) == nil {
			allocs = allocs[:0]
			nodes := map[string]bool{}
			for _, a := range as {
				if a.ClientStatus == "running" {
					allocs = append(allocs, a.ID)
					nodes[a.NodeID] = true
				}
			}
			res.followNodes = len(nodes)
			if len(allocs) >= f {
				break
			}
		} else {
			b.t.Logf("fleet-logs allocations: %d %.200s %v", code, body, err)
		}
		if time.Now().After(deadline) {
			res.note("only %d of %d log allocations running after 5 min", len(allocs), f)
			break
		}
		<-time.After(time.Second) // polling interval
	}
	res.runAllocs = time.Since(placed)
	if len(allocs) == 0 {
		return
	}
	f = len(allocs)
	b.t.Logf("follows: job of %d registered in %v, running on %d nodes after %v", f, res.placeJob.Round(time.Millisecond), res.followNodes, res.runAllocs.Round(time.Millisecond))
	before := b.sampleAll()

	// The follows' connections are their own: one each, none reused.
	tr := b.hc.Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(b.ctx)
	var wg sync.WaitGroup
	var gotData, failed atomic.Int64
	var whyMu sync.Mutex
	why := map[string]int{} // why follows failed to open
	for k, id := range allocs[:f] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := b.servers[k%3].url + "/v1/client/fs/logs/" + id + "?task=t&type=stdout&follow=true&plain=true&origin=end&offset=0"
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			req.Header.Set("X-Nomad-Token", b.token)
			resp, err := hc.Do(req)
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
				reason := ""
				if err != nil {
					reason = err.Error()
					if i := strings.LastIndex(reason, ": "); i >= 0 {
						reason = reason[i+2:] // the cause, without the URL
					}
				} else {
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
					reason = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
					resp.Body.Close()
				}
				whyMu.Lock()
				why[reason]++
				whyMu.Unlock()
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 4096)
			first := true
			for {
				m, err := resp.Body.Read(buf)
				if m > 0 && first {
					first = false
					gotData.Add(1)
				}
				if err != nil {
					return
				}
			}
		}()
	}
	deadline = time.Now().Add(2 * time.Minute)
	for gotData.Load()+failed.Load() < int64(f) && time.Now().Before(deadline) && b.ctx.Err() == nil {
		<-time.After(250 * time.Millisecond) // polling interval
	}
	after := b.sampleAll()
	res.follows = int(gotData.Load())
	if fl := failed.Load(); fl > 0 {
		whyMu.Lock()
		var parts []string
		for r, c := range why {
			parts = append(parts, fmt.Sprintf("%d× %q", c, r))
		}
		whyMu.Unlock()
		sort.Strings(parts)
		res.note("%d of %d follows failed to open: %s", fl, f, strings.Join(parts, ", "))
	}
	var dHeap, dRSS, dG float64
	for i := range after {
		dHeap += float64((after[i].heapLive + after[i].stacks) - (before[i].heapLive + before[i].stacks))
		dRSS += float64(after[i].rssKiB-before[i].rssKiB) * 1024
		dG += float64(after[i].goroutines - before[i].goroutines)
	}
	if res.follows > 0 {
		res.followKiB = dHeap / 1024 / float64(res.follows)
		res.followRS = dRSS / 1024 / float64(res.follows)
		res.followGoroutines = dG / float64(res.follows)
	}
	cancel()
	wg.Wait()
	b.t.Logf("follows: %d with data, %.1f KiB heap+stacks, %.1f KiB RSS, %.1f goroutines per follow (three servers together)",
		res.follows, res.followKiB, res.followRS, res.followGoroutines)
}

// killAndRestart kills -9 the server holding the most sessions with the
// load running, measures the reconnect storm, restarts it and counts
// sessions per server after the settle time.
func (b *fleetBench) killAndRestart(res *fleetResult) {
	t := b.t
	holders := b.holders()
	counts := [3]int{}
	for _, h := range holders {
		counts[h]++
	}
	victim := 0
	for i := range counts {
		if counts[i] > counts[victim] {
			victim = i
		}
	}
	res.killed, res.killedHeld = victim, counts[victim]
	var survivors []int
	for i := range b.servers {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	wasOnVictim := map[int]bool{}
	for k, id := range b.nodeIDs {
		if holders[id] == victim {
			wasOnVictim[k] = true
		}
	}

	// Counters of the survivors, once a second, from before the kill.
	type tick struct {
		at                 time.Duration
		bound, regs, raftC uint64
	}
	series := make([][]tick, len(b.servers))
	samplerStop := make(chan struct{})
	samplerDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(samplerDone)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			for _, i := range survivors {
				s, err := b.self(i)
				if err != nil {
					continue
				}
				commit, _ := strconv.ParseUint(s.raft["commit_index"], 10, 64)
				series[i] = append(series[i], tick{time.Since(start), s.stats["sessions_bound"], s.stats["node_registrations"], commit})
			}
			select {
			case <-tk.C:
			case <-samplerStop:
				return
			case <-b.ctx.Done():
				return
			}
		}
	}()

	loadStop := make(chan struct{})
	loadDone := make(chan loadResult, 1)
	loadStart := time.Now()
	go func() { loadDone <- b.runLoad(*benchFleetRate, 10*time.Minute, holders, loadStop) }()
	select { // the load runs 5 s before the kill
	case <-time.After(5 * time.Second):
	case <-b.ctx.Done():
	}
	killedAt := time.Now()
	b.alive[victim].Store(false)
	b.servers[victim].p.kill()
	t.Logf("kill -9 of %s (%d of %d sessions) with the load running", b.servers[victim].name, counts[victim], b.n)
	// The nodes that were on the killed server first, timed from the
	// kill; then every node through both survivors, once.
	var orphans []string
	for k := range b.nodeIDs {
		if wasOnVictim[k] {
			orphans = append(orphans, b.nodeIDs[k])
		}
	}
	answered := b.sweep(killedAt, 2*time.Minute, survivors, orphans)
	stormEnd := time.Now()
	for si := range survivors {
		var ds []time.Duration
		for _, d := range answered[si] {
			if d == 0 {
				res.unanswered++
				continue
			}
			ds = append(ds, d)
		}
		res.failover[si] = durStatsOf(ds)
		res.failover[si].of = len(orphans)
	}
	all := b.sweep(time.Now(), time.Minute, survivors, b.nodeIDs)
	for si := range survivors {
		for k, d := range all[si] {
			if d == 0 && !wasOnVictim[k] {
				res.unanswered++
			}
		}
	}
	select { // the load runs 5 s past the storm
	case <-time.After(5 * time.Second):
	case <-b.ctx.Done():
	}
	close(loadStop)
	load := <-loadDone
	close(samplerStop)
	<-samplerDone
	killOff := killedAt.Sub(loadStart)
	for _, c := range load.calls {
		if c.at < killOff {
			if c.server == victim && c.at+c.lat >= killOff && !c.ok {
				res.viaKilled++
			}
			continue
		}
		if c.server == victim {
			res.viaKilled++
			continue
		}
		if wasOnVictim[c.node] {
			res.callsKilled++
			if !c.ok {
				res.failedKilled++
			}
		} else {
			res.callsOthers++
			if !c.ok {
				res.failedOthers++
			}
		}
	}
	if f := failures(load.calls, func(c loadCall) bool { return c.at >= killOff && c.server != victim }); f != "" {
		t.Logf("kill: failed calls through the survivors: %s", f)
	}
	// Peaks per second on the survivors, from the kill to the storm's end.
	kOff, eOff := killedAt.Sub(start), stormEnd.Sub(start)+time.Second
	var raftSum float64
	var raftN int
	for _, i := range survivors {
		s := series[i]
		for j := 1; j < len(s); j++ {
			if s[j].at < kOff || s[j-1].at > eOff {
				continue
			}
			dt := (s[j].at - s[j-1].at).Seconds()
			res.peakSessions = math.Max(res.peakSessions, float64(s[j].bound-s[j-1].bound)/dt)
			res.peakRegs = math.Max(res.peakRegs, float64(s[j].regs-s[j-1].regs)/dt)
			r := float64(s[j].raftC-s[j-1].raftC) / dt
			res.peakRaft = math.Max(res.peakRaft, r)
			if i == survivors[0] {
				raftSum += r
				raftN++
			}
		}
	}
	if raftN > 0 {
		res.meanRaft = raftSum / float64(raftN)
	}
	t.Logf("kill: the killed server's nodes answered through %s in %v, through %s in %v (p50/p99/max); %d (server, node) pairs never answered; failed calls: %d of %d to nodes of the killed server, %d of %d to others; %d via the killed server",
		b.servers[survivors[0]].name, res.failover[0], b.servers[survivors[1]].name, res.failover[1], res.unanswered,
		res.failedKilled, res.callsKilled, res.failedOthers, res.callsOthers, res.viaKilled)
	b.logKeepAlives("after the kill")

	// Restart and let the fleet settle, with a light load running.
	b.servers[victim].p = startBenchProc(t, b.servers[victim].name+"-restarted", "agent", "-config", b.servers[victim].cfg)
	b.alive[victim].Store(true)
	b.waitStable()
	res.settle = *benchFleetSettle
	watchStop, watchDone := make(chan struct{}), make(chan struct{})
	go func() { // sessions per server every 30 s, for the log
		defer close(watchDone)
		restarted := time.Now()
		for {
			select {
			case <-time.After(30 * time.Second):
			case <-watchStop:
				return
			}
			var per []string
			for i := range b.servers {
				if s, err := b.self(i); err == nil {
					per = append(per, strconv.FormatUint(s.stats["sessions"], 10))
				}
			}
			t.Logf("restart +%v: sessions per server %s", time.Since(restarted).Round(time.Second), strings.Join(per, " / "))
		}
	}()
	settleLoad := b.runLoad(*benchFleetSettleRt, res.settle, nil, nil)
	close(watchStop)
	<-watchDone
	res.settleCalls = len(settleLoad.calls)
	res.settleErrors = settleLoad.statsErrs + settleLoad.metaErrs
	if f := failures(settleLoad.calls, func(loadCall) bool { return true }); f != "" {
		t.Logf("restart: failed calls while settling: %s", f)
	}
	h := b.holders()
	res.after = [3]int{}
	for _, s := range h {
		res.after[s]++
	}
	even := float64(b.n) / 3
	for _, c := range res.after {
		res.evenDeviation = math.Max(res.evenDeviation, math.Abs(float64(c)-even)/even*100)
	}
	t.Logf("restart: sessions per server after %v: %v (max %.0f%% off even); %d of %d calls failed meanwhile",
		res.settle, res.after, res.evenDeviation, res.settleErrors, res.settleCalls)
}

// fleetTable prints the results, one column per fleet size, targets (at
// 10,000 nodes) beside.
func fleetTable(rs []*fleetResult) string {
	var w bytes.Buffer
	sort.Slice(rs, func(i, j int) bool { return rs[i].n < rs[j].n })
	fmt.Fprintf(&w, "| figure |")
	for _, r := range rs {
		fmt.Fprintf(&w, " %d nodes |", r.n)
	}
	fmt.Fprintf(&w, " target at 10,000 |\n|---|")
	for range rs {
		fmt.Fprintf(&w, "---|")
	}
	fmt.Fprintf(&w, "---|\n")
	row := func(name, target string, f func(r *fleetResult) string) {
		fmt.Fprintf(&w, "| %s |", name)
		for _, r := range rs {
			fmt.Fprintf(&w, " %s |", f(r))
		}
		fmt.Fprintf(&w, " %s |\n", target)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	row("sessions per server after cold start", "", func(r *fleetResult) string {
		return fmt.Sprintf("%d / %d / %d", r.sessions[0], r.sessions[1], r.sessions[2])
	})
	row("heap+stacks per session, KiB (mean; max of servers)", fmt.Sprintf("≤ %d", targetKiBPerSession), func(r *fleetResult) string {
		return fmt.Sprintf("%.1f; %.1f", r.perSessKiB, r.perSessKiBMax)
	})
	row("goroutines per session", "", func(r *fleetResult) string { return fmt.Sprintf("%.2f", r.perSessGoroutines) })
	row("file descriptors per session", "", func(r *fleetResult) string { return fmt.Sprintf("%.2f", r.perSessFDs) })
	row("RSS per server, MiB", fmt.Sprintf("< %d each", targetServerRSSMiB), func(r *fleetResult) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f", r.rssMiB[0], r.rssMiB[1], r.rssMiB[2])
	})
	row("cold start: all registered", "", func(r *fleetResult) string { return ms(r.registered) })
	row("cold start: all answer through every server", fmt.Sprintf("≤ %v", targetColdStart), func(r *fleetResult) string { return ms(r.answered) })
	row("stats p50 / p99 / max", fmt.Sprintf("p99 ≤ %v", targetStatsP99), func(r *fleetResult) string { return r.load.stats.String() })
	row("metadata p50 / p99 / max", "", func(r *fleetResult) string { return r.load.meta.String() })
	row("  of which 0 extra hops", "", func(r *fleetResult) string { return r.load.hop0.String() })
	row("  of which 1 extra hop", "", func(r *fleetResult) string { return r.load.hop1.String() })
	row("load: calls sent, errors, not sent", "0 errors", func(r *fleetResult) string {
		return fmt.Sprintf("%d at %d/s, %d, %d", len(r.load.calls), r.load.rate, r.load.statsErrs+r.load.metaErrs, r.load.skipped)
	})
	row("log follows: heap+stacks per follow, KiB (RSS)", "", func(r *fleetResult) string {
		if r.follows == 0 {
			return "not measured"
		}
		return fmt.Sprintf("%.1f (%.1f), %d follows", r.followKiB, r.followRS, r.follows)
	})
	row("log follows: goroutines per follow", "", func(r *fleetResult) string { return fmt.Sprintf("%.1f", r.followGoroutines) })
	row("log job: registration (placement) / all running, on nodes", "", func(r *fleetResult) string {
		return fmt.Sprintf("%s / %s, %d", ms(r.placeJob), ms(r.runAllocs), r.followNodes)
	})
	row("kill -9: sessions on the killed server", "", func(r *fleetResult) string {
		return fmt.Sprintf("srv%d: %d", r.killed, r.killedHeld)
	})
	for si, name := range []string{"A", "B"} {
		row("kill -9: a node of the killed server answers via survivor "+name+", p50 / p99 / max", fmt.Sprintf("max ≤ %v", targetFailover),
			func(r *fleetResult) string { return r.failover[si].String() })
	}
	row("kill -9: (survivor, node) pairs that never answered", "0", func(r *fleetResult) string { return strconv.Itoa(r.unanswered) })
	row("kill -9: peak new sessions/s, registrations/s (one survivor)", "", func(r *fleetResult) string {
		return fmt.Sprintf("%.0f, %.0f", r.peakSessions, r.peakRegs)
	})
	row("kill -9: raft applies/s, peak (mean)", "", func(r *fleetResult) string {
		return fmt.Sprintf("%.0f (%.1f)", r.peakRaft, r.meanRaft)
	})
	row("kill -9: failed calls, nodes of the killed server", "", func(r *fleetResult) string {
		return fmt.Sprintf("%d of %d", r.failedKilled, r.callsKilled)
	})
	row("kill -9: failed calls, other nodes", "0", func(r *fleetResult) string {
		return fmt.Sprintf("%d of %d", r.failedOthers, r.callsOthers)
	})
	row("kill -9: calls sent to the killed server", "", func(r *fleetResult) string { return strconv.Itoa(r.viaKilled) })
	row("restart: sessions per server after settle", fmt.Sprintf("each ±%d%% of even", targetEvenPct), func(r *fleetResult) string {
		return fmt.Sprintf("%d / %d / %d after %v (%.0f%% off)", r.after[0], r.after[1], r.after[2], r.settle, r.evenDeviation)
	})
	row("restart: failed calls while settling", "", func(r *fleetResult) string {
		return fmt.Sprintf("%d of %d", r.settleErrors, r.settleCalls)
	})
	row("steady: leader heartbeat RPCs/s, leader CPU", "", func(r *fleetResult) string {
		return fmt.Sprintf("%.1f/s, %.1f%% of a core", r.leaderHB, r.leaderCPU*100)
	})
	row("steady: CPU per server, % of a core", "", func(r *fleetResult) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f", r.serverCPU[0]*100, r.serverCPU[1]*100, r.serverCPU[2]*100)
	})
	row("fleet process: RSS per node KiB, CPU per node µs/s", "≤ 64 KiB", func(r *fleetResult) string {
		return fmt.Sprintf("%.1f, %.1f (%d proc)", r.fleetRSSKiB, r.fleetCPUs, r.procs)
	})
	for _, r := range rs {
		for _, n := range r.notes {
			fmt.Fprintf(&w, "\n%d nodes: %s\n", r.n, n)
		}
	}
	return w.String()
}
