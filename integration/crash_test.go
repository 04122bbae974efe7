package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/structs"
)

// The crash tests kill -9 real agent processes in the middle of what they
// write to disk (metadata, the node identity, log rotation, an allocation's
// GC, raft entries and snapshots) and start them again from the same data
// dir: nothing acknowledged is lost, no state file is torn, and a raft log
// whose last write was torn is recovered.

// crashHTTP is the client of the write loops: short timeouts, so that a
// killed agent ends a loop at once.
var crashHTTP = &http.Client{Timeout: 5 * time.Second}

// writeLoop sends write(i) for i = 0, 1, ... one after another until one
// fails or stop is closed, and records the i of every write that was
// acknowledged with a 200.
type writeLoop struct {
	mu    sync.Mutex
	acked []int
	ack   chan struct{} // signalled after each acknowledged write
	done  chan struct{}
}

func startWriteLoop(from int, stop <-chan struct{}, write func(i int) (*http.Request, error)) *writeLoop {
	w := &writeLoop{ack: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := from; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			req, err := write(i)
			if err != nil {
				return
			}
			resp, err := crashHTTP.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return
			}
			w.mu.Lock()
			w.acked = append(w.acked, i)
			w.mu.Unlock()
			select {
			case w.ack <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// waitAcked waits until n writes were acknowledged.
func (w *writeLoop) waitAcked(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		got := len(w.acked)
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-w.ack:
		case <-w.done:
			t.Fatalf("the write loop ended after %d acknowledged writes; want %d", got, n)
		case <-deadline:
			t.Fatalf("%d acknowledged writes after 30s; want %d", got, n)
		}
	}
}

// finish waits for the loop to end (its agent was killed) and returns what
// was acknowledged.
func (w *writeLoop) finish(t *testing.T) []int {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the write loop did not end after its agent was killed")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.acked...)
}

// crashNode is a node agent process and its config.
type crashNode struct {
	cfg, dir, url, serverURL string
	p                        *proc
}

func (n *crashNode) start(t *testing.T) { n.p = startProc(t, n.cfg) }

// startCrashServer starts a server process (extra goes into its server
// block) and waits for its leader.
func startCrashServer(t *testing.T, dir string, ports []int, extra string) (cfg, url string, p *proc) {
	t.Helper()
	cfg = writeFile(t, dir, "server.hcl", crashServerHCL(dir, ports, extra))
	url = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	p = startProc(t, cfg)
	waitLeader(t, url)
	return cfg, url, p
}

// crashServerHCL is the config of a single server; extra goes into its
// server block.
func crashServerHCL(dir string, ports []int, extra string) string {
	return agentHCL("srv1", dir, "INFO", ports[0], ports[1], ports[2], fmt.Sprintf(`
server {
  enabled          = true
  bootstrap_expect = 1
%s
}
`, extra))
}

func waitLeader(t *testing.T, url string) {
	t.Helper()
	waitFor(t, 30*time.Second, "server has a leader", func() (bool, error) {
		code, body, err := tryGet(url + "/v1/status/leader")
		return code == 200 && strings.Contains(body, ":"), err
	})
}

