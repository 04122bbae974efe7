package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/server"
)

// TestClusterOps_NodeAndGC drives the cluster operations a single server
// and a node answer through the official client: regions on both, the
// node's server list read and replaced, bad input named, the 501 of an
// endpoint whose role the agent lacks, and the system GC collecting a
// finished allocation on the node.
func TestClusterOps_NodeAndGC(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	sapi, napi := srv.API(t), node.API(t)

	for name, api := range map[string]*nomad.Client{"server": sapi, "node": napi} {
		regions, err := api.Regions().List()
		if err != nil || !slices.Equal(regions, []string{"global"}) {
			t.Errorf("%s: Regions().List() = %v, %v; want [global]", name, regions, err)
		}
	}

	servers, err := napi.Agent().Servers()
	if err != nil || !slices.Equal(servers, []string{srv.RPCAddr()}) {
		t.Fatalf("Servers() = %v, %v; want [%s]", servers, err, srv.RPCAddr())
	}
	// A second address that answers nothing: the node keeps its session,
	// since its server is still on the list.
	dead := closedAddr(t)
	if err := napi.Agent().SetServers([]string{srv.RPCAddr(), dead}); err != nil {
		t.Fatalf("SetServers: %v", err)
	}
	servers, err = napi.Agent().Servers()
	if err != nil || !slices.Equal(servers, []string{srv.RPCAddr(), dead}) {
		t.Fatalf("Servers() after SetServers = %v, %v; want [%s %s]", servers, err, srv.RPCAddr(), dead)
	}
	if !node.Client().Connected() || node.Client().ServerAddr() != srv.RPCAddr() {
		t.Fatalf("node left its server (now %q)", node.Client().ServerAddr())
	}
	// Without a port, Nomad's RPC port; the node's current server is
	// not on that list and nothing answers there, so it stays where it is.
	if err := napi.Agent().SetServers([]string{"127.0.0.2", "[::1]"}); err != nil {
		t.Fatalf("SetServers without ports: %v", err)
	}
	servers, err = napi.Agent().Servers()
	if err != nil || len(servers) < 2 || servers[0] != "127.0.0.2:4647" || servers[1] != "[::1]:4647" {
		t.Fatalf("Servers() = %v, %v; want [127.0.0.2:4647 [::1]:4647 ...]", servers, err)
	}
	if err := napi.Agent().SetServers([]string{srv.RPCAddr()}); err != nil {
		t.Fatal(err)
	}
	if !node.Client().Connected() {
		t.Fatal("node lost its session")
	}

	bad := []struct {
		name string
		call func() error
		code int
		text string
	}{
		{"set servers, none", func() error { return napi.Agent().SetServers(nil) }, 400, "missing server address"},
		{"set servers, bad port", func() error { return napi.Agent().SetServers([]string{"127.0.0.1:99999"}) }, 400, `invalid address parameter "127.0.0.1:99999"`},
		{"set servers, garbage", func() error { return napi.Agent().SetServers([]string{"[::1"}) }, 400, "invalid address parameter"},
		{"set servers, too many", func() error {
			many := make([]string, 17)
			for i := range many {
				many[i] = fmt.Sprintf("10.0.0.%d:4647", i+1)
			}
			return napi.Agent().SetServers(many)
		}, 400, "too many address parameters"},
		{"servers on a server-only agent", func() error { _, err := sapi.Agent().Servers(); return err }, 501, "Invalid method"},
		{"force-leave on a node-only agent", func() error { return napi.Agent().ForceLeave("x") }, 501, "Invalid method"},
		{"raft peer, neither id nor address", func() error { return sapi.Operator().RaftRemovePeerByID("", nil) }, 400, "Must specify either ?id"},
		{"raft peer, unknown id", func() error { return sapi.Operator().RaftRemovePeerByID("nope", nil) }, 400, `id "nope" was not found`},
		{"raft peer through the node, unknown address", func() error { return napi.Operator().RaftRemovePeerByAddress("10.0.0.1:4647", nil) }, 400, `address "10.0.0.1:4647" was not found`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.name, tc.call(), tc.code, tc.text)
		})
	}
	// Agent().Join flattens the HTTP error into its text.
	if _, err := napi.Agent().Join(srv.SerfAddr()); err == nil || !strings.Contains(err.Error(), "501 (Invalid method)") {
		t.Errorf("Join on a node-only agent = %v; want the 501", err)
	}

	// A finished allocation, collected by the system GC through the
	// server and again (nothing left) through the node.
	job := &nomad.Job{ID: ptr("gc-me"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("t", "echo done")}}}}
	if _, _, err := sapi.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	done := waitAllocsStatus(t, sapi, "gc-me", 1, "complete")
	allocDir := filepath.Join(node.cfg.DataDir, "alloc", done[0].ID)
	if _, err := os.Stat(allocDir); err != nil {
		t.Fatalf("alloc dir of the finished allocation: %v", err)
	}
	if err := sapi.System().GarbageCollect(); err != nil {
		t.Fatalf("System().GarbageCollect(): %v", err)
	}
	if _, err := os.Stat(allocDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("alloc dir after the system GC: %v; want it gone", err)
	}
	if err := napi.System().GarbageCollect(); err != nil {
		t.Fatalf("System().GarbageCollect() through the node: %v", err)
	}
	code, body, _ := do(t, "PUT", srv.URL()+"/v1/system/gc", nil)
	if code != 200 || body != "" {
		t.Fatalf("PUT /v1/system/gc = %d %q; want 200 and an empty body", code, body)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestClusterOps_Membership drives join, members, force-leave and raft
// peer removal on a 3-server cluster through the official client: the
// members carry Nomad's address, port and tags (so `nomad server members`
// shows the leader), a node given another server moves to it, a failed
// server forced to leave is marked left on
// every server and leaves raft, and a stopped server is removed from raft
// by ID.
func TestClusterOps_Membership(t *testing.T) {
	c := startCluster(t, 3, func(sc *server.Config) { sc.NoLeaveOnShutdown = true })
	api := c.servers[0].API(t)

	leader, err := api.Status().Leader()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := api.Agent().Members()
	if err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, m := range mem.Members {
		if m.Addr != "127.0.0.1" || m.Port == 0 || m.Status != "alive" {
			t.Errorf("member %s: Addr %q Port %d Status %q; want 127.0.0.1, the serf port, alive", m.Name, m.Addr, m.Port, m.Status)
		}
		for _, k := range []string{"role", "region", "dc", "build", "port", "rpc_addr", "raft_vsn", "vsn", "id", "expect"} {
			if m.Tags[k] == "" {
				t.Errorf("member %s has no %q tag: %v", m.Name, k, m.Tags)
			}
		}
		// What `nomad server members` compares to find the leader.
		if net.JoinHostPort(m.Addr, m.Tags["port"]) == leader {
			leaders++
		}
	}
	if len(mem.Members) != 3 || leaders != 1 {
		t.Fatalf("%d members, %d of them the leader %s; want 3 and 1", len(mem.Members), leaders, leader)
	}

	// A node told to use another server moves there, registering first.
	node := startNode(t, "node1", withServers(c.servers[0].RPCAddr()))
	target := c.servers[2].RPCAddr()
	if err := node.API(t).Agent().SetServers([]string{target}); err != nil {
		t.Fatalf("SetServers: %v", err)
	}
	waitFor(t, 20*time.Second, "the node on its new server", func() (bool, error) {
		return node.Client().ServerAddr() == target, fmt.Errorf("on %q", node.Client().ServerAddr())
	})

	// Join: bad input is a 400 naming the parameter; an address nobody
	// answers is named in the answer; a member is joined again.
	_, err = api.Agent().Join("127.0.0.1:99999")
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "invalid address parameter") {
		t.Errorf("Join(bad port) = %v; want a 400 naming the address parameter", err)
	}
	_, err = api.Agent().Join()
	if err == nil || !strings.Contains(err.Error(), "missing address to join") {
		t.Errorf("Join() = %v; want 400 missing address to join", err)
	}
	if n, err := api.Agent().Join(closedAddr(t)); n != 0 || err == nil || !strings.Contains(err.Error(), "failed joining") {
		t.Errorf("Join(closed port) = %d, %v; want 0 and the reason", n, err)
	}
	if n, err := api.Agent().Join(c.servers[1].SerfAddr()); n != 1 || err != nil {
		t.Errorf("Join(member) = %d, %v; want 1, nil", n, err)
	}

	// Force-leave an alive follower: as serf, it is marked leaving on
	// the other servers (it refutes the intent about itself) and keeps
	// serving, a voter still.
	victim := (c.leaderIndex() + 1) % 3
	victimName := c.cfgs[victim].Name + ".global"
	victimID := c.servers[victim].Server().ID()
	survivor := c.servers[(victim+1)%3]
	sapi := survivor.API(t)
	if err := sapi.Agent().ForceLeave(victimName); err != nil {
		t.Fatalf("ForceLeave(alive): %v", err)
	}
	waitMemberOn(t, c, victimName, "leaving", victimName)
	if conf, err := sapi.Operator().RaftGetConfiguration(nil); err != nil || len(conf.Servers) != 3 {
		t.Fatalf("raft configuration after forcing an alive member = %+v, %v; want 3 voters still", conf, err)
	}
	if _, err := c.servers[victim].API(t).Agent().Self(); err != nil {
		t.Fatalf("the leaving member does not answer: %v", err)
	}

	// Force-leave a failed follower: left on every server, out of raft.
	c.stop(victim)
	waitMember(t, c, victimName, "failed")
	if err := sapi.Agent().ForceLeave(victimName); err != nil {
		t.Fatalf("ForceLeave: %v", err)
	}
	waitMember(t, c, victimName, "left")
	c.waitStable(2)

	// Back again: alive, a voter again.
	c.restart(victim)
	waitMember(t, c, victimName, "alive")
	c.waitStable(3)

	// Stopped again, and removed from raft by ID; then pruned from the
	// members.
	c.stop(victim)
	waitMember(t, c, victimName, "failed")
	if err := sapi.Operator().RaftRemovePeerByID(victimID, nil); err != nil {
		t.Fatalf("RaftRemovePeerByID: %v", err)
	}
	c.waitStable(2)
	conf, err := sapi.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range conf.Servers {
		if s.ID == victimID {
			t.Fatalf("removed peer still in the raft configuration: %+v", s)
		}
	}
	if err := sapi.Agent().ForceLeaveWithOptions(victimName, nomad.ForceLeaveOpts{Prune: true}); err != nil {
		t.Fatalf("ForceLeave prune: %v", err)
	}
	waitMember(t, c, victimName, "")
	if err := sapi.Agent().ForceLeave("no-such-member"); err != nil {
		t.Errorf("ForceLeave(unknown) = %v; want nil, as Nomad", err)
	}
	code, body, _ := do(t, "PUT", survivor.URL()+"/v1/agent/force-leave?node=x&prune=maybe", nil)
	if code != 400 || !strings.Contains(body, "prune") {
		t.Errorf("force-leave prune=maybe = %d %q; want 400 naming prune", code, body)
	}
}

