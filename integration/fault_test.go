package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bounds of the fault scenarios (issue 19). A peer that stops answering
// without a reset is noticed within rpc.Config KeepAliveInterval +
// KeepAliveTimeout (4 s + 4 s); a call to it, or through it, comes back
// with a clear error within faultNoticeBound; once the fault is lifted
// the node answers again within faultRecoverBound.
const (
	faultNoticeBound  = 10 * time.Second
	faultRecoverBound = 10 * time.Second
	// serverPause is how long the frozen-server scenario keeps a server
	// paused (the 30 s).
	serverPause = 30 * time.Second
)

// timedGet is a GET bounded by limit that reports its status, body and
// how long it took; a transport error or the limit gives status 0.
func timedGet(url string, limit time.Duration) (int, string, time.Duration) {
	c := http.Client{Timeout: limit}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error(), time.Since(start)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(start)
}

// waitAnswered polls url until it answers 200, within bound since from;
// it returns how long after from that was.
func waitAnswered(t *testing.T, url string, from time.Time, bound time.Duration, what string) time.Duration {
	t.Helper()
	waitFor(t, bound-time.Since(from), what, func() (bool, error) {
		code, body, _ := timedGet(url, 2*time.Second)
		return code == 200, fmt.Errorf("%d %s", code, body)
	})
	return time.Since(from)
}

// expectClearError makes one call to url, which must fail within
// faultNoticeBound with a 4xx/5xx whose body says what went wrong (not a
// timeout of the caller's own); it returns how long the call took.
func expectClearError(t *testing.T, url, want string) time.Duration {
	t.Helper()
	code, body, took := timedGet(url, faultNoticeBound+5*time.Second)
	if code < 400 || !strings.Contains(body, want) {
		t.Fatalf("call during the fault: %d %q after %v; want an error saying %q", code, body, took, want)
	}
	if took > faultNoticeBound {
		t.Fatalf("call during the fault answered %d %q after %v; want within %v", code, body, took, faultNoticeBound)
	}
	return took
}

// startServerBehindBridge starts a single-voter server whose RPC port is
// reached only through a fault bridge: it advertises the bridge's
// address, so nodes learn no other way to it.
func startServerBehindBridge(t *testing.T, name string) (*testAgent, *faultBridge) {
	t.Helper()
	port := freePorts(t, 1)[0]
	br := newFaultBridge(t, fmt.Sprintf("127.0.0.1:%d", port))
	cfg := baseConfig(t, name)
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 1
	cfg.Ports.RPC = port
	cfg.Advertise.RPC = br.Addr()
	return startAgent(t, cfg), br
}

// TestFault_NodeLinkBlackholed blackholes the link between a node and its
// server both ways, sockets open and no reset: the bridge passes no byte
// and holds what was sent, as a network that drops every packet does to
// TCP, which sends them again once the link returns (a bridge that threw
// bytes away would make a TCP stream lose bytes in its middle, which no
// network does). The call through
// the server comes back "No path to node" within 10 s (the server's ping
// goes unanswered), calls made during the fault answer at once, and once
// the link passes bytes again the node answers within seconds (its own
// ping failed too, and it dials again).
func TestFault_NodeLinkBlackholed(t *testing.T) {
	srv, br := startServerBehindBridge(t, "srv")
	node := startNode(t, "node", withServers(br.Addr()))
	id := node.Client().NodeID()
	url := srv.URL() + "/v1/client/stats?node_id=" + id
	waitAnswered(t, url, time.Now(), 10*time.Second, "stats through the server")

	br.Pause(-1)
	start := time.Now()
	took := expectClearError(t, url, "No path to node")
	t.Logf("first call after the blackhole: error after %v", took.Round(time.Millisecond))
	// The session is gone: the next call does not wait.
	if _, body, took2 := timedGet(url, 5*time.Second); !strings.Contains(body, "No path to node") || took2 > 2*time.Second {
		t.Fatalf("second call: %q after %v; want No path to node at once", body, took2)
	}

	br.Resume(-1)
	healed := time.Now()
	back := waitAnswered(t, url, healed, faultRecoverBound, "the node answering after the link returns")
	t.Logf("blackhole: noticed after %v; node answers %v after the link returned (fault lasted %v)",
		took.Round(time.Millisecond), back.Round(time.Millisecond), healed.Sub(start).Round(time.Millisecond))
}

