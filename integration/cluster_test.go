package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
	"tether/server"
)

// cluster is an in-process cluster of server agents on loopback ports.
// Servers can be stopped and restarted with the same data dir and ports.
type cluster struct {
	t       *testing.T
	servers []*testAgent // nil while stopped
	cfgs    []*agent.Config
}

// startCluster starts n servers with bootstrap_expect = n; servers 1..n-1
// join server 0's serf port. It returns once they agree on a leader and
// every one lists n voters. tune adjusts every server's config.
func startCluster(t *testing.T, n int, tune ...func(*server.Config)) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for i := 0; i < n; i++ {
		cfg := baseConfig(t, fmt.Sprintf("srv%d", i))
		cfg.LogLevel = "INFO"
		cfg.Server.Enabled = true
		cfg.Server.BootstrapExpect = n
		cfg.ServerTuning = func(sc *server.Config) {
			fastServer(sc)
			for _, f := range tune {
				f(sc)
			}
		}
		if i > 0 {
			cfg.Server.RetryJoin = []string{c.servers[0].SerfAddr()}
		}
		c.cfgs = append(c.cfgs, cfg)
		c.servers = append(c.servers, startAgent(t, cfg))
	}
	// Pin the ports and let every server rejoin any other after a restart.
	var serfs []string
	for i, s := range c.servers {
		serfs = append(serfs, s.SerfAddr())
		c.cfgs[i].Ports.HTTP = portOf(t, s.HTTPAddr())
		c.cfgs[i].Ports.RPC = portOf(t, s.RPCAddr())
		c.cfgs[i].Ports.Serf = portOf(t, s.SerfAddr())
	}
	for _, cfg := range c.cfgs {
		cfg.Server.RetryJoin = serfs
	}
	c.waitStable(n)
	return c
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	var p int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &p); err != nil {
		t.Fatalf("port of %q: %v", addr, err)
	}
	return p
}

// running returns the servers that are up.
func (c *cluster) running() []*testAgent {
	var out []*testAgent
	for _, s := range c.servers {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// waitStable waits until every running server names the same leader and
// lists voters voters.
func (c *cluster) waitStable(voters int) string {
	c.t.Helper()
	var leader string
	waitFor(c.t, 20*time.Second, fmt.Sprintf("a leader and %d voters on every server", voters), func() (bool, error) {
		leader = ""
		for _, s := range c.running() {
			srv := s.Server()
			l := srv.Leader()
			if l == "" || (leader != "" && l != leader) {
				return false, fmt.Errorf("%s sees leader %q", s.cfg.Name, l)
			}
			leader = l
			if p := srv.Peers(); len(p) != voters {
				return false, fmt.Errorf("%s sees peers %v", s.cfg.Name, p)
			}
		}
		return leader != "", nil
	})
	return leader
}

// leaderIndex returns the index of the server that leads.
func (c *cluster) leaderIndex() int {
	c.t.Helper()
	for i, s := range c.servers {
		if s != nil && s.Server().IsLeader() {
			return i
		}
	}
	c.t.Fatalf("no running server leads")
	return -1
}

func (c *cluster) stop(i int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.servers[i].Shutdown(ctx); err != nil {
		c.t.Fatalf("stopping %s: %v", c.cfgs[i].Name, err)
	}
	c.servers[i] = nil
}

func (c *cluster) restart(i int) {
	c.t.Helper()
	c.servers[i] = startAgent(c.t, c.cfgs[i])
}

// startClusterNodes starts one node per server, node i configured with
// server i only, and waits until every server lists them all ready.
func startClusterNodes(t *testing.T, c *cluster) []*testAgent {
	t.Helper()
	var nodes []*testAgent
	for i, s := range c.servers {
		n := startNode(t, fmt.Sprintf("node%d", i), withServers(s.RPCAddr()), withRawExec())
		nodes = append(nodes, n)
	}
	for _, s := range c.running() {
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
			return ready == len(nodes), fmt.Errorf("%d of %d ready", ready, len(nodes))
		})
	}
	return nodes
}

