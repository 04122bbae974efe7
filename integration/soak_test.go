package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/agent"
)

var soakFor = flag.Duration("soak", 0, "run TestSoak for this long (make soak; 0 skips it)")

// soakProc is one process of the soak: its config, for restarts, and
// how to reach it.
type soakProc struct {
	name, cfg string
	p         *benchProc
	mu        sync.Mutex
}

func (s *soakProc) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p.pid()
}

// restart stops the process (SIGTERM) and starts it again on the same
// config and data dir.
func (s *soakProc) restart(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.stop()
	s.p = startBenchProc(t, s.name, "agent", "-config", s.cfg)
}

// loadGate pauses the load so that figures are taken on quiet processes:
// while paused, loops wait and follows' requests are cancelled.
type loadGate struct {
	base    context.Context
	mu      sync.Mutex
	ctx     context.Context // cancelled when the load pauses
	cancel  context.CancelFunc
	resumed chan struct{} // closed while the load runs
}

func newLoadGate(base context.Context) *loadGate {
	g := &loadGate{base: base, resumed: make(chan struct{})}
	g.ctx, g.cancel = context.WithCancel(base)
	close(g.resumed)
	return g
}

func (g *loadGate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cancel()
	g.resumed = make(chan struct{})
}

func (g *loadGate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ctx, g.cancel = context.WithCancel(g.base)
	close(g.resumed)
}

// wait returns the context of the running load, waiting while it is
// paused; false once stop is closed.
func (g *loadGate) wait(stop <-chan struct{}) (context.Context, bool) {
	for {
		g.mu.Lock()
		ctx, ch := g.ctx, g.resumed
		g.mu.Unlock()
		select {
		case <-stop:
			return nil, false
		default:
		}
		if ctx.Err() == nil {
			return ctx, true
		}
		select {
		case <-stop:
			return nil, false
		case <-ch:
		}
	}
}

// soakFigures is one process at one moment.
type soakFigures struct {
	rssKiB, goroutines, fds int64
	// anonKiB and fileKiB split rssKiB: the heap and stacks, and the
	// pages of the binary (shared by every process of it, and growing as
	// more of its code runs).
	anonKiB, fileKiB int64
	role             string         // servers: "leader" or "follower"; nodes: "node"
	fdKinds          map[string]int // what the fds are (fdKinds)
	goroutineProfile string         // pprof goroutine?debug=1
	heapProfile      string         // pprof heap?gc=1&debug=1, taken just before
}

// soak is one soak run: three servers and three nodes as processes with
// mutual TLS and ACLs (the fleet benchmark's servers), and the load.
type soak struct {
	*fleetBench
	gate    *loadGate
	nodes   []*soakProc
	srvs    []*soakProc
	nodeIDs []string
	allocs  []string

	calls, failed atomic.Int64
	// failWindows counts failures inside an injected window (a restart
	// under way), which are expected.
	inWindow  atomic.Bool
	failedIn  atomic.Int64
	failNotes sync.Map // kind → count (*atomic.Int64)

	metaMu    sync.Mutex
	metaAcked map[string]map[string]int // node ID → key → last value acknowledged
	metaN     map[string]int            // node ID → writes acknowledged

	// portNames names the agents' ports, to tell what a socket is.
	portNames map[int]string

	lines, lineDups, lineGaps, followRestarts atomic.Int64
	// exact counts the lines the whole-log followers read, taskStarts
	// the times a task's numbering began again at 0 (its task restarted).
	exact, exactDups, exactGaps, taskStarts atomic.Int64
}