// freeze sends SIGSTOP to p (its sockets stay open, nothing answers) and
// returns the function that sends SIGCONT; the test's cleanup sends it
// too, before p is stopped, so no process is left stopped.
func freeze(t *testing.T, p *proc) (thaw func()) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	thaw = func() { _ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT) }
	t.Cleanup(thaw)
	// The signal is delivered asynchronously: the process may answer a
	// call or two before it stops.
	stat := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	waitFor(t, 5*time.Second, "the process to stop", func() (bool, error) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return false, err
		}
		// pid (comm) state ...; comm may hold spaces but not ") ".
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		return len(f) > 0 && f[0] == "T", fmt.Errorf("state %v", f)
	})
	return thaw
}

// TestFault_Frozen runs 3 servers and 3 nodes as processes (node i
// configured with server i only, the others learnt from it) and freezes
// processes with SIGSTOP:
//   - a node: a call to it through a server it is not on comes back with
//     a clear error within 10 s, and it answers again within seconds of
//     SIGCONT;
//   - the server holding node0's session, while a follow of node0's task
//     runs through another server: the follow ends within 10 s, node0
//     answers through both other servers within 10 s and keeps answering
//     through them until the server has been paused for 30 s; after
//     SIGCONT the server answers again and knows the leader.
func TestFault_Frozen(t *testing.T) {
	c := startProcCluster(t)
	ids := c.nodeIDs(c.all())
	job := `{"Job":{"ID":"ticker","Type":"service","Datacenters":["dc1"],
		"Constraints":[{"LTarget":"${node.unique.name}","RTarget":"node0","Operand":"="}],
		"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec",
		"Config":{"command":"/bin/sh","args":["-c","i=0; while :; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done"]},
		"Resources":{"CPU":100,"MemoryMB":64}}]}]}}`
	if code, body, _ := do(t, "PUT", c.serverURLs[1]+"/v1/jobs", strings.NewReader(job)); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	allocID := waitRunningAlloc(t, c.serverURLs[0], "ticker")

	t.Run("node", func(t *testing.T) {
		url := c.serverURLs[2] + "/v1/client/stats?node_id=" + ids["node1"]
		waitAnswered(t, url, time.Now(), 10*time.Second, "node1 through srv2")
		thaw := freeze(t, c.nodes[1])
		took := expectClearError(t, url, "No path to node")
		thaw()
		thawed := time.Now()
		back := waitAnswered(t, url, thawed, faultRecoverBound, "node1 after SIGCONT")
		t.Logf("frozen node: call through a peer failed after %v; answers %v after SIGCONT",
			took.Round(time.Millisecond), back.Round(time.Millisecond))
	})

	t.Run("server", func(t *testing.T) {
		node0 := ids["node0"]
		for _, i := range []int{1, 2} {
			waitAnswered(t, c.serverURLs[i]+"/v1/client/stats?node_id="+node0, time.Now(), 10*time.Second, "node0 through a peer")
		}
		// A follow through srv1, two hops: srv1 → srv0 → node0.
		resp, err := http.Get(c.serverURLs[1] + "/v1/client/fs/logs/" + allocID + "?task=t&type=stdout&follow=true&plain=true&origin=end")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("follow: %d", resp.StatusCode)
		}
		ended := make(chan time.Time, 1)
		go func() {
			_, _ = io.Copy(io.Discard, resp.Body)
			ended <- time.Now()
		}()

		frozen := time.Now()
		thaw := freeze(t, c.servers[0])
		var took [3]time.Duration
		for _, i := range []int{1, 2} {
			took[i] = waitAnswered(t, c.serverURLs[i]+"/v1/client/stats?node_id="+node0, frozen, faultNoticeBound, fmt.Sprintf("node0 through srv%d with srv0 frozen", i))
		}
		select {
		case at := <-ended:
			t.Logf("follow through srv1 of node0 ended %v after srv0 froze", at.Sub(frozen).Round(time.Millisecond))
		case <-time.After(faultNoticeBound - time.Since(frozen)):
			t.Fatalf("the follow through the frozen server still runs %v after it froze", time.Since(frozen))
		}
		// A new follow through srv2 works, with node0 now elsewhere.
		followLogs(t, c.serverURLs[2]+"/v1/client/fs/logs/"+allocID+"?task=t&type=stdout&follow=true&plain=true", "line ")
		// The pause lasts serverPause in all: meanwhile every call through
		// the others answers, each within the fault bound.
		calls := 0
		tick := time.NewTicker(500 * time.Millisecond)
		for time.Since(frozen) < serverPause {
			for _, i := range []int{1, 2} {
				code, body, d := timedGet(c.serverURLs[i]+"/v1/client/stats?node_id="+node0, faultNoticeBound)
				if code != 200 {
					t.Fatalf("%v into the pause, node0 through srv%d: %d %q after %v", time.Since(frozen).Round(time.Second), i, code, body, d)
				}
				calls++
			}
			<-tick.C
		}
		tick.Stop()
		thaw()
		thawed := time.Now()
		back := waitAnswered(t, c.serverURLs[0]+"/v1/client/stats?node_id="+node0, thawed, faultRecoverBound, "srv0 answering after SIGCONT")
		// And it is a member of the cluster again: it knows the leader.
		waitFor(t, faultRecoverBound-time.Since(thawed), "srv0 knowing the leader after the pause", func() (bool, error) {
			code, body, _ := timedGet(c.serverURLs[0]+"/v1/status/leader", 2*time.Second)
			return code == 200 && len(body) > 2, fmt.Errorf("%d %s", code, body)
		})
		t.Logf("frozen server: node0 answers through srv1 after %v, srv2 after %v; %d calls through them answered during the %v pause; srv0 answers %v after SIGCONT",
			took[1].Round(time.Millisecond), took[2].Round(time.Millisecond), calls, serverPause, back.Round(time.Millisecond))
	})
}