type nodeStub struct{ ID, Status string }

// listNodes reads /v1/nodes.
func listNodes(base string) ([]nodeStub, error) {
	code, body, err := tryGet(base + "/v1/nodes")
	if err != nil || code != 200 {
		return nil, fmt.Errorf("nodes: %d %s %v", code, body, err)
	}
	var out []nodeStub
	return out, json.Unmarshal([]byte(body), &out)
}

// TestCluster_Formation forms a 3-server cluster from bootstrap_expect and
// retry_join, and checks the status, members and raft configuration
// endpoints through the official client, and that a write through a
// follower is visible on every server.
func TestCluster_Formation(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.waitStable(3)
	var ids []string
	for _, s := range c.servers {
		api := s.API(t)
		if got, err := api.Status().Leader(); err != nil || got != leader {
			t.Fatalf("%s: got leader %q (%v); want %q", s.cfg.Name, got, err, leader)
		}
		peers, err := api.Status().Peers()
		if err != nil || len(peers) != 3 {
			t.Fatalf("%s: got peers %v (%v); want 3", s.cfg.Name, peers, err)
		}
		rc, err := api.Operator().RaftGetConfiguration(nil)
		if err != nil {
			t.Fatalf("raft configuration: %v", err)
		}
		leaders := 0
		for _, rs := range rc.Servers {
			if rs.Leader {
				leaders++
			}
			if !rs.Voter || !strings.HasPrefix(rs.Node, "srv") || rs.Address == "" {
				t.Fatalf("got raft server %+v; want a named voter", rs)
			}
		}
		if len(rc.Servers) != 3 || leaders != 1 {
			t.Fatalf("got %d raft servers, %d leaders; want 3 and 1", len(rc.Servers), leaders)
		}
		mem, err := api.Agent().Members()
		if err != nil {
			t.Fatalf("members: %v", err)
		}
		alive := 0
		for _, m := range mem.Members {
			if m.Status == "alive" && m.Tags["role"] == "nomad" && m.Tags["region"] == "global" && m.Tags["rpc_addr"] != "" && m.Tags["id"] != "" {
				alive++
			}
		}
		if alive != 3 || mem.ServerRegion != "global" || mem.ServerName != s.cfg.Name+".global" {
			t.Fatalf("got members %+v; want 3 alive servers", mem)
		}
		ids = append(ids, s.Server().ID())
	}
	sort.Strings(ids)
	if ids[0] == ids[1] || ids[1] == ids[2] {
		t.Fatalf("got server ids %v; want distinct", ids)
	}

	// A job registered on a follower is there at once on that follower
	// and soon on every server.
	follower := c.servers[(c.leaderIndex()+1)%3]
	job := &nomad.Job{ID: ptr("pending"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("t", "sleep 100")}}}}
	if _, _, err := follower.API(t).Jobs().Register(job, nil); err != nil {
		t.Fatalf("register via follower: %v", err)
	}
	if j, _, err := follower.API(t).Jobs().Info("pending", nil); err != nil || *j.Status != "pending" {
		t.Fatalf("got job %v (%v) on the follower right after registering; want it pending", j, err)
	}
	for _, s := range c.servers {
		waitFor(t, 5*time.Second, "job on "+s.cfg.Name, func() (bool, error) {
			j, _, err := s.API(t).Jobs().Info("pending", nil)
			return err == nil && j != nil, err
		})
	}
}

