package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// procCluster is 3 server processes and 3 node processes of the built
// binary, each node configured with a different server, all from
// Nomad-shaped HCL files.
type procCluster struct {
	t          *testing.T
	serverCfgs []string
	serverURLs []string
	serverRPCs []string
	servers    []*proc
	nodeCfgs   []string
	nodeURLs   []string
	nodes      []*proc
}

// startProcCluster starts the cluster on loopback.
func startProcCluster(t *testing.T) *procCluster { return startProcClusterOn(t, nil, "") }

// startProcClusterOn starts the cluster with server i on host i of tn
// (on Nomad's ports; the nodes and the test stay outside, reaching every
// host), or on loopback when tn is nil; serverHCL goes into every
// server's server block.
func startProcClusterOn(t *testing.T, tn *testNet, serverHCL string) *procCluster {
	t.Helper()
	ports := freePorts(t, 18)
	c := &procCluster{t: t}
	addr := func(i int) string { return "127.0.0.1" }
	if tn != nil {
		addr = func(i int) string { return tn.hosts[i].ip }
		for i := 0; i < 3; i++ {
			ports[i*3], ports[i*3+1], ports[i*3+2] = 4646, 4647, 4648
		}
	}
	var joins []string
	for i := 0; i < 3; i++ {
		joins = append(joins, fmt.Sprintf("%q", fmt.Sprintf("%s:%d", addr(i), ports[i*3+2])))
	}
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		http, rpc, serf := ports[i*3], ports[i*3+1], ports[i*3+2]
		c.serverCfgs = append(c.serverCfgs, writeFile(t, dir, "server.hcl", agentHCLAt(addr(i), fmt.Sprintf("srv%d", i), dir, "INFO", http, rpc, serf, fmt.Sprintf(`
server {
  enabled          = true
  bootstrap_expect = 3
  server_join {
    retry_join = [%s]
  }
  %s
}
`, strings.Join(joins, ", "), serverHCL))))
		c.serverURLs = append(c.serverURLs, fmt.Sprintf("http://%s:%d", addr(i), http))
		c.serverRPCs = append(c.serverRPCs, fmt.Sprintf("%s:%d", addr(i), rpc))
	}
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		http, rpc, serf := ports[9+i*3], ports[9+i*3+1], ports[9+i*3+2]
		c.nodeCfgs = append(c.nodeCfgs, writeFile(t, dir, "client.hcl", fmt.Sprintf(`
name      = "node%d"
data_dir  = %q
bind_addr = "127.0.0.1"
log_level = "INFO"
ports {
  http = %d
  rpc  = %d
  serf = %d
}
client {
  enabled = true
  servers = [%q]
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, i, dir, http, rpc, serf, c.serverRPCs[i])))
		c.nodeURLs = append(c.nodeURLs, fmt.Sprintf("http://127.0.0.1:%d", http))
	}
	for i, cfg := range c.serverCfgs {
		if tn != nil {
			c.servers = append(c.servers, startProcCmd(t, cfg, tn.command(i, tetherBin, "agent", "-config", cfg)))
			continue
		}
		c.servers = append(c.servers, startProc(t, cfg))
	}
	c.waitStable(c.all())
	for _, cfg := range c.nodeCfgs {
		c.nodes = append(c.nodes, startProc(t, cfg))
	}
	return c
}

func (c *procCluster) all() []int { return []int{0, 1, 2} }

// waitStable waits until the given servers agree on a leader and each
// lists 3 voters; it returns the leader's RPC address.
func (c *procCluster) waitStable(servers []int) string {
	c.t.Helper()
	return c.waitStableWithin(servers, 30*time.Second)
}

// waitStableWithin is waitStable within limit.
func (c *procCluster) waitStableWithin(servers []int, limit time.Duration) string {
	c.t.Helper()
	var leader string
	waitFor(c.t, limit, "a leader and 3 voters", func() (bool, error) {
		leader = ""
		for _, i := range servers {
			code, body, err := tryGet(c.serverURLs[i] + "/v1/status/leader")
			var l string
			if code != 200 || json.Unmarshal([]byte(body), &l) != nil || l == "" || (leader != "" && l != leader) {
				return false, fmt.Errorf("srv%d leader: %d %s %v", i, code, body, err)
			}
			leader = l
			code, body, err = tryGet(c.serverURLs[i] + "/v1/status/peers")
			var peers []string
			if code != 200 || json.Unmarshal([]byte(body), &peers) != nil || len(peers) != 3 {
				return false, fmt.Errorf("srv%d peers: %d %s %v", i, code, body, err)
			}
		}
		return true, nil
	})
	return leader
}

// serverIndex is the index of the server whose RPC address is rpcAddr
// (a leader's, say).
func (c *procCluster) serverIndex(rpcAddr string) int {
	c.t.Helper()
	for i, r := range c.serverRPCs {
		if r == rpcAddr {
			return i
		}
	}
	c.t.Fatalf("server %s is none of %v", rpcAddr, c.serverRPCs)
	return -1
}

// nodeIDs waits until every given server lists 3 ready nodes and returns
// their IDs by node name.
func (c *procCluster) nodeIDs(servers []int) map[string]string {
	c.t.Helper()
	ids := map[string]string{}
	for _, i := range servers {
		waitFor(c.t, 30*time.Second, fmt.Sprintf("3 ready nodes on srv%d", i), func() (bool, error) {
			code, body, err := tryGet(c.serverURLs[i] + "/v1/nodes")
			var nodes []struct{ ID, Name, Status string }
			if code != 200 || json.Unmarshal([]byte(body), &nodes) != nil {
				return false, fmt.Errorf("%d %s %v", code, body, err)
			}
			ready := 0
			for _, n := range nodes {
				if n.Status == "ready" {
					ready++
					ids[n.Name] = n.ID
				}
			}
			return ready == 3, fmt.Errorf("nodes: %s", body)
		})
	}
	return ids
}

// TestProcess_Cluster runs 3 servers and 3 nodes as processes: every
// client endpoint through every server for every node; kill -9 of the
// leader (new leader, job registration works, its node answers through
// the others within 10 s); the killed server rejoins; then every server
// is killed and restarted and nodes, jobs and allocations are still there.
func TestProcess_Cluster(t *testing.T) {
	c := startProcCluster(t)
	ids := c.nodeIDs(c.all())
	job := `{"Job":{"ID":"spread","Type":"service","Datacenters":["dc1"],
		"Constraints":[{"Operand":"distinct_hosts","RTarget":"true"}],
		"TaskGroups":[{"Name":"g","Count":3,"Tasks":[{"Name":"web","Driver":"raw_exec",
		"Config":{"command":"/bin/sh","args":["-c","i=0; while :; do echo \"line $i\"; i=$((i+1)); sleep 0.2; done"]},
		"Resources":{"CPU":100,"MemoryMB":64}}]}]}}`
	code, body, _ := do(t, "PUT", c.serverURLs[1]+"/v1/jobs", strings.NewReader(job))
	if code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	var allocIDs []string
	waitFor(t, 30*time.Second, "3 running allocations", func() (bool, error) {
		code, body, err := tryGet(c.serverURLs[0] + "/v1/job/spread/allocations")
		var allocs []struct{ ID, ClientStatus string }
		if code != 200 || json.Unmarshal([]byte(body), &allocs) != nil {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		allocIDs = allocIDs[:0]
		for _, a := range allocs {
			if a.ClientStatus == "running" {
				allocIDs = append(allocIDs, a.ID)
			}
		}
		return len(allocIDs) == 3, fmt.Errorf("allocs: %s", body)
	})

	for si, url := range c.serverURLs {
		for name, id := range ids {
			if code, body, _ := do(t, "GET", url+"/v1/client/stats?node_id="+id, nil); code != 200 || !strings.Contains(body, "Memory") {
				t.Fatalf("stats of %s via srv%d: %d %q", name, si, code, body)
			}
			key := fmt.Sprintf("set_on_srv%d", si)
			code, body, _ := do(t, "POST", url+"/v1/client/metadata", strings.NewReader(fmt.Sprintf(`{"NodeID":%q,"Meta":{%q:"yes"}}`, id, key)))
			if code != 200 {
				t.Fatalf("meta apply on %s via srv%d: %d %q", name, si, code, body)
			}
			other := c.serverURLs[(si+1)%3]
			if code, body, _ := do(t, "GET", other+"/v1/client/metadata?node_id="+id, nil); code != 200 || !strings.Contains(body, key) {
				t.Fatalf("meta of %s read via srv%d: %d %q; want %s", name, (si+1)%3, code, body, key)
			}
		}
		for _, a := range allocIDs {
			if code, body, _ := do(t, "GET", url+"/v1/client/allocation/"+a+"/stats", nil); code != 200 || !strings.Contains(body, "ResourceUsage") {
				t.Fatalf("alloc stats %s via srv%d: %d %q", a, si, code, body)
			}
			followLogs(t, url+"/v1/client/fs/logs/"+a+"?task=web&type=stdout&follow=true&plain=true", "line ")
		}
	}

	// kill -9 the leader.
	leader := c.waitStable(c.all())
	li := c.serverIndex(leader)
	orphan := ids[fmt.Sprintf("node%d", li)]
	var survivors []int
	for _, i := range c.all() {
		if i != li {
			survivors = append(survivors, i)
		}
	}
	killed := time.Now()
	c.servers[li].kill()
	for _, i := range survivors {
		waitFor(t, 10*time.Second-time.Since(killed), fmt.Sprintf("node%d via srv%d after the leader's kill", li, i), func() (bool, error) {
			code, body, err := tryGet(c.serverURLs[i] + "/v1/client/stats?node_id=" + orphan)
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
	t.Logf("node of the killed leader answers through both survivors %v after kill -9", time.Since(killed).Round(time.Millisecond))
	waitFor(t, 15*time.Second, "new leader", func() (bool, error) {
		code, body, err := tryGet(c.serverURLs[survivors[0]] + "/v1/status/leader")
		var l string
		return code == 200 && json.Unmarshal([]byte(body), &l) == nil && l != "" && l != leader, fmt.Errorf("%d %s %v", code, body, err)
	})
	t.Logf("new leader after %v", time.Since(killed).Round(time.Millisecond))
	code, body, _ = do(t, "PUT", c.serverURLs[survivors[1]]+"/v1/jobs", strings.NewReader(
		`{"Job":{"ID":"after","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/sleep","args":["1000"]}}]}]}}`))
	if code != 200 {
		t.Fatalf("register after leader kill: %d %s", code, body)
	}

	// The killed server restarts and rejoins: 3 voters again.
	c.servers[li] = startProc(t, c.serverCfgs[li])
	c.waitStable(c.all())

	// Kill every server, restart them all: the state is on disk.
	for _, p := range c.servers {
		p.kill()
	}
	for i, cfg := range c.serverCfgs {
		c.servers[i] = startProc(t, cfg)
	}
	c.waitStable(c.all())
	c.nodeIDs(c.all())
	for si, url := range c.serverURLs {
		waitFor(t, 15*time.Second, fmt.Sprintf("jobs and allocations on srv%d", si), func() (bool, error) {
			code, body, err := tryGet(url + "/v1/jobs")
			if code != 200 || !strings.Contains(body, `"spread"`) || !strings.Contains(body, `"after"`) {
				return false, fmt.Errorf("jobs %d %s %v", code, body, err)
			}
			code, body, err = tryGet(url + "/v1/job/spread/allocations")
			for _, a := range allocIDs {
				if !strings.Contains(body, a) {
					return false, fmt.Errorf("allocs %d %s %v", code, body, err)
				}
			}
			return true, nil
		})
	}
	for _, a := range allocIDs {
		waitFor(t, 15*time.Second, "alloc stats after full restart", func() (bool, error) {
			code, body, err := tryGet(c.serverURLs[0] + "/v1/client/allocation/" + a + "/stats")
			return code == 200, fmt.Errorf("%d %s %v", code, body, err)
		})
	}
}