// waitMember waits until every running server lists member name with
// status ("" for not listed at all).
func waitMember(t *testing.T, c *cluster, name, status string) {
	t.Helper()
	waitMemberOn(t, c, name, status, "")
}

// waitMemberOn is waitMember on every running server but the one named
// except ("" for none).
func waitMemberOn(t *testing.T, c *cluster, name, status, except string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("member %s %q everywhere", name, status), func() (bool, error) {
		for _, s := range c.running() {
			if s.cfg.Name+".global" == except {
				continue
			}
			got := ""
			for _, m := range s.Server().Members() {
				if m.Name == name {
					got = m.Status
				}
			}
			if got != status {
				return false, fmt.Errorf("%s sees %q", s.cfg.Name, got)
			}
		}
		return true, nil
	})
}

// TestClusterOps_DevAgentMembers: a dev agent runs no serf port, yet its
// one member carries the address and tags `nomad server members` needs to
// show it as the leader, and its node answers the server list.
func TestClusterOps_DevAgentMembers(t *testing.T) {
	cfg := baseConfig(t, "dev")
	cfg.DevMode = true
	cfg.Server.Enabled = true
	cfg.Client.Enabled = true
	a := startAgent(t, cfg)
	select {
	case <-a.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatal("dev node did not register")
	}
	api := a.API(t)
	leader, err := api.Status().Leader()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := api.Agent().Members()
	if err != nil || len(mem.Members) != 1 {
		t.Fatalf("Members() = %+v, %v; want one", mem, err)
	}
	m := mem.Members[0]
	if m.Addr != "127.0.0.1" || net.JoinHostPort(m.Addr, m.Tags["port"]) != leader || m.Tags["bootstrap"] != "1" || m.Tags["region"] != "global" {
		t.Fatalf("member = %+v; want address 127.0.0.1, the leader's port %s, bootstrap 1, region global", m, leader)
	}
	if servers, err := api.Agent().Servers(); err != nil || !slices.Equal(servers, []string{leader}) {
		t.Fatalf("Servers() = %v, %v; want [%s]", servers, err, leader)
	}
}