// TestCluster_EveryServerEveryNode runs every client endpoint through every
// server for every node, with each node connected to a different server:
// host stats, metadata written on one server and read on another,
// allocation stats and a followed log stream.
func TestCluster_EveryServerEveryNode(t *testing.T) {
	c := startCluster(t, 3)
	nodes := startClusterNodes(t, c)
	api := c.servers[0].API(t)
	task := shellTask("web", `i=0; while :; do echo "line $i"; i=$((i+1)); sleep 0.2; done`)
	job := &nomad.Job{ID: ptr("everywhere"), Type: ptr("service"), Datacenters: []string{"dc1"},
		Constraints: []*nomad.Constraint{{Operand: "distinct_hosts", RTarget: "true"}},
		TaskGroups:  []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(3), Tasks: []*nomad.Task{task}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	allocs := waitAllocsStatus(t, api, "everywhere", 3, "running")

	for si, s := range c.servers {
		for ni, n := range nodes {
			id := n.Client().NodeID()
			code, body, _ := do(t, "GET", s.URL()+"/v1/client/stats?node_id="+id, nil)
			var hs nomad.HostStats
			if code != 200 || json.Unmarshal([]byte(body), &hs) != nil || hs.Memory == nil {
				t.Fatalf("stats of node%d via srv%d: got %d %q; want host stats", ni, si, code, body)
			}
			// Metadata applied through this server, read through the next.
			key := fmt.Sprintf("via_srv%d", si)
			code, body, _ = do(t, "POST", s.URL()+"/v1/client/metadata", strings.NewReader(
				fmt.Sprintf(`{"NodeID":%q,"Meta":{%q:"yes"}}`, id, key)))
			if code != 200 {
				t.Fatalf("meta apply on node%d via srv%d: got %d %q", ni, si, code, body)
			}
			other := c.servers[(si+1)%3]
			code, body, _ = do(t, "GET", other.URL()+"/v1/client/metadata?node_id="+id, nil)
			if code != 200 || !strings.Contains(body, fmt.Sprintf("%q:\"yes\"", key)) {
				t.Fatalf("meta read of node%d via %s: got %d %q; want %s", ni, other.cfg.Name, code, body, key)
			}
		}
		for _, a := range allocs {
			code, body, _ := do(t, "GET", s.URL()+"/v1/client/allocation/"+a.ID+"/stats", nil)
			if code != 200 || !strings.Contains(body, "ResourceUsage") {
				t.Fatalf("alloc stats of %s via srv%d: got %d %q", a.ID, si, code, body)
			}
			followLogs(t, s.URL()+"/v1/client/fs/logs/"+a.ID+"?task=web&type=stdout&follow=true&plain=true", "line ")
		}
	}
	forwarded := uint64(0)
	for _, s := range c.servers {
		forwarded += s.Server().Stats()["streams_forwarded"]
	}
	if forwarded < 6 {
		t.Fatalf("got %d streams forwarded between servers; want at least 6 (2 of 3 per server)", forwarded)
	}
}

// followLogs opens a followed log stream and reads until want shows up.
func followLogs(t *testing.T, url, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("follow %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow %s: got status %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			return
		}
	}
	t.Fatalf("follow %s ended (%v) before %q", url, sc.Err(), want)
}