// TestSoak is `make soak`: for -soak=DURATION, three servers and three
// nodes under a mixed load (small calls, 100 follows, bulk reads,
// metadata writes), a node restarted every DURATION/6 and a server every
// DURATION/6 (5 minutes at 30m). Each process's RSS, goroutines and fds
// are taken after warm-up (DURATION/5, at least a minute) and at the end,
// both times with the load paused and the nodes spread one per server;
// the end must be within 10 % of the warm-up, a server's of the warm-up
// figures of its role then (leader or follower), each process sampled
// after a collection. Metadata writes go round 64 keys per node, and each
// key reads back its last acknowledged write (or a later one); every
// follow's lines come in order with
// none twice, and the three whole-log follows read every line once
// across rotations and restarts. Calls may fail only inside a restart's
// window, which lasts until every node answers through every server.
// It prints a verdict and a table.
func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("soak: set -soak=DURATION (make soak SOAK=30m)")
	}
	ctx, cancel := benchContext(t)
	defer cancel()
	s := &soak{fleetBench: &fleetBench{t: t, ctx: ctx}, metaAcked: map[string]map[string]int{}, metaN: map[string]int{}, gate: newLoadGate(ctx)}
	s.startServers()
	for _, fs := range s.servers {
		s.srvs = append(s.srvs, &soakProc{name: fs.name, cfg: fs.cfg, p: fs.p})
	}
	s.startNodes()
	s.startJob()

	total := *soakFor
	warm := max(total/5, time.Minute)
	restartEvery := max(total/6, 30*time.Second)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range []func(<-chan struct{}){s.smallCalls, s.bulkReads, s.metaWrites} {
		wg.Add(1)
		go func() { defer wg.Done(); f(stop) }()
	}
	// 100 follows: one per task that must read every line exactly once
	// across rotations and restarts (it resumes where it was, as
	// `tether alloc logs -f` does), and 97 from the end.
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i < len(s.allocs) {
				s.followAll(stop, i)
			} else {
				s.follow(stop, i)
			}
		}()
	}

	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	wait(warm)
	base := s.quietFigures()
	for _, p := range append(append([]*soakProc{}, s.srvs...), s.nodes...) {
		f := base[p.name]
		t.Logf("soak: warm after %v: %s %s RSS %d KiB (anon %d, file %d; Go %s), %d goroutines, %d fds %v", warm, p.name, f.role,
			f.rssKiB, f.anonKiB, f.fileKiB, f.goMemory(), f.goroutines, f.fds, f.fdKinds)
	}
	start := time.Now()
	end := start.Add(total - warm)
	nextNode, nextServer := start.Add(restartEvery/2), start.Add(restartEvery)
	restarts := 0
	for time.Now().Before(end) && ctx.Err() == nil {
		now := time.Now()
		switch {
		case !now.Before(nextNode):
			p := s.nodes[restarts%len(s.nodes)]
			s.window(func() { p.restart(t); s.waitNodesReady() })
			t.Logf("soak: restarted %s", p.name)
			nextNode = nextNode.Add(restartEvery)
			restarts++
		case !now.Before(nextServer):
			p := s.srvs[restarts%len(s.srvs)]
			s.window(func() { p.restart(t); s.waitStable(); s.waitNodesReady() })
			t.Logf("soak: restarted %s", p.name)
			nextServer = nextServer.Add(restartEvery)
			restarts++
		default:
			wait(time.Second)
		}
	}
	final := s.quietFigures()
	close(stop)
	wg.Wait()
	s.verifyMeta()
	s.report(base, final)
}

// window runs an injected fault; calls failing meanwhile are expected.
// It lasts until every node answers through every server again.
func (s *soak) window(f func()) {
	s.inWindow.Store(true)
	defer s.inWindow.Store(false)
	f()
	s.until(90*time.Second, "every node answering through every server", func() bool {
		for i := range s.servers {
			for _, id := range s.ids() {
				if code, _, _ := s.callTimeout(10*time.Second, "GET", s.serverURL(i)+"/v1/client/stats?node_id="+id, nil); code != 200 {
					return false
				}
			}
		}
		return true
	})
}

// until polls cond for at most d; past it the soak goes on, and says so.
func (s *soak) until(d time.Duration, what string, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			s.t.Logf("soak: no %s after %v; going on", what, d)
			return false
		}
		select {
		case <-s.ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return true
}