// newCrashNode writes a node config pointing at the server's RPC port.
func newCrashNode(t *testing.T, serverURL string, serverRPC int) *crashNode {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 3)
	cfg := writeFile(t, dir, "client.hcl", agentHCL("node1", dir, "INFO", ports[0], ports[1], ports[2], fmt.Sprintf(`
client {
  enabled = true
  servers = ["127.0.0.1:%d"]
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, serverRPC)))
	return &crashNode{cfg: cfg, dir: dir, url: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), serverURL: serverURL}
}

// waitReady waits until the node answers its own metadata (it registered
// and serves).
func (n *crashNode) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "node answers", func() (bool, error) {
		code, body, err := tryGet(n.url + "/v1/client/metadata")
		if code != 200 {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		return true, nil
	})
}

// checkIdentityFiles fails unless each identity file is absent or holds a
// UUID and a newline, and returns the node ID ("" when absent).
func checkIdentityFiles(t *testing.T, stateDir string) string {
	t.Helper()
	var nodeID string
	for _, name := range []string{"node-id", "secret-id"} {
		b, err := os.ReadFile(filepath.Join(stateDir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		v := strings.TrimSuffix(string(b), "\n")
		if !structs.IsUUID(v) || len(b) != 37 {
			t.Fatalf("%s holds %q after kill -9: torn", name, b)
		}
		if name == "node-id" {
			nodeID = v
		}
	}
	return nodeID
}

// checkNoTemps fails if a temp file of an atomic write is left in dir.
func checkNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file %s left in %s after a restart", e.Name(), dir)
		}
	}
}

// TestCrash_NodeIdentityAndMetadata kills a node agent while it creates
// its identity (at random points of its first starts) and while a client
// writes metadata as fast as it can; after each restart the node has the
// same ID, its files are whole, and every acknowledged write reads back.
func TestCrash_NodeIdentityAndMetadata(t *testing.T) {
	sdir := t.TempDir()
	sports := freePorts(t, 3)
	_, serverURL, _ := startCrashServer(t, sdir, sports, "")
	n := newCrashNode(t, serverURL, sports[1])
	stateDir := filepath.Join(n.dir, "client")

	// First starts cut short: the identity is written within the first
	// milliseconds. Each is killed at a different point of its start.
	for _, after := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond} {
		n.start(t)
		select {
		case <-time.After(after): // where to cut the start, not a wait for a state
		case <-n.p.done:
		}
		n.p.kill()
		checkIdentityFiles(t, stateDir)
	}
	n.start(t)
	n.waitReady(t)
	nodeID := checkIdentityFiles(t, stateDir)
	if nodeID == "" {
		t.Fatal("no node-id after a full start")
	}
	checkNoTemps(t, stateDir)

	var acked []int
	next := 0
	for cycle := 0; cycle < 3; cycle++ {
		stop := make(chan struct{})
		w := startWriteLoop(next, stop, func(i int) (*http.Request, error) {
			body := fmt.Sprintf(`{"Meta": {"crash.k%d": "v%d", "crash.last": "%d"}}`, i, i, i)
			return http.NewRequest(http.MethodPost, n.url+"/v1/client/metadata", strings.NewReader(body))
		})
		w.waitAcked(t, len(acked)+20)
		n.p.kill() // with a write in flight
		close(stop)
		got := w.finish(t)
		acked = append(acked, got...)
		next = got[len(got)-1] + 2 // the write in flight may or may not have landed

		b, err := os.ReadFile(filepath.Join(stateDir, "meta.json"))
		if err != nil {
			t.Fatal(err)
		}
		var dyn map[string]*string
		if err := json.Unmarshal(b, &dyn); err != nil {
			t.Fatalf("meta.json after kill -9 is not JSON (%v): %q", err, b)
		}
		if id := checkIdentityFiles(t, stateDir); id != nodeID {
			t.Fatalf("node-id after kill -9 = %q; want %q", id, nodeID)
		}

		n.start(t)
		n.waitReady(t)
		checkNoTemps(t, stateDir)
		checkNoTemps(t, filepath.Join(stateDir, "allocs"))
		meta := nodeMeta(t, n.url)
		for _, i := range acked {
			if v := meta[fmt.Sprintf("crash.k%d", i)]; v != fmt.Sprintf("v%d", i) {
				t.Fatalf("cycle %d: acknowledged write %d reads %q after kill -9 and restart", cycle, i, v)
			}
		}
	}
	if id := waitForOneReadyNode(t, serverURL); id != nodeID {
		t.Fatalf("the restarted node registered as %s; want %s", id, nodeID)
	}
}

// nodeMeta is the node's merged metadata from its own API.
func nodeMeta(t *testing.T, nodeURL string) map[string]string {
	t.Helper()
	code, body, err := tryGet(nodeURL + "/v1/client/metadata")
	if code != 200 {
		t.Fatalf("metadata: %d %s %v", code, body, err)
	}
	var m struct{ Meta map[string]string }
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	return m.Meta
}

// runCrashJob registers job as JSON through serverURL and returns its
// allocation once it reached status (polling the server).
func runCrashJob(t *testing.T, serverURL, job, status string) string {
	t.Helper()
	code, body, _ := do(t, "POST", serverURL+"/v1/jobs", strings.NewReader(job))
	if code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	var id struct{ Job struct{ ID string } }
	json.Unmarshal([]byte(job), &id)
	var allocID string
	waitFor(t, 30*time.Second, "allocation "+status, func() (bool, error) {
		code, body, err := tryGet(serverURL + "/v1/job/" + id.Job.ID + "/allocations")
		if code != 200 {
			return false, err
		}
		var allocs []struct{ ID, ClientStatus string }
		if err := json.Unmarshal([]byte(body), &allocs); err != nil {
			return false, err
		}
		for _, a := range allocs {
			if a.ClientStatus == status {
				allocID = a.ID
				return true, nil
			}
		}
		return false, fmt.Errorf("allocations: %s", body)
	})
	return allocID
}

// TestCrash_NodeLogRotationAndGC kills a node agent while a task's log
// rotates several times a second, and while it garbage-collects an
// allocation of thousands of files. After the restart the log files hold
// whole text, no file is over its size, every index is whole records
// within its file, and the GC can be finished.
func TestCrash_NodeLogRotationAndGC(t *testing.T) {
	sdir := t.TempDir()
	sports := freePorts(t, 3)
	_, serverURL, _ := startCrashServer(t, sdir, sports, "")
	n := newCrashNode(t, serverURL, sports[1])
	n.start(t)
	n.waitReady(t)

	// A task that writes about 10 MiB/s of lines into 1 MiB files.
	logAlloc := runCrashJob(t, serverURL, `{"Job": {"ID": "spew", "Name": "spew", "Type": "service", "Datacenters": ["dc1"],
	  "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{"Name": "spew", "Driver": "raw_exec",
	    "Config": {"command": "/bin/sh", "args": ["-c", "while :; do yes abcdefghijklmnopqrstuvwxyz0123456789 | head -n 30000; sleep 0.1; done"]},
	    "LogConfig": {"MaxFiles": 3, "MaxFileSizeMB": 1}}]}]}}`, "running")
	// A batch task that leaves 5000 files and ends: its GC takes a while.
	gcAlloc := runCrashJob(t, serverURL, `{"Job": {"ID": "litter", "Name": "litter", "Type": "batch", "Datacenters": ["dc1"],
	  "TaskGroups": [{"Name": "g", "Count": 1, "RestartPolicy": {"Attempts": 0, "Mode": "fail"}, "Tasks": [{"Name": "litter", "Driver": "raw_exec",
	    "Config": {"command": "/bin/sh", "args": ["-c", "mkdir -p $NOMAD_TASK_DIR/many && cd $NOMAD_TASK_DIR/many && i=0; while [ $i -lt 5000 ]; do : > f$i; i=$((i+1)); done"]}}]}]}}`, "complete")

	logDir := filepath.Join(n.dir, "alloc", logAlloc, "alloc", "logs")
	waitFor(t, 30*time.Second, "the log rotated past file 3", func() (bool, error) {
		_, err := os.Stat(filepath.Join(logDir, "spew.stdout.0"))
		return os.IsNotExist(err), err // purged: files 1 to 3 came after it
	})

	// The GC and the kill race: the kill lands during the rotation of the
	// log and, on most runs, the removal of the allocation dir.
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		req, _ := http.NewRequest(http.MethodPost, n.url+"/v1/client/allocation/"+gcAlloc+"/gc", nil)
		if resp, err := crashHTTP.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	gcDir := filepath.Join(n.dir, "alloc", gcAlloc)
	waitFor(t, 10*time.Second, "the GC started", func() (bool, error) {
		ents, err := os.ReadDir(filepath.Join(gcDir, "litter", "local", "many"))
		return err != nil || len(ents) < 5000, nil
	})
	n.p.kill()
	<-gcDone
	checkLogFiles(t, logDir, "spew.stdout", 1<<20)

	n.start(t)
	n.waitReady(t)
	// The restarted node reopened the newest index: whole records now.
	waitFor(t, 30*time.Second, "the task writes again after the restart", func() (bool, error) {
		code, body, err := tryGet(fmt.Sprintf("%s/v1/client/fs/logs/%s?task=spew&type=stdout&origin=end&offset=200&plain=true&follow=false", n.url, logAlloc))
		return code == 200 && len(body) > 0, fmt.Errorf("%d %q %v", code, body, err)
	})
	checkLogFiles(t, logDir, "spew.stdout", 1<<20)

	code, body, _ := do(t, "GET", n.url+"/v1/client/allocation/"+gcAlloc+"/stats", nil)
	if code >= 500 {
		t.Fatalf("stats of the half-collected allocation: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the GC finishes after the restart", func() (bool, error) {
		code, body, _ := do(t, "POST", n.url+"/v1/client/allocation/"+gcAlloc+"/gc", nil)
		_, err := os.Stat(gcDir)
		return (code == 200 || code == 404) && os.IsNotExist(err), fmt.Errorf("gc: %d %s; dir: %v", code, body, err)
	})
}

// checkLogFiles fails unless every file of the log base in dir is text
// (no NUL: nothing zero-filled by a torn write), at most max bytes, and
// every index beside one is whole 16-byte records (but for a torn last
// one) whose offsets ascend within the file.
func checkLogFiles(t *testing.T, dir, base string, max int64) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), base+".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatalf("no %s files in %s", base, dir)
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue // purged as we listed
		}
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) > max {
			t.Errorf("%s: %d bytes, over its %d", name, len(b), max)
		}
		if i := bytes.IndexByte(b, 0); i >= 0 {
			t.Errorf("%s: a NUL byte at %d of %d", name, i, len(b))
		}
		idx, err := os.ReadFile(filepath.Join(dir, "."+name+".times"))
		if err != nil {
			continue
		}
		prev := int64(-1)
		for off := 0; off+16 <= len(idx); off += 16 {
			at := int64(binary.LittleEndian.Uint64(idx[off:]))
			if at < prev || at > int64(len(b)) {
				t.Errorf("%s index record %d: offset %d after %d, file %d bytes", name, off/16, at, prev, len(b))
				break
			}
			prev = at
		}
	}
}

// crashJob is the registration of job crash-<i>.
func crashJob(i int) string {
	return fmt.Sprintf(`{"Job": {"ID": "crash-%d", "Name": "crash-%d", "Type": "batch", "Datacenters": ["dc1"],
	  "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}]}]}}`, i, i)
}

// missingJobs returns the acknowledged jobs the server does not have.
func missingJobs(t *testing.T, url string, acked []int) []int {
	t.Helper()
	var missing []int
	for _, i := range acked {
		code, body, err := tryGet(fmt.Sprintf("%s/v1/job/crash-%d", url, i))
		switch {
		case code == 404:
			missing = append(missing, i)
		case code != 200:
			t.Fatalf("job crash-%d: %d %s %v", i, code, body, err)
		}
	}
	return missing
}

// waitJobs waits until the restarted server shows every acknowledged job
// (but the last, when the last write was torn): a new leader applies the
// entries after its snapshot only once it commits its first entry, so
// reads just after the election may not show them yet.
func waitJobs(t *testing.T, url string, acked []int, tornLast bool) {
	t.Helper()
	waitFor(t, 20*time.Second, "every acknowledged job after kill -9 and restart", func() (bool, error) {
		missing := missingJobs(t, url, acked)
		ok := len(missing) == 0 || tornLast && len(missing) == 1 && missing[0] == acked[len(acked)-1]
		return ok, fmt.Errorf("jobs %v missing (torn last write: %v)", missing, tornLast)
	})
}

// TestCrash_ServerRaft kills a server while clients register jobs as fast
// as it acknowledges them, with snapshots every few entries, then tears
// the tail of its raft log. After each restart every acknowledged job is
// there; after the torn tail, all but the write in the torn batch.
func TestCrash_ServerRaft(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 3)
	snapshots := `  raft_snapshot_threshold = 8
  raft_snapshot_interval  = "50ms"
  raft_trailing_logs      = 4`
	cfg, url, p := startCrashServer(t, dir, ports, snapshots)
	snapDir := filepath.Join(dir, "server", "raft", "snapshots")

	var acked []int
	next := 0
	register := func(i int) (*http.Request, error) {
		return http.NewRequest(http.MethodPost, url+"/v1/jobs", strings.NewReader(crashJob(i)))
	}
	for cycle := 0; cycle < 3; cycle++ {
		stop := make(chan struct{})
		w := startWriteLoop(next, stop, register)
		w.waitAcked(t, len(acked)+30)
		if cycle == 0 {
			waitFor(t, 20*time.Second, "a raft snapshot", func() (bool, error) {
				ents, err := os.ReadDir(snapDir)
				return len(ents) > 0, err
			})
		}
		p.kill() // with a write in flight, often during a snapshot
		close(stop)
		got := w.finish(t)
		acked = append(acked, got...)
		next = got[len(got)-1] + 2
		// What a kill in the middle of a snapshot leaves, for certain.
		partial := filepath.Join(snapDir, fmt.Sprintf("2-%d-1-partial.tmp", 1000+cycle))
		if err := os.MkdirAll(partial, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(partial, "state.bin"), []byte("torn"), 0o600); err != nil {
			t.Fatal(err)
		}

		p = startProc(t, cfg)
		waitLeader(t, url)
		waitJobs(t, url, acked, false)
		if _, err := os.Stat(partial); !os.IsNotExist(err) {
			t.Fatalf("partial snapshot %s still there after the restart (%v)", filepath.Base(partial), err)
		}
	}

	// A torn last write. Only a write not yet synced can be torn, and a
	// snapshot only holds synced ones, so the torn batch must come after
	// the last snapshot: a few more writes with snapshots at their
	// default threshold, then cut the end of the written part of the
	// newest segment (segments are preallocated; zeros follow the data).
	p.kill()
	cfg = writeFile(t, dir, "server-nosnap.hcl", crashServerHCL(dir, ports, ""))
	p = startProc(t, cfg)
	waitLeader(t, url)
	for i := next; i < next+5; i++ {
		if code, body, _ := do(t, "POST", url+"/v1/jobs", strings.NewReader(crashJob(i))); code != 200 {
			t.Fatalf("register crash-%d: %d %s", i, code, body)
		}
		acked = append(acked, i)
	}
	next += 5
	p.kill()
	seg := newestSegment(t, filepath.Join(dir, "server", "raft", "wal"))
	end := writtenEnd(t, seg)
	if err := os.Truncate(seg, end-3); err != nil {
		t.Fatal(err)
	}
	p = startProc(t, cfg)
	waitLeader(t, url)
	waitJobs(t, url, acked, true)
	waitFor(t, 20*time.Second, "a write after recovering the torn tail", func() (bool, error) {
		code, body, err := tryPost(url+"/v1/jobs", crashJob(next))
		return code == 200, fmt.Errorf("%d %s %v", code, body, err)
	})
	p.stop()
	p = startProc(t, cfg)
	waitLeader(t, url)
	waitJobs(t, url, []int{next}, false)
}

