package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/rpc"
	"tether/structs"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakePeers answers route queries from a table: node → holder ("" for
// none); it counts the queries.
type fakePeers struct {
	mu      sync.Mutex
	holder  map[string]string
	down    map[string]bool // peers that cannot be reached
	slow    map[string]bool // nodes whose lookup a peer does not answer in time
	queries atomic.Int64
}

func (p *fakePeers) ask(nodeID, skip string) (string, error) {
	p.queries.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slow[nodeID] {
		return "", errUnansweredMiss
	}
	h := p.holder[nodeID]
	if h == "" || h == skip || p.down[h] {
		return "", structs.ErrNoPathToNode
	}
	return h, nil
}

func (p *fakePeers) set(nodeID, holder string) {
	p.mu.Lock()
	p.holder[nodeID] = holder
	p.mu.Unlock()
}

// TestRouteCache_Locate walks the resolver's answers in order, each step
// on the state the steps before left: a peer route and its cache, "no
// path" and its expiry, fresh lookups, skipping an unreachable holder.
func TestRouteCache_Locate(t *testing.T) {
	const ttl, noPath = 10 * time.Second, time.Second
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	peers := &fakePeers{holder: map[string]string{"n1": "s2:4647"}, down: map[string]bool{}}
	c := newRouteCache(1024, ttl, noPath, peers.ask, clk.now)
	ctx := context.Background()

	for _, step := range []struct {
		name    string
		before  func()
		node    string
		fresh   bool
		skip    string
		want    string // "" = ErrNoPathToNode
		queries int64  // queries made so far, after the step
	}{
		{name: "peer: asked", node: "n1", want: "s2:4647", queries: 1},
		{name: "peer: cached", node: "n1", want: "s2:4647", queries: 1},
		{name: "peer: fresh asks again", node: "n1", fresh: true, want: "s2:4647", queries: 2},
		{name: "peer: cached route expires", before: func() { clk.advance(ttl) }, node: "n1", want: "s2:4647", queries: 3},
		{name: "no path: asked", node: "n2", want: "", queries: 4},
		{name: "no path: cached", node: "n2", want: "", queries: 4},
		{name: "no path: still cached just before expiry", before: func() { peers.set("n2", "s3:4647"); clk.advance(noPath - time.Millisecond) }, node: "n2", want: "", queries: 4},
		{name: "no path: expires, node found", before: func() { clk.advance(time.Millisecond) }, node: "n2", want: "s3:4647", queries: 5},
		{name: "skip: the cached holder is skipped", before: func() { peers.set("n2", "s1:4647") }, node: "n2", skip: "s3:4647", want: "s1:4647", queries: 6},
		{name: "skip: nobody else", node: "n3", skip: "s1:4647", want: "", queries: 7},
		{name: "no path: fresh asks again", node: "n3", fresh: true, want: "", queries: 8},
		{name: "unanswered: a peer too slow to answer", before: func() { peers.slow = map[string]bool{"n4": true} }, node: "n4", want: "", queries: 9},
		{name: "unanswered: not cached, asked again", node: "n4", want: "", queries: 10},
	} {
		if step.before != nil {
			step.before()
		}
		got, err := c.locate(ctx, step.node, step.fresh, step.skip)
		switch {
		case step.want == "" && !errors.Is(err, structs.ErrNoPathToNode):
			t.Fatalf("%s: got %q, %v; want ErrNoPathToNode", step.name, got, err)
		case step.want != "" && (err != nil || got != step.want):
			t.Fatalf("%s: got %q, %v; want %q", step.name, got, err, step.want)
		}
		if q := peers.queries.Load(); q != step.queries {
			t.Fatalf("%s: %d peer queries so far; want %d", step.name, q, step.queries)
		}
	}
	c.drop("n1")
	if _, ok := c.get("n1"); ok {
		t.Fatalf("n1 still cached after drop")
	}
}

// TestRouteCache_MergesConcurrentLookups checks that callers looking for
// the same node at once share one peer query, and that one that gives up
// does not fail the others.
func TestRouteCache_MergesConcurrentLookups(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	var queries atomic.Int64
	ask := func(nodeID, skip string) (string, error) {
		queries.Add(1)
		once.Do(func() { close(started) })
		<-release
		return "s2:4647", nil
	}
	c := newRouteCache(1024, time.Minute, time.Second, ask, nil)

	const callers = 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	waiting := make(chan struct{}, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			waiting <- struct{}{}
			addr, err := c.locate(context.Background(), "n1", false, "")
			if err == nil && addr != "s2:4647" {
				err = fmt.Errorf("got %q", addr)
			}
			errs <- err
		}()
	}
	<-started
	for i := 0; i < callers; i++ {
		<-waiting
	}
	// A caller whose context ends while the query runs gives up alone.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := c.locate(ctx, "n1", false, "")
		gaveUp <- err
	}()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v; want context.Canceled", err)
	}
	// Every caller is either waiting on the one query or will find its
	// answer cached; none starts a second query while the first runs.
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q := queries.Load(); q != 1 {
		t.Fatalf("%d peer queries for %d concurrent callers; want 1", q, callers)
	}
}