// waitRunningAlloc waits for one running allocation of job and returns
// its ID.
func waitRunningAlloc(t *testing.T, serverURL, job string) string {
	t.Helper()
	var id string
	waitFor(t, 30*time.Second, "a running allocation of "+job, func() (bool, error) {
		code, body, err := tryGet(serverURL + "/v1/job/" + job + "/allocations")
		var allocs []struct{ ID, ClientStatus string }
		if code != 200 || json.Unmarshal([]byte(body), &allocs) != nil {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		for _, a := range allocs {
			if a.ClientStatus == "running" {
				id = a.ID
				return true, nil
			}
		}
		return false, fmt.Errorf("allocs: %s", body)
	})
	return id
}

// TestFault_SlowFollowReader follows a task's log through two hops
// (server srv0 → srv1, which holds the node's session → node) with a
// reader that stops reading while the task writes 64 MiB: the bytes in
// flight stay within the flow-control windows (yamux's per stream, the
// sockets'), so the live heap of the process running both servers and
// the node grows by far less than what was written; then the reader
// reads again and the follow goes on.
func TestFault_SlowFollowReader(t *testing.T) {
	c := startCluster(t, 2)
	node := startNode(t, "node", withServers(c.servers[1].RPCAddr()), withRawExec())
	job := fmt.Sprintf(`{"Job":{"ID":"loud","Type":"service","Datacenters":["dc1"],
		"Constraints":[{"LTarget":"${node.unique.id}","RTarget":%q,"Operand":"="}],
		"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec",
		"Config":{"command":"/bin/sh","args":["-c","mkfifo go && echo start && read -r _ < go && yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c 67108864; echo; echo done; exec sleep 3600"]},
		"LogConfig":{"MaxFiles":3,"MaxFileSizeMB":8}}]}]}}`, node.Client().NodeID())
	if code, body, _ := do(t, "PUT", c.servers[0].URL()+"/v1/jobs", strings.NewReader(job)); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	allocID := waitRunningAlloc(t, c.servers[0].URL(), "loud")
	// The task waits on a pipe in its directory until the follow runs.
	goPipe := filepath.Join(node.cfg.DataDir, "alloc", allocID, "t", "go")

	resp, err := http.Get(c.servers[0].URL() + "/v1/client/fs/logs/" + allocID + "?task=t&type=stdout&follow=true&plain=true&origin=start")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	first := make([]byte, len("start\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "start\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	before := liveHeap()
	// Let the task write, and read nothing until it has written all.
	f, err := os.OpenFile(goPipe, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "go")
	f.Close()
	waitFor(t, 60*time.Second, "the task to write 64 MiB", func() (bool, error) {
		code, body, err := tryGet(c.servers[0].URL() + "/v1/client/fs/logs/" + allocID + "?task=t&type=stdout&plain=true&origin=end&offset=5")
		return code == 200 && strings.Contains(body, "done"), err
	})
	grown := liveHeap() - before
	t.Logf("live heap of servers and node grew by %.1f MiB while a stalled follow was 64 MiB behind", float64(grown)/(1<<20))
	if grown > 24<<20 {
		t.Fatalf("live heap grew by %d MiB with the reader stalled; want the flow-control windows to bound it (24 MiB)", grown>>20)
	}
	// The reader reads again: the follow goes on.
	n, err := io.CopyN(io.Discard, resp.Body, 4<<20)
	if err != nil {
		t.Fatalf("reading on after the stall: %d bytes, %v", n, err)
	}
}

// liveHeap is the process's live heap after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
