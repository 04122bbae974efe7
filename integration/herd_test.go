package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/agent"
	"tether/client"
	"tether/server"
)

// herdNodes starts n real node agents (client.Client) that know every
// server of c, each from 127.0.0.1 as a fleet behind one NAT address, and
// waits until all registered.
func herdNodes(t *testing.T, c *cluster, n int) []*client.Client {
	t.Helper()
	var addrs []string
	for _, s := range c.servers {
		addrs = append(addrs, s.RPCAddr())
	}
	nodes := make([]*client.Client, 0, n)
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		cfg := client.DefaultConfig()
		cfg.Name = fmt.Sprintf("herd%02d", i)
		cfg.StateDir = filepath.Join(dir, "state")
		cfg.AllocDir = filepath.Join(dir, "alloc")
		cfg.Servers = append([]string(nil), addrs...)
		cfg.StatsInterval = 5 * time.Second
		cfg.CPUTotalCompute = 1000
		cl, err := client.New(cfg)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		cl.Start()
		t.Cleanup(cl.Shutdown)
		nodes = append(nodes, cl)
	}
	for i, cl := range nodes {
		select {
		case <-cl.Registered():
		case <-time.After(30 * time.Second):
			t.Fatalf("node %d did not register", i)
		}
	}
	return nodes
}

// sessionCounts returns each running server's node sessions (-1 when
// stopped).
func sessionCounts(c *cluster) []int {
	out := make([]int, len(c.servers))
	for i, s := range c.servers {
		out[i] = -1
		if s != nil {
			out[i] = int(s.Server().Stats()["sessions"])
		}
	}
	return out
}

// evenWithin reports whether every running server holds n/running nodes
// within ±tol (a fraction of the even share), and all n are held.
func evenWithin(counts []int, n int, tol float64) bool {
	running, total := 0, 0
	for _, k := range counts {
		if k >= 0 {
			running++
			total += k
		}
	}
	if total != n || running == 0 {
		return false
	}
	even := float64(n) / float64(running)
	for _, k := range counts {
		if k >= 0 && (float64(k) < even*(1-tol) || float64(k) > even*(1+tol)) {
			return false
		}
	}
	return true
}

// statsThrough asks server s for node id's host stats over HTTP.
func statsThrough(s *testAgent, id string) error {
	code, body, err := tryGet(s.URL() + "/v1/client/stats?node_id=" + id)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%d %s", code, body)
	}
	return nil
}

// load calls stats of random nodes through random servers of through
// until stop, counting failures per node.
type herdLoad struct {
	calls    atomic.Int64
	mu       sync.Mutex
	failures map[string][]string // node ID → errors
}

func runHerdLoad(ctx context.Context, wg *sync.WaitGroup, l *herdLoad, through []*testAgent, nodes []*client.Client, workers int) {
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := nodes[rand.N(len(nodes))]
				s := through[rand.N(len(through))]
				err := statsThrough(s, n.NodeID())
				l.calls.Add(1)
				if err != nil && ctx.Err() == nil {
					l.mu.Lock()
					l.failures[n.NodeID()] = append(l.failures[n.NodeID()], fmt.Sprintf("via %s: %v", s.cfg.Name, err))
					l.mu.Unlock()
				}
			}
		}()
	}
}