// quietFigures pauses the load, waits until each server holds one node
// session (the servers rebalance every minute) and the streams and pooled
// data connections of the load have idled out, and samples every
// process: figures taken so at warm-up and at the end compare the same
// state.
func (s *soak) quietFigures() map[string]soakFigures {
	s.gate.pause()
	defer s.gate.resume()
	s.until(3*time.Minute, "one node session per server", func() bool {
		for i := range s.servers {
			st, err := s.self(i)
			if err != nil || st.stats["sessions"] != 1 {
				return false
			}
		}
		return true
	})
	select {
	case <-s.ctx.Done():
	case <-time.After(25 * time.Second): // IdleStreamTimeout 5 s, DataPoolIdle 20 s
	}
	// RSS after a burst holds the heap the burst grew until a collection
	// and the runtime's background scavenger give it back: a process
	// restarted into the catch-up of 33 follows would otherwise be held
	// to its peak. So every process collects (as an operator asks with
	// pprof's gc=1) and is given time to return the pages.
	heaps := map[int]string{}
	for i := range len(s.srvs) + len(s.nodes) {
		if code, body, _ := s.callTimeout(30*time.Second, "GET", s.pprofURL(i, "heap?gc=1&debug=1"), nil); code == 200 {
			heaps[i] = string(body)
		}
	}
	select {
	case <-s.ctx.Done():
	case <-time.After(10 * time.Second): // the scavenger's pace; nothing to wait on
	}
	out := s.figures()
	for i, p := range append(append([]*soakProc{}, s.srvs...), s.nodes...) {
		f := out[p.name]
		f.heapProfile = heaps[i]
		out[p.name] = f
	}
	return out
}

// pprofURL is the address of profile (with its query) of process i: a
// server's own, or a node's through its server.
func (s *soak) pprofURL(i int, profile string) string {
	if i < len(s.srvs) {
		return s.servers[i].url + "/v1/agent/pprof/" + profile
	}
	sep := "?"
	if strings.Contains(profile, "?") {
		sep = "&"
	}
	return s.serverURL(i) + "/v1/agent/pprof/" + profile + sep + "node_id=" + s.ids()[i-len(s.srvs)]
}