// TestCluster_LeaderLoss stops the leader: the others elect a new one,
// take job registrations, and the node that was connected to the old
// leader answers through them within 10 s. The old leader comes back
// with its data dir, rejoins, and the cluster has 3 voters again.
func TestCluster_LeaderLoss(t *testing.T) {
	c := startCluster(t, 3)
	nodes := startClusterNodes(t, c)
	li := c.leaderIndex()
	orphan := nodes[li].Client().NodeID()

	killed := time.Now()
	c.stop(li)
	newLeader := c.waitStable(3)
	t.Logf("new leader %s after %v", newLeader, time.Since(killed).Round(time.Millisecond))
	for _, s := range c.running() {
		waitFor(t, 10*time.Second-time.Since(killed), "orphaned node reachable via "+s.cfg.Name, func() (bool, error) {
			code, body, err := tryGet(s.URL() + "/v1/client/stats?node_id=" + orphan)
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
	t.Logf("orphaned node reachable through every survivor after %v", time.Since(killed).Round(time.Millisecond))
	job := &nomad.Job{ID: ptr("after-failover"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("t", "sleep 100")}}}}
	if _, _, err := c.running()[0].API(t).Jobs().Register(job, nil); err != nil {
		t.Fatalf("register after failover: %v", err)
	}

	c.restart(li)
	c.waitStable(3)
	s := c.servers[li]
	waitFor(t, 10*time.Second, "restarted server has the new job", func() (bool, error) {
		j, _, err := s.API(t).Jobs().Info("after-failover", nil)
		return err == nil && j != nil, err
	})
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "node via restarted server", func() (bool, error) {
			code, body, err := tryGet(s.URL() + "/v1/client/stats?node_id=" + n.Client().NodeID())
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
}

// TestCluster_NoQuorum stops two of three servers: the last one answers
// writes with a 500 "No cluster leader" within its hold time, keeps
// answering client calls for the nodes it holds (reads need no leader),
// and recovers once a peer is back.
func TestCluster_NoQuorum(t *testing.T) {
	c := startCluster(t, 3, func(sc *server.Config) { sc.RPCHoldTimeout = time.Second })
	nodes := startClusterNodes(t, c)
	c.stop(0)
	c.stop(1)
	last := c.servers[2]
	waitFor(t, 10*time.Second, "leader lost", func() (bool, error) {
		return last.Server().Leader() == "", nil
	})
	start := time.Now()
	code, body, _ := do(t, "PUT", last.URL()+"/v1/jobs", strings.NewReader(`{"Job":{"ID":"x","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`))
	if code != 500 || !strings.Contains(body, "No cluster leader") || time.Since(start) > 4*time.Second {
		t.Fatalf("got %d %q after %v; want 500 No cluster leader within the 1s hold time", code, body, time.Since(start))
	}
	// Every node reconnects to the last server (it learned it from its
	// registration) and answers through it without a leader.
	for i, n := range nodes {
		waitFor(t, 10*time.Second, fmt.Sprintf("node%d via the last server", i), func() (bool, error) {
			code, body, err := tryGet(last.URL() + "/v1/client/stats?node_id=" + n.Client().NodeID())
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
	c.restart(0)
	c.waitStable(3)
	if code, body, _ := do(t, "PUT", last.URL()+"/v1/jobs", strings.NewReader(`{"Job":{"ID":"x","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`)); code != 200 {
		t.Fatalf("register after recovery: got %d %q", code, body)
	}
}

// TestCluster_NoPathViaDeadServer checks that a node whose only server is
// gone answers "No path to node" through the others, fast.
func TestCluster_NoPathViaDeadServer(t *testing.T) {
	c := startCluster(t, 3)
	n := startNode(t, "lonely", withServers(c.servers[2].RPCAddr()))
	id := n.Client().NodeID()
	waitFor(t, 10*time.Second, "node via srv0", func() (bool, error) {
		code, _, err := tryGet(c.servers[0].URL() + "/v1/client/stats?node_id=" + id)
		return code == 200, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
	start := time.Now()
	waitFor(t, 10*time.Second, "No path to node", func() (bool, error) {
		code, body, err := tryGet(c.servers[0].URL() + "/v1/client/stats?node_id=" + id)
		return code == 404 && strings.Contains(body, "No path to node"), err
	})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("got No path to node after %v; want it within 5s", d)
	}
}

// TestCluster_RestartAll stops every server and starts them again: nodes,
// jobs and allocations are still there and the node answers.
func TestCluster_RestartAll(t *testing.T) {
	c := startCluster(t, 3)
	node := startNode(t, "node0", withServers(c.servers[0].RPCAddr()), withRawExec())
	api := c.servers[1].API(t)
	job := &nomad.Job{ID: ptr("durable"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("t", "sleep 1000")}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, api, "durable", 1, "running")[0].ID
	// One server restores from a snapshot plus the log, the others from
	// the log alone.
	if err := c.servers[0].Server().Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	for i := range c.servers {
		c.stop(i)
	}
	for i := range c.servers {
		c.restart(i)
	}
	c.waitStable(3)
	for _, s := range c.servers {
		waitFor(t, 10*time.Second, "state back on "+s.cfg.Name, func() (bool, error) {
			a := s.API(t)
			nodes, err := listNodes(s.URL())
			if err != nil || len(nodes) != 1 || nodes[0].ID != node.Client().NodeID() {
				return false, fmt.Errorf("nodes %v %v", nodes, err)
			}
			j, _, err := a.Jobs().Info("durable", nil)
			if err != nil || j == nil {
				return false, err
			}
			al, _, err := a.Allocations().Info(allocID, nil)
			return err == nil && al != nil && al.NodeID == node.Client().NodeID(), err
		})
		waitFor(t, 15*time.Second, "node answers via "+s.cfg.Name, func() (bool, error) {
			code, body, err := tryGet(s.URL() + "/v1/client/allocation/" + allocID + "/stats")
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
}

// TestCluster_StaleRoute moves a node from one server to another while a
// third server has the old route cached: the stale route is detected, the
// peers are asked again and the call succeeds, once.
func TestCluster_StaleRoute(t *testing.T) {
	c := startCluster(t, 3)
	dir := t.TempDir()
	n := startNode(t, "mover", withServers(c.servers[2].RPCAddr()), withDataDir(dir))
	id := n.Client().NodeID()
	via := c.servers[0]
	waitFor(t, 10*time.Second, "node via srv0", func() (bool, error) {
		code, _, err := tryGet(via.URL() + "/v1/client/stats?node_id=" + id)
		return code == 200, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "srv2 dropped the session", func() (bool, error) {
		return c.servers[2].Server().ConnectedNodes() == 0, nil
	})
	moved := startNode(t, "mover", withServers(c.servers[1].RPCAddr()), withDataDir(dir))
	if moved.Client().NodeID() != id {
		t.Fatalf("got node ID %s after restart; want %s", moved.Client().NodeID(), id)
	}
	before := via.Server().Stats()["stale_routes"]
	if code, body, _ := do(t, "GET", via.URL()+"/v1/client/stats?node_id="+id, nil); code != 200 {
		t.Fatalf("stats via srv0 after the move: got %d %q; want 200", code, body)
	}
	if got := via.Server().Stats()["stale_routes"] - before; got != 1 {
		t.Fatalf("got %d stale routes; want exactly 1 (detected and retried once)", got)
	}
}

// TestCluster_HeartbeatTTL keeps a node connected to a follower alive
// through forwarded heartbeats, then lets the leader's TTL mark it down
// once it goes silent.
func TestCluster_HeartbeatTTL(t *testing.T) {
	c := startCluster(t, 3, func(sc *server.Config) {
		sc.MinHeartbeatTTL = 400 * time.Millisecond
		sc.HeartbeatGrace = 400 * time.Millisecond
		sc.FailoverHeartbeatTTL = time.Second
	})
	follower := c.servers[(c.leaderIndex()+1)%3]
	n := startNode(t, "beating", withServers(follower.RPCAddr()))
	id := n.Client().NodeID()
	status := func(s *testAgent) string {
		code, body, _ := tryGet(s.URL() + "/v1/node/" + id)
		var node struct{ Status string }
		if code != 200 || json.Unmarshal([]byte(body), &node) != nil {
			return ""
		}
		return node.Status
	}
	// Several TTLs pass: the node stays ready.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := status(follower); got != "ready" {
			t.Fatalf("got status %q while heartbeating through a follower; want ready", got)
		}
		<-time.After(100 * time.Millisecond) // sampling interval
	}
	if armed := c.servers[c.leaderIndex()].Server().Stats()["heartbeat_timers"]; armed != 1 {
		t.Fatalf("got %d heartbeat timers on the leader; want 1", armed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
	for _, s := range c.servers {
		waitFor(t, 5*time.Second, "node down on "+s.cfg.Name, func() (bool, error) {
			return status(s) == "down", nil
		})
	}
}

// TestCluster_FailoverHeartbeatTTL silences a node and stops the leader at
// once: the new leader gives the node the failover TTL, so it is not
// marked down for the normal TTL plus grace, and marks it down once the
// failover TTL has passed.
func TestCluster_FailoverHeartbeatTTL(t *testing.T) {
	const (
		minTTL   = 200 * time.Millisecond
		grace    = 3 * time.Second
		failover = 10 * time.Second
	)
	c := startCluster(t, 3, func(sc *server.Config) {
		sc.MinHeartbeatTTL = minTTL
		sc.HeartbeatGrace = grace
		sc.FailoverHeartbeatTTL = failover
	})
	li := c.leaderIndex()
	follower := c.servers[(li+1)%3]
	n := startNode(t, "silent", withServers(follower.RPCAddr()))
	id := n.Client().NodeID()
	status := func(s *testAgent) string {
		node, _ := s.Server().State().Node(id)
		if node == nil {
			return ""
		}
		return node.Status
	}
	waitFor(t, 10*time.Second, "node ready on the leader", func() (bool, error) {
		return status(c.servers[li]) == "ready", nil
	})

	// The node goes silent, then the leader goes: the old leader's timer
	// (at least grace away) never fires.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
	c.stop(li)
	c.waitStable(3)
	elected := time.Now()

	// Well past the normal TTL plus grace (at most 2·minTTL + grace), well
	// before the failover TTL: still ready everywhere.
	<-time.After(2*minTTL + grace + 1500*time.Millisecond) // the behaviour under test is a duration
	for _, s := range c.running() {
		if got := status(s); got != "ready" {
			t.Fatalf("node %s on %s %v after the new leader; want ready until the failover TTL", got, s.cfg.Name, time.Since(elected).Round(time.Millisecond))
		}
	}
	for _, s := range c.running() {
		waitFor(t, failover+10*time.Second, "node down on "+s.cfg.Name, func() (bool, error) {
			return status(s) == "down", nil
		})
	}
	t.Logf("node down %v after the new leader", time.Since(elected).Round(time.Millisecond))
}

// TestCluster_NodeReconnectWritesNothing stops the server a node is
// connected to: the node reconnects to another server and registers
// again, and since nothing about it changed nothing is written; it is
// reachable through every remaining server.
func TestCluster_NodeReconnectWritesNothing(t *testing.T) {
	c := startCluster(t, 3)
	li := c.leaderIndex()
	fi := (li + 1) % 3
	n := startNode(t, "moving", withServers(c.servers[fi].RPCAddr()))
	id := n.Client().NodeID()
	leader := c.servers[li].Server()
	waitFor(t, 10*time.Second, "node ready and other servers known", func() (bool, error) {
		node, _ := leader.State().Node(id)
		return node != nil && node.Status == "ready" && len(n.Client().KnownServers()) >= 3, nil
	})
	before, _ := leader.State().Node(id)
	stateIdx := leader.State().LatestIndex()

	old := n.Client().ServerAddr()
	c.stop(fi)
	waitFor(t, 20*time.Second, "node reconnected to another server", func() (bool, error) {
		addr := n.Client().ServerAddr()
		return addr != "" && addr != old, fmt.Errorf("connected to %q", addr)
	})
	for _, s := range c.running() {
		waitFor(t, 10*time.Second, "node reachable via "+s.cfg.Name, func() (bool, error) {
			code, body, err := tryGet(s.URL() + "/v1/client/stats?node_id=" + id)
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
	after, _ := leader.State().Node(id)
	if got := leader.State().LatestIndex(); got != stateIdx || after.ModifyIndex != before.ModifyIndex ||
		after.StatusUpdatedAt != before.StatusUpdatedAt || after.Status != "ready" {
		t.Fatalf("after the reconnect: state index %d → %d, node modify index %d → %d, status %q; want nothing written",
			stateIdx, got, before.ModifyIndex, after.ModifyIndex, after.Status)
	}
}