// TestRouteCache_Bounded checks that the cache never holds more than its
// size, whatever the number of nodes asked about.
func TestRouteCache_Bounded(t *testing.T) {
	c := newRouteCache(routeCacheShards*16, time.Minute, time.Second, func(string, string) (string, error) {
		return "", structs.ErrNoPathToNode
	}, nil)
	for i := 0; i < 10000; i++ {
		c.put(structs.GenerateUUID(), "s2:4647", time.Minute)
	}
	if n := c.len(); n > routeCacheShards*16 {
		t.Fatalf("%d entries; want at most %d", n, routeCacheShards*16)
	}
}

// testSession returns a live client session over a pipe whose far end
// only drains, closed when the test ends.
func testSession(t *testing.T) *rpc.Session {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, b)
	}()
	sess, err := rpc.NewClientSession(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sess.Close()
		b.Close()
		<-done
	})
	return sess
}

// TestSessionRegistry_Bindings checks the registry's rules, with many
// nodes bound and looked up at once (run under -race): one node per
// session, the newest session of a node wins, the older does not take
// back, and a closed session is no path.
func TestSessionRegistry_Bindings(t *testing.T) {
	r := newSessionRegistry()
	if r.nodeOf(nil) != "" || r.get("nobody") != nil || r.count() != 0 {
		t.Fatalf("empty registry answers a session")
	}
	const nodes = 64
	sessions := make([]*rpc.Session, nodes)
	ids := make([]string, nodes)
	for i := range sessions {
		sessions[i], ids[i] = testSession(t), structs.GenerateUUID()
	}
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if created, err := r.bind(ids[i], sessions[i], uint64(i)); !created || err != nil {
				t.Errorf("bind %d = %v, %v", i, created, err)
			}
			for j := range ids { // readers of other shards meanwhile
				r.get(ids[j])
			}
		}()
	}
	wg.Wait()
	if r.count() != nodes {
		t.Fatalf("count = %d; want %d", r.count(), nodes)
	}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"lookup", func() error {
			if s, idx := r.lookup(ids[3]); s != sessions[3] || idx != 3 || r.nodeOf(sessions[3]) != ids[3] {
				return fmt.Errorf("lookup = %v, %d", s, idx)
			}
			return nil
		}},
		{"rebinding raises the index only", func() error {
			if created, err := r.bind(ids[3], sessions[3], 99); created || err != nil {
				return fmt.Errorf("bind again = %v, %v", created, err)
			}
			if _, idx := r.lookup(ids[3]); idx != 99 {
				return fmt.Errorf("idx = %d; want 99", idx)
			}
			return nil
		}},
		{"a session binds to one node", func() error {
			_, err := r.bind(ids[4], sessions[3], 1)
			if structs.StatusCode(err) != 403 {
				return fmt.Errorf("bind to another node = %v; want 403", err)
			}
			return nil
		}},
		{"the newest session wins, the older does not take back", func() error {
			newer := testSession(t)
			if created, err := r.bind(ids[5], newer, 200); !created || err != nil {
				return fmt.Errorf("bind newer = %v, %v", created, err)
			}
			r.bind(ids[5], sessions[5], 300)
			if r.get(ids[5]) != newer || r.rebinds.Load() != 1 {
				return fmt.Errorf("current = %v, rebinds %d", r.get(ids[5]), r.rebinds.Load())
			}
			r.unbind(sessions[5]) // the older going away leaves the newer
			if r.get(ids[5]) != newer || r.count() != nodes {
				return fmt.Errorf("after unbinding the older: %v, count %d", r.get(ids[5]), r.count())
			}
			return nil
		}},
		{"a closed session is no path", func() error {
			sessions[6].Close()
			if r.get(ids[6]) != nil || r.count() != nodes-1 {
				return fmt.Errorf("closed session still routes (count %d)", r.count())
			}
			if created, _ := r.bind(ids[6], sessions[6], 1); created {
				return fmt.Errorf("closed session bound")
			}
			return nil
		}},
	} {
		if err := tc.run(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
}

// nodeSession connects an in-process node, serving nodeMux, to a server
// end and returns the server's end of the session; everything is closed
// when the test ends.
func nodeSession(t *testing.T, nodeMux *rpc.Mux) *rpc.Session {
	t.Helper()
	c1, c2 := net.Pipe()
	srv := rpc.NewServer(nil, rpc.NewMux())
	got := make(chan *rpc.Session, 1)
	srv.OnSession = func(s *rpc.Session) { got <- s }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		srv.ServeConn(ctx, c2)
	}()
	node, err := rpc.NewClientSession(c1, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer wg.Done()
		node.Serve(ctx, nodeMux)
	}()
	t.Cleanup(func() {
		node.Close()
		cancel()
		wg.Wait()
	})
	select {
	case s := <-got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no server session")
		return nil
	}
}