// TestHerd_SpreadFailoverRebalance: 3 in-process servers and 50 real
// nodes, all from 127.0.0.1. The fleet spreads within ±20 % of even; the
// server holding the most nodes stops as if killed (no membership leave;
// its sockets close as the kernel would close them) while calls run: every node
// answers again through each survivor, and no call fails to a node that
// was not on it; it comes back: the sessions rebalance to within ±20 %
// of even, with no failed call meanwhile.
func TestHerd_SpreadFailoverRebalance(t *testing.T) {
	const n = 50
	c := startCluster(t, 3, func(sc *server.Config) {
		sc.RebalanceInterval = 500 * time.Millisecond
		sc.SessionDrainTimeout = 10 * time.Second
		sc.NoLeaveOnShutdown = true // a stop is like kill -9: peers find out by failure detection
	})
	nodes := herdNodes(t, c, n)

	waitFor(t, 30*time.Second, "an even spread on connect", func() (bool, error) {
		counts := sessionCounts(c)
		return evenWithin(counts, n, 0.2), fmt.Errorf("sessions per server %v", counts)
	})
	movedAtConnect := uint64(0)
	for _, s := range c.running() {
		movedAtConnect += s.Server().Stats()["rebalance_moves"]
	}
	t.Logf("spread on connect: %v after %d rebalancing moves", sessionCounts(c), movedAtConnect)

	// The server holding the most nodes goes away while calls run
	// through the others.
	counts := sessionCounts(c)
	victim := 0
	for i, k := range counts {
		if k > counts[victim] {
			victim = i
		}
	}
	victimAddr := c.servers[victim].RPCAddr()
	onVictim := map[string]bool{}
	for _, cl := range nodes {
		if cl.ServerAddr() == victimAddr {
			onVictim[cl.NodeID()] = true
		}
	}
	var survivors []*testAgent
	for i, s := range c.servers {
		if i != victim {
			survivors = append(survivors, s)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	l := &herdLoad{failures: map[string][]string{}}
	runHerdLoad(ctx, &wg, l, survivors, nodes, 4)
	killedAt := time.Now()
	c.stop(victim)
	for _, s := range survivors {
		for _, cl := range nodes {
			waitFor(t, 30*time.Second, fmt.Sprintf("node %s through %s", cl.NodeID(), s.cfg.Name), func() (bool, error) {
				err := statsThrough(s, cl.NodeID())
				return err == nil, err
			})
		}
	}
	t.Logf("every node answers through both survivors %v after the stop; %d had been on it; sessions %v",
		time.Since(killedAt).Round(time.Millisecond), len(onVictim), sessionCounts(c))
	cancel()
	wg.Wait()
	for id, errs := range l.failures {
		if !onVictim[id] {
			t.Errorf("calls to node %s, not on the stopped server, failed: %q", id, errs)
		}
	}
	t.Logf("%d calls during the failover; nodes with failures: %d (all were on the stopped server)", l.calls.Load(), len(l.failures))

	// Back again: the fleet moves a fair share to it, with no failed call.
	c.restart(victim)
	c.waitStable(3)
	// Calls go through the restarted server once its state has caught up
	// (as a load balancer's readiness check would have it). Before that,
	// a node its state does not know is found on the peer holding its
	// session, but not while that node is between two servers.
	waitFor(t, 30*time.Second, "the restarted server knows every node", func() (bool, error) {
		list, err := listNodes(c.servers[victim].URL())
		return err == nil && len(list) == n, fmt.Errorf("%d nodes listed: %v", len(list), err)
	})
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	l = &herdLoad{failures: map[string][]string{}}
	runHerdLoad(ctx, &wg, l, c.running(), nodes, 4)
	waitFor(t, 60*time.Second, "sessions rebalanced after the restart", func() (bool, error) {
		counts := sessionCounts(c)
		return evenWithin(counts, n, 0.2), fmt.Errorf("sessions per server %v", counts)
	})
	// Let every move asked finish (the old session released and drained)
	// under load, with a few hundred calls at least, then look at them.
	waitFor(t, 30*time.Second, "every move done under load", func() (bool, error) {
		var asked, released, timeouts uint64
		for _, s := range c.running() {
			st := s.Server().Stats()
			asked += st["rebalance_moves"]
			released += st["sessions_released"]
			timeouts += st["session_drain_timeouts"]
		}
		if timeouts > 0 {
			t.Fatalf("%d released sessions closed still busy", timeouts)
		}
		return released >= asked && l.calls.Load() >= 300, fmt.Errorf("%d of %d moves done, %d calls", released, asked, l.calls.Load())
	})
	cancel()
	wg.Wait()
	moved := uint64(0)
	for _, s := range c.running() {
		moved += s.Server().Stats()["rebalance_moves"]
	}
	for id, errs := range l.failures {
		t.Errorf("calls to node %s failed while the fleet rebalanced: %q", id, errs)
	}
	if l.calls.Load() == 0 {
		t.Fatal("no calls ran while the fleet rebalanced")
	}
	t.Logf("rebalanced to %v; %d moves asked; %d calls meanwhile, none failed", sessionCounts(c), moved, l.calls.Load())
}

// TestHerd_NodesHonourAdmission: against a server that admits 5 node
// sessions a second after a burst of 2, 20 real nodes starting at once
// are told to come back later, come back at their slots, and all
// register; none is refused for reconnecting too often.
func TestHerd_NodesHonourAdmission(t *testing.T) {
	cfg := baseConfig(t, "srv")
	cfg.LogLevel = "INFO"
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 1
	cfg.ServerTuning = func(sc *server.Config) {
		fastServer(sc)
		sc.AdmissionRate, sc.AdmissionBurst = 5, 2
	}
	s := startAgent(t, cfg)
	c := &cluster{t: t, servers: []*testAgent{s}, cfgs: []*agent.Config{cfg}}
	c.waitStable(1)
	start := time.Now()
	nodes := herdNodes(t, c, 20)
	took := time.Since(start)
	st := s.Server().Stats()
	if st["sessions"] != 20 || st["admission_refused_rate"] == 0 || st["admission_slots_used"] == 0 {
		t.Fatalf("stats %v; want 20 sessions, refusals and slots used", st)
	}
	if st["admission_refused_node"] != 0 {
		t.Fatalf("%d refusals for reconnecting too often; the nodes came back early", st["admission_refused_node"])
	}
	// 18 nodes past the burst at 5/s take 3.6 s at least.
	if took < 3*time.Second {
		t.Fatalf("20 nodes registered in %v; the rate was not applied", took)
	}
	for _, n := range nodes {
		if err := statsThrough(s, n.NodeID()); err != nil {
			t.Fatalf("node %s: %v", n.NodeID(), err)
		}
	}
	t.Logf("20 nodes registered in %v at 5/s: %v", took.Round(time.Millisecond), st)
}