// call makes one request with the token, counting it.
func (s *soak) call(method, url string, body io.Reader) (int, []byte, error) {
	inWin := s.inWindow.Load()
	code, b, err := s.callTimeout(30*time.Second, method, url, body)
	s.calls.Add(1)
	if code != 200 {
		if inWin || s.inWindow.Load() {
			s.failedIn.Add(1)
		} else {
			s.failed.Add(1)
			kind := fmt.Sprintf("%d %.60s", code, strings.TrimSpace(string(b)))
			if err != nil {
				kind = fmt.Sprintf("%d %.60v", code, err)
			}
			v, _ := s.failNotes.LoadOrStore(kind, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
	}
	return code, b, err
}

func (s *soak) serverURL(i int) string { return s.servers[i%len(s.servers)].url }

func (s *soak) startNodes() {
	t := s.t
	pki := s.pki
	var addrs []string
	for _, fs := range s.servers {
		addrs = append(addrs, fmt.Sprintf("%q", fs.rpc))
	}
	ports := freePorts(t, 9)
	s.portNames = map[int]string{}
	for _, fs := range s.servers {
		for _, a := range []string{fs.rpc, strings.TrimPrefix(fs.url, "https://")} {
			s.portNames[portOf(t, a)] = fs.name + " " + map[bool]string{true: "rpc", false: "http"}[a == fs.rpc]
		}
	}
	for i := 0; i < 3; i++ {
		s.portNames[ports[i*3]] = fmt.Sprintf("node%d http", i)
	}
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		f, _ := pki.issue(fmt.Sprintf("node%d", i), agent.RoleClient)
		cfg := writeFile(t, dir, "client.hcl", agentHCL(fmt.Sprintf("node%d", i), dir, "WARN", ports[i*3], ports[i*3+1], ports[i*3+2], fmt.Sprintf(`
enable_debug = true
client {
  enabled = true
  servers = [%s]
}
acl {
  enabled = true
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, strings.Join(addrs, ", "))+pki.tlsHCL(f)))
		name := fmt.Sprintf("node%d", i)
		s.nodes = append(s.nodes, &soakProc{name: name, cfg: cfg, p: startBenchProc(t, name, "agent", "-config", cfg)})
	}
	s.waitNodesReady()
}

// waitNodesReady waits until a server lists the three nodes ready, and
// keeps their IDs in node-name order.
func (s *soak) waitNodesReady() {
	s.waitFor(60*time.Second, "3 ready nodes", func() (bool, error) {
		code, body, err := s.fleetBench.call("GET", s.serverURL(0)+"/v1/nodes", nil, true)
		var nodes []struct{ ID, Name, Status string }
		if code != 200 || json.Unmarshal(body, &nodes) != nil {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		ids := make([]string, 3)
		ready := 0
		for _, n := range nodes {
			if i, err := strconv.Atoi(strings.TrimPrefix(n.Name, "node")); err == nil && i < 3 && n.Status == "ready" {
				ids[i] = n.ID
				ready++
			}
		}
		if ready == 3 {
			s.metaMu.Lock()
			s.nodeIDs = ids
			s.metaMu.Unlock()
		}
		return ready == 3, fmt.Errorf("nodes: %s", body)
	})
}

// startJob runs one task per node that writes numbered lines, 40 a
// second, into logs rotated at 1 MiB.
func (s *soak) startJob() {
	job := `{"Job":{"ID":"soak","Type":"service","Datacenters":["dc1"],
		"Constraints":[{"Operand":"distinct_hosts","RTarget":"true"}],
		"TaskGroups":[{"Name":"g","Count":3,"Tasks":[{"Name":"w","Driver":"raw_exec",
		"Config":{"command":"/bin/sh","args":["-c","i=0; pad=$(printf '%0200d' 0); while :; do echo \"seq $i $pad\"; i=$((i+1)); sleep 0.025; done"]},
		"LogConfig":{"MaxFiles":5,"MaxFileSizeMB":1},
		"Resources":{"CPU":100,"MemoryMB":64}}]}]}}`
	if code, body, err := s.fleetBench.call("PUT", s.serverURL(1)+"/v1/jobs", strings.NewReader(job), true); code != 200 {
		s.t.Fatalf("soak job: %d %s %v", code, body, err)
	}
	s.waitFor(60*time.Second, "3 running allocations", func() (bool, error) {
		code, body, err := s.fleetBench.call("GET", s.serverURL(0)+"/v1/job/soak/allocations", nil, true)
		var allocs []struct{ ID, ClientStatus string }
		if code != 200 || json.Unmarshal(body, &allocs) != nil {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		s.allocs = s.allocs[:0]
		for _, a := range allocs {
			if a.ClientStatus == "running" {
				s.allocs = append(s.allocs, a.ID)
			}
		}
		return len(s.allocs) == 3, fmt.Errorf("allocs: %s", body)
	})
}

// every runs f(i) for i = 0, 1, ... every d while the load runs, until
// stop is closed.
func (s *soak) every(stop <-chan struct{}, d time.Duration, f func(i int)) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if _, ok := s.gate.wait(stop); !ok {
			return
		}
		f(i)
	}
}

// smallCalls makes stats, metadata and allocation-stats calls in turn
// through every server, about 20 a second.
func (s *soak) smallCalls(stop <-chan struct{}) {
	s.every(stop, 50*time.Millisecond, func(i int) {
		ids := s.ids()
		switch i % 3 {
		case 0:
			s.call("GET", s.serverURL(i)+"/v1/client/stats?node_id="+ids[i%3], nil)
		case 1:
			s.call("GET", s.serverURL(i)+"/v1/client/metadata?node_id="+ids[i%3], nil)
		case 2:
			s.call("GET", s.serverURL(i)+"/v1/client/allocation/"+s.allocs[i%3]+"/stats", nil)
		}
	})
}

func (s *soak) ids() []string {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	return s.nodeIDs
}

// bulkReads reads 256 KiB of a task's newest log file through a server,
// twice a second. The newest, found with fs/ls each time: rotation
// deletes the oldest files, so a fixed name (w.stdout.0) is gone after a
// while and its 404s are the load's fault, not the system's.
func (s *soak) bulkReads(stop <-chan struct{}) {
	s.every(stop, 500*time.Millisecond, func(i int) {
		base, alloc := s.serverURL(i), s.allocs[i%3]
		code, b, _ := s.call("GET", fmt.Sprintf("%s/v1/client/fs/ls/%s?path=alloc/logs", base, alloc), nil)
		var files []struct{ Name string }
		if code != 200 || json.Unmarshal(b, &files) != nil {
			return
		}
		newest := -1
		for _, f := range files {
			if n, ok := logIndex(f.Name, "w", "stdout"); ok && n > newest {
				newest = n
			}
		}
		if newest < 0 {
			return
		}
		s.call("GET", fmt.Sprintf("%s/v1/client/fs/readat/%s?path=alloc/logs/w.stdout.%d&offset=0&limit=262144", base, alloc, newest), nil)
	})
}

// metaWrites sets a new metadata key on a node through a server, five a
// second, and remembers the ones acknowledged.
func (s *soak) metaWrites(stop <-chan struct{}) {
	s.every(stop, 200*time.Millisecond, func(i int) {
		id := s.ids()[i%3]
		key := fmt.Sprintf("soak_%d", (i/3)%soakMetaKeys)
		code, _, _ := s.call("POST", s.serverURL(i)+"/v1/client/metadata", strings.NewReader(fmt.Sprintf(`{"NodeID":%q,"Meta":{%q:"%d"}}`, id, key, i)))
		if code == 200 {
			s.metaMu.Lock()
			if s.metaAcked[id] == nil {
				s.metaAcked[id] = map[string]int{}
			}
			s.metaAcked[id][key] = i
			s.metaN[id]++
			s.metaMu.Unlock()
		}
	})
}

// soakMetaKeys is how many metadata keys each node's writes go round: a
// steady load keeps a steady data set (a key per write made every node's
// metadata, and every server's copy of it, grow all through the run,
// which the 10 % bound then measured instead of a leak).
const soakMetaKeys = 64

// seqChecker checks the numbered lines of one task ("seq N ...") in the
// order read: each must be the last plus one, and the first 0 when the
// read began at the log's start. A 0 after others is the task starting
// again (its node restarted it).
type seqChecker struct {
	last                     int64
	fromStart                bool
	lines, dups, gaps, start *atomic.Int64
}

func (c *seqChecker) line(l string) {
	f := strings.Fields(l)
	if len(f) < 2 || f[0] != "seq" {
		return // a partial line at a follow's origin
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return
	}
	c.lines.Add(1)
	switch {
	case n == 0 && c.last >= 0:
		c.start.Add(1)
	case c.last >= 0 && n <= c.last:
		c.dups.Add(1)
	case (c.last >= 0 || c.fromStart) && n != c.last+1:
		c.gaps.Add(1)
	}
	c.last = n
}

// openFollow opens a follow while the load runs and closes its body when
// stop is closed or the load pauses; end releases it. A refused follow
// gives a nil body; ok is false once stop is closed.
func (s *soak) openFollow(stop <-chan struct{}, url string) (body io.Reader, end func(), ok bool) {
	lctx, ok := s.gate.wait(stop)
	if !ok {
		return nil, nil, false
	}
	req, _ := http.NewRequestWithContext(lctx, "GET", url, nil)
	req.Header.Set("X-Nomad-Token", s.token)
	resp, err := s.hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, nil, true
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-stop:
		case <-lctx.Done():
		case <-done:
		}
		resp.Body.Close()
	}()
	return resp.Body, func() { close(done); s.followRestarts.Add(1) }, true
}

// pauseOrStop waits d; false when stop is closed first.
func pauseOrStop(stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}

// follow keeps one follow of a task's stdout through a server from the
// end, checking that each connection's lines come in order, none twice,
// none skipped; a connection that ends is opened again.
func (s *soak) follow(stop <-chan struct{}, i int) {
	for {
		url := fmt.Sprintf("%s/v1/client/fs/logs/%s?task=w&type=stdout&follow=true&plain=true&origin=end", s.serverURL(i), s.allocs[i%3])
		body, end, ok := s.openFollow(stop, url)
		if !ok {
			return
		}
		if body == nil {
			if !pauseOrStop(stop, time.Second) {
				return
			}
			continue
		}
		c := seqChecker{last: -1, lines: &s.lines, dups: &s.lineDups, gaps: &s.lineGaps, start: new(atomic.Int64)}
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			c.line(sc.Text())
		}
		end()
	}
}

// followAll follows task i's stdout from its start through the servers
// in turn, framed, and on any end of the stream resumes at the position
// reached: the sizes of the rotated files before the current one plus
// the offset in it (the logs endpoint counts from the start of the
// oldest file kept). Every line must come once, in order.
func (s *soak) followAll(stop <-chan struct{}, i int) {
	alloc := s.allocs[i%3]
	var (
		file    string
		pos     int64
		partial []byte
	)
	c := seqChecker{last: -1, fromStart: true, lines: &s.exact, dups: &s.exactDups, gaps: &s.exactGaps, start: &s.taskStarts}
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !pauseOrStop(stop, 500*time.Millisecond) {
			return
		}
		offset, err := s.resumeOffset(i, alloc, file, pos)
		if err != nil {
			continue
		}
		url := fmt.Sprintf("%s/v1/client/fs/logs/%s?task=w&type=stdout&follow=true&origin=start&offset=%d", s.serverURL(i+attempt), alloc, offset)
		body, end, ok := s.openFollow(stop, url)
		if !ok {
			return
		}
		if body == nil {
			continue
		}
		dec := json.NewDecoder(body)
		for {
			var f struct {
				Data   []byte
				File   string
				Offset int64
			}
			if dec.Decode(&f) != nil {
				break
			}
			if len(f.Data) == 0 {
				continue
			}
			partial = append(partial, f.Data...)
			for {
				nl := bytes.IndexByte(partial, '\n')
				if nl < 0 {
					break
				}
				c.line(string(partial[:nl]))
				partial = partial[nl+1:]
			}
			file, pos = f.File, f.Offset
		}
		end()
	}
}

// resumeOffset is where a whole-log follow goes on: 0 before any frame,
// else the sizes of the log files older than file plus pos.
func (s *soak) resumeOffset(i int, alloc, file string, pos int64) (int64, error) {
	if file == "" {
		return 0, nil
	}
	cur, ok := logIndex(file, "w", "stdout")
	if !ok {
		return pos, nil
	}
	code, body, err := s.call("GET", fmt.Sprintf("%s/v1/client/fs/ls/%s?path=alloc/logs", s.serverURL(i), alloc), nil)
	if code != 200 {
		return 0, fmt.Errorf("ls: %d %v", code, err)
	}
	var files []struct {
		Name string
		Size int64
	}
	if err := json.Unmarshal(body, &files); err != nil {
		return 0, err
	}
	before := int64(0)
	for _, f := range files {
		if idx, ok := logIndex(f.Name, "w", "stdout"); ok && idx < cur {
			before += f.Size
		}
	}
	return before + pos, nil
}

// logIndex is N of a log file named <task>.<type>.<N>.
func logIndex(name, task, typ string) (int, bool) {
	name = name[strings.LastIndexByte(name, '/')+1:]
	rest, ok := strings.CutPrefix(name, task+"."+typ+".")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil
}

// figures samples every process.
func (s *soak) figures() map[string]soakFigures {
	out := map[string]soakFigures{}
	for i, p := range append(append([]*soakProc{}, s.srvs...), s.nodes...) {
		var g int64
		var prof string
		if code, body, _ := s.callTimeout(30*time.Second, "GET", s.pprofURL(i, "goroutine?debug=1"), nil); code == 200 {
			prof = string(body)
			fmt.Sscanf(prof, "goroutine profile: total %d", &g)
		}
		pid := p.pid()
		role := "node"
		if i < len(s.srvs) {
			role = "follower"
			if st, err := s.self(i); err == nil && st.leader {
				role = "leader"
			}
		}
		out[p.name] = soakFigures{rssKiB: procStatusKiB(pid, "VmRSS"), anonKiB: procStatusKiB(pid, "RssAnon"), fileKiB: procStatusKiB(pid, "RssFile"), goroutines: g, fds: procFDs(pid), role: role, fdKinds: fdKinds(pid, s.portNames), goroutineProfile: prof}
	}
	return out
}

// reference is what a process's end figures are held to: its own after
// warm-up, and when its role changed (a leader runs more than a
// follower: raft replication to each peer, the scheduler, heartbeat
// timers; restarts move the leadership), those plus what the processes
// of its end role had over those of its warm-up role then.
func (s *soak) reference(base map[string]soakFigures, name, role string) soakFigures {
	own := base[name]
	if own.role == role {
		return own
	}
	mean := func(role string) (f soakFigures, ok bool) {
		n := int64(0)
		for _, b := range base {
			if b.role == role {
				f.rssKiB, f.goroutines, f.fds = f.rssKiB+b.rssKiB, f.goroutines+b.goroutines, f.fds+b.fds
				n++
			}
		}
		if n == 0 {
			return f, false
		}
		return soakFigures{rssKiB: f.rssKiB / n, goroutines: f.goroutines / n, fds: f.fds / n}, true
	}
	to, ok1 := mean(role)
	from, ok2 := mean(own.role)
	if !ok1 || !ok2 {
		return own
	}
	return soakFigures{rssKiB: own.rssKiB + to.rssKiB - from.rssKiB, goroutines: own.goroutines + to.goroutines - from.goroutines,
		fds: own.fds + to.fds - from.fds, role: role}
}

// fdKinds counts a process's descriptors by kind: TCP sockets by the
// agent port at either end (names), in the state /proc/net/tcp gives,
// and other descriptors by their link with numbers left out.
func fdKinds(pid int, names map[int]string) map[string]int {
	type sock struct {
		local, remote int
		state         string
	}
	socks := map[string]sock{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 {
				continue
			}
			port := func(a string) int {
				v, _ := strconv.ParseInt(a[strings.LastIndexByte(a, ':')+1:], 16, 32)
				return int(v)
			}
			socks[fs[9]] = sock{port(fs[1]), port(fs[2]), fs[3]}
		}
	}
	out := map[string]int{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		inode, isSock := strings.CutPrefix(l, "socket:[")
		sk, known := socks[strings.TrimSuffix(inode, "]")]
		switch {
		case !isSock:
			out[strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return -1
				}
				return r
			}, l)]++
		case !known:
			out["socket (not tcp)"]++
		case sk.state == "0A":
			out["listen "+names[sk.local]]++
		case names[sk.remote] != "":
			out["to "+names[sk.remote]]++
		case names[sk.local] != "":
			out["from a peer on "+names[sk.local]]++
		default:
			out["tcp other"]++
		}
	}
	return out
}

// verifyMeta reads every acknowledged metadata key back.
func (s *soak) verifyMeta() {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	var lost int
	for id, kv := range s.metaAcked {
		code, body, err := s.fleetBench.call("GET", s.serverURL(0)+"/v1/client/metadata?node_id="+id, nil, true)
		var m struct{ Meta map[string]string }
		if code != 200 || json.Unmarshal(body, &m) != nil {
			s.t.Errorf("soak: metadata of %s: %d %v", id, code, err)
			continue
		}
		// Writes are made one after another, so a key holds its last
		// acknowledged value, or a later one whose answer was lost.
		missing := 0
		for k, v := range kv {
			if got, err := strconv.Atoi(m.Meta[k]); err != nil || got < v {
				missing++
			}
		}
		lost += missing
		s.t.Logf("soak: node %s: %d acknowledged metadata writes over %d keys, %d keys without their last", id, s.metaN[id], len(kv), missing)
	}
	if lost > 0 {
		s.t.Errorf("soak: %d acknowledged metadata writes lost", lost)
	}
}

// heapTop is the head of a heap profile in text form: its totals, the
// biggest sites in use, and the runtime.MemStats dump at its end (where
// memory that is not live heap shows: idle and released spans, stacks,
// the runtime's own).
// memStat is the runtime.MemStats field name as the heap profile's
// debug=1 text gives it, or 0.
func memStat(prof, name string) int64 {
	_, rest, ok := strings.Cut(prof, "\n# "+name+" = ")
	if !ok {
		return 0
	}
	v, _ := strconv.ParseInt(strings.Fields(rest + " ")[0], 10, 64)
	return v
}

// goMemory is where the runtime says its memory is, in MiB: heap spans
// in use, idle heap not yet given back to the OS, goroutine stacks, and
// the runtime's own (GC metadata, profiling buckets, span structures,
// other), from the heap profile taken with the sample. What RssAnon has
// beyond their sum is the binary's data and pages never touched again.
func (f soakFigures) goMemory() string {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	p := f.heapProfile
	runtime := memStat(p, "GCSys") + memStat(p, "BuckHashSys") + memStat(p, "MSpan") + memStat(p, "OtherSys")
	return fmt.Sprintf("%.1f/%.1f/%.1f/%.1f", mib(memStat(p, "HeapInuse")), mib(memStat(p, "HeapIdle")-memStat(p, "HeapReleased")), mib(memStat(p, "Stack")), mib(runtime))
}

func heapTop(prof string) string {
	stats := ""
	if i := strings.Index(prof, "\n# runtime.MemStats"); i >= 0 {
		prof, stats = prof[:i], prof[i:]
	}
	lines := strings.SplitN(prof, "\n", 41)
	return strings.Join(lines[:min(len(lines), 40)], "\n") + stats
}

func (s *soak) report(base, final map[string]soakFigures) {
	t := s.t
	var sb strings.Builder
	fmt.Fprintf(&sb, "| process | role warm → end | RSS MiB warm → end | of it anon, MiB | of it file, MiB | Go heap in use/idle kept/stacks/runtime, MiB | goroutines warm → end | fds warm → end |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	ok := true
	grew := func(a, b int64) bool { return float64(b) > float64(a)*1.10 }
	for _, p := range append(append([]*soakProc{}, s.srvs...), s.nodes...) {
		a, b := s.reference(base, p.name, final[p.name].role), final[p.name]
		mark := ""
		if grew(a.rssKiB, b.rssKiB) || grew(a.goroutines, b.goroutines) || grew(a.fds, b.fds) {
			mark, ok = " (over 10 %)", false
		}
		if grew(a.fds, b.fds) {
			t.Logf("soak: %s fds after warm-up %v; at the end %v", p.name, base[p.name].fdKinds, b.fdKinds)
		}
		if grew(a.rssKiB, b.rssKiB) {
			t.Logf("soak: %s heap after warm-up:\n%s\nat the end:\n%s", p.name, heapTop(base[p.name].heapProfile), heapTop(b.heapProfile))
		}
		if grew(a.goroutines, b.goroutines) {
			t.Logf("soak: %s goroutines after warm-up:\n%s\nat the end:\n%s", p.name, base[p.name].goroutineProfile, b.goroutineProfile)
		}
		w := base[p.name]
		fmt.Fprintf(&sb, "| %s%s | %s → %s | %.1f → %.1f | %.1f → %.1f | %.1f → %.1f | %s → %s | %d → %d | %d → %d |\n", p.name, mark, w.role, b.role,
			float64(w.rssKiB)/1024, float64(b.rssKiB)/1024, float64(w.anonKiB)/1024, float64(b.anonKiB)/1024,
			float64(w.fileKiB)/1024, float64(b.fileKiB)/1024, w.goMemory(), b.goMemory(), w.goroutines, b.goroutines, w.fds, b.fds)
	}
	var notes []string
	s.failNotes.Range(func(k, v any) bool {
		notes = append(notes, fmt.Sprintf("%s ×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	fmt.Fprintf(&sb, "\ncalls %d, failed outside restarts %d, failed during restarts %d; follows from the end: lines %d, twice %d, skipped %d; reconnects %d\n",
		s.calls.Load(), s.failed.Load(), s.failedIn.Load(), s.lines.Load(), s.lineDups.Load(), s.lineGaps.Load(), s.followRestarts.Load())
	fmt.Fprintf(&sb, "whole-log follows (resumed at the offset reached): lines %d, twice %d, skipped %d, task restarts seen %d\n",
		s.exact.Load(), s.exactDups.Load(), s.exactGaps.Load(), s.taskStarts.Load())
	if len(notes) > 0 {
		fmt.Fprintf(&sb, "failures outside restarts: %s\n", strings.Join(notes, "; "))
	}
	ok = ok && s.failed.Load() == 0 && s.lineDups.Load() == 0 && s.lineGaps.Load() == 0 &&
		s.exactDups.Load() == 0 && s.exactGaps.Load() == 0 && !t.Failed()
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(os.Stdout, "soak %v: %s\n%s", *soakFor, verdict, sb.String())
	if !ok {
		t.Errorf("soak failed:\n%s", sb.String())
	}
}