// TestRoute_Where checks where a resolved route carries a call: down the
// node's session when this server holds it (no peer asked), else to the
// peer the route cache finds, else "No path to node".
func TestRoute_Where(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, _ := s.BootstrapACL(ctx, "")
	args := &structs.NodeSpecificRequest{QueryOptions: structs.QueryOptions{AuthToken: boot.SecretID}}
	peers := &fakePeers{holder: map[string]string{}, down: map[string]bool{}}
	s.routes.ask = peers.ask

	nodeMux := rpc.NewMux()
	rpc.HandleUnary(nodeMux, structs.MethodClientStats, func(ctx context.Context, req *structs.NodeSpecificRequest, resp *structs.HostStats) error {
		resp.Uptime = 42
		return nil
	})
	local := &structs.Node{ID: structs.GenerateUUID(), Status: structs.NodeStatusReady}
	away := &structs.Node{ID: structs.GenerateUUID(), Status: structs.NodeStatusReady}
	down := &structs.Node{ID: structs.GenerateUUID(), Status: structs.NodeStatusDown}
	for _, n := range []*structs.Node{local, away, down} {
		if _, err := s.store.UpsertNode(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.sessions.bind(local.ID, nodeSession(t, nodeMux), 1); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		node    string
		local   bool
		want    string // JSON answer, "" for an error
		code    int
		queries int64
		retries uint64
	}{
		{name: "local: down the node's session, typed and JSON", node: local.ID, local: true, want: `"Uptime":42`, queries: 0},
		// A ready node with no session may be moving between servers: the
		// call looks once more, past the cache, after noPathGrace.
		{name: "no path: nobody holds the session, asked twice", node: away.ID, code: 404, queries: 2, retries: 1},
		{name: "no path: the negative cache, then the second look", node: away.ID, code: 404, queries: 3, retries: 2},
		{name: "no path to a down node: no second look", node: down.ID, code: 404, queries: 4, retries: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := s.Route(ctx, Target{NodeID: tc.node}, structs.MethodClientStats, args)
			if err != nil {
				t.Fatal(err)
			}
			if r.Local() != tc.local {
				t.Fatalf("Local() = %v; want %v", r.Local(), tc.local)
			}
			var out rpc.JSON
			err = r.Call(ctx, structs.MethodClientStats, args, &out)
			switch {
			case tc.want == "" && structs.StatusCode(err) != tc.code:
				t.Fatalf("Call = %v; want a %d", err, tc.code)
			case tc.want != "" && (err != nil || !strings.Contains(string(out.Body), tc.want)):
				t.Fatalf("Call = %s, %v; want %s in it", out.Body, err, tc.want)
			}
			if tc.local {
				var typed structs.HostStats
				if err := r.Call(ctx, structs.MethodClientStats, args, &typed); err != nil || typed.Uptime != 42 {
					t.Fatalf("typed Call = %+v, %v", typed, err)
				}
			}
			if q := peers.queries.Load(); q != tc.queries {
				t.Fatalf("%d peer queries so far; want %d", q, tc.queries)
			}
			if n := s.noPathRetries.Load(); n != tc.retries {
				t.Fatalf("%d second looks so far; want %d", n, tc.retries)
			}
		})
	}
}

// TestRoute_UnknownHereButHeldByPeer: a node this server's state does not
// know yet (its registration not applied here) is routed when a peer
// holds its session; an ID nobody holds is still "Unknown node".
func TestRoute_UnknownHereButHeldByPeer(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	boot, _ := s.BootstrapACL(ctx, "")
	args := &structs.NodeSpecificRequest{QueryOptions: structs.QueryOptions{AuthToken: boot.SecretID}}
	peers := &fakePeers{holder: map[string]string{}, down: map[string]bool{}}
	s.routes.ask = peers.ask
	held, nobody := structs.GenerateUUID(), structs.GenerateUUID()
	peers.set(held, "10.0.0.2:4647")

	if _, err := s.Route(ctx, Target{NodeID: held}, structs.MethodClientStats, args); err != nil {
		t.Fatalf("Route to a node a peer holds = %v; want a route", err)
	}
	_, err := s.Route(ctx, Target{NodeID: nobody}, structs.MethodClientStats, args)
	if !errors.Is(err, structs.ErrUnknownNode(nobody)) {
		t.Fatalf("Route to an ID nobody holds = %v; want Unknown node", err)
	}
	if q := peers.queries.Load(); q != 2 {
		t.Fatalf("%d peer queries; want one per unknown ID", q)
	}
}