// tryPost posts body to url.
func tryPost(url, body string) (int, string, error) {
	resp, err := crashHTTP.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// newestSegment is the raft-wal segment file with the highest name.
func newestSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no raft-wal segments in %s: %v", dir, err)
	}
	sort.Strings(segs)
	return segs[len(segs)-1]
}

// writtenEnd is the offset just past the last non-zero byte of path.
func writtenEnd(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := int64(len(bytes.TrimRight(b, "\x00")))
	if end < 64 {
		t.Fatalf("segment %s holds %d bytes of data", path, end)
	}
	return end
}

// TestCrash_ServerCluster kills all three servers of a cluster at once
// while jobs are registered through a follower, and starts them again: a
// write acknowledged is on a majority's disk, so every server shows it.
func TestCrash_ServerCluster(t *testing.T) {
	c := startProcCluster(t)
	leader := c.waitStable(c.all())
	follower := 0
	if c.serverRPCs[follower] == leader {
		follower = 1
	}
	stop := make(chan struct{})
	url := c.serverURLs[follower]
	w := startWriteLoop(0, stop, func(i int) (*http.Request, error) {
		return http.NewRequest(http.MethodPost, url+"/v1/jobs", strings.NewReader(crashJob(i)))
	})
	w.waitAcked(t, 20)
	var wg sync.WaitGroup
	for _, p := range c.servers {
		wg.Add(1)
		go func() { defer wg.Done(); p.kill() }()
	}
	wg.Wait()
	close(stop)
	acked := w.finish(t)

	for i, cfg := range c.serverCfgs {
		c.servers[i] = startProc(t, cfg)
	}
	c.waitStable(c.all())
	for _, u := range c.serverURLs {
		waitJobs(t, u, acked, false)
	}
}
