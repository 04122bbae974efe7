package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	nomad "github.com/hashicorp/nomad/api"
)

// TestCLI_LogsFollowAcrossServerKill follows a task's numbered lines with
// "alloc logs -f" through a round-robin load balancer in front of three
// servers, stops the server carrying the stream, and checks that every
// line arrives exactly once and in order, and that Ctrl-C exits 0.
func TestCLI_LogsFollowAcrossServerKill(t *testing.T) {
	c, https := startClusterWithNode(t)
	api := c.servers[0].API(t)
	job := &nomad.Job{ID: ptr("count"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{
			shellTask("t", `i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.005; done`),
		}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "count", 1, "running")
	lb := startRRProxy(t, https...)

	p := startTetherProc(t, "http://"+lb.ln.Addr().String(), "alloc", "logs", "-f", "-job", "count")
	lines := p.lines

	next := 1 // the line number expected next
	read := func(until int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for next <= until {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the CLI ended at line %d: %s", next, p.stderr.String())
				}
				if want := fmt.Sprintf("line %d", next); l != want {
					t.Fatalf("got %q, want %q (a line lost or repeated)", l, want)
				}
				next++
			case <-deadline:
				t.Fatalf("line %d did not arrive: %s", next, p.stderr.String())
			}
		}
	}
	read(50)

	stopStreamServer(t, c, lb, https, func() { read(next + 20) }, func() { read(next + 300) })

	if code := p.interrupt(t); code != 0 {
		t.Fatalf("exit %d after SIGINT: %s", code, p.stderr.String())
	}
	for l := range lines { // what was still buffered continues the sequence
		if want := fmt.Sprintf("line %d", next); l != want {
			t.Fatalf("got %q, want %q", l, want)
		}
		next++
	}
}

// startClusterWithNode starts three servers and a raw_exec node that
// knows them all, and returns the servers' HTTP addresses.
func startClusterWithNode(t *testing.T) (*cluster, []string) {
	c := startCluster(t, 3)
	var rpcs, https []string
	for _, s := range c.servers {
		rpcs = append(rpcs, s.RPCAddr())
		https = append(https, s.HTTPAddr())
	}
	startNode(t, "node0", withServers(rpcs...), withRawExec())
	return c, https
}

// stopStreamServer stops the server behind lb that carries a streaming
// call: the connection whose bytes grow while more arrives (the CLI's
// lookups before the stream may have left idle keep-alive connections).
// Then it reads on and checks that what came after did so through a new
// connection.
func stopStreamServer(t *testing.T, c *cluster, lb *rrProxy, https []string, readMore, readAfter func()) {
	t.Helper()
	before := lb.servedBytes()
	readMore()
	var backend string
	for conn, n := range lb.servedBytes() {
		if n > before[conn] {
			backend = conn.RemoteAddr().String()
		}
	}
	lb.mu.Lock()
	connsBefore := len(lb.conns)
	lb.mu.Unlock()
	killed := -1
	for i, h := range https {
		if h == backend {
			killed = i
		}
	}
	if killed < 0 {
		t.Fatalf("stream backend %q is no server", backend)
	}
	c.stop(killed)
	readAfter()
	lb.mu.Lock()
	reconnected := len(lb.conns) > connsBefore
	lb.mu.Unlock()
	if !reconnected {
		t.Fatal("what came after the stop came without a new connection through the balancer")
	}
}

// TestCLI_FSBigFileAndProgress writes a 9 MB file into an allocation
// directory: to a terminal "alloc fs" refuses it; -o saves it with a
// progress bar on a terminal's stderr and none when stderr is a pipe;
// piped, it prints the bytes; -tail -n and -stat read it too.
func TestCLI_FSBigFileAndProgress(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)
	job := &nomad.Job{ID: ptr("files"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{
			mockTask("t", map[string]any{"run_for": "1h", "stdout_string": "one\ntwo\nthree\n"}),
		}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, api, "files", 1, "running")[0].ID
	const size = 9 << 20
	big := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	if err := os.WriteFile(filepath.Join(node.cfg.DataDir, "alloc", allocID, "alloc", "data", "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	path := "alloc/data/big.bin"

	// Piped: the bytes.
	r := runTether(t, env, "", "alloc", "fs", allocID, path).ok(t)
	if r.stdout != string(big) {
		t.Fatalf("piped output: %d bytes, want %d", len(r.stdout), size)
	}
	// -stat and the listing.
	st := runTether(t, env, "", "alloc", "fs", "-H", "-stat", allocID, path).ok(t).stdout
	if rows := tableRows(st, "Mode"); len(rows) != 1 || rows[0][1] != fmt.Sprint(size) || rows[0][4] != "big.bin" {
		t.Fatalf("-stat:\n%s", st)
	}
	ls := runTether(t, env, "", "alloc", "fs", allocID, "alloc/data").ok(t).stdout
	if got := tableColumns(ls, "Mode"); strings.Join(got, "|") != "Mode|Size|Modified Time|Name" {
		t.Fatalf("listing columns %q", got)
	}
	if rows := tableRows(ls, "Mode"); len(rows) != 1 || rows[0][1] != "9.0 MiB" {
		t.Fatalf("listing:\n%s", ls)
	}
	// -tail -n of a log, and logs -tail.
	waitFor(t, 10*time.Second, "the task's output", func() (bool, error) {
		r := runTether(t, env, "", "alloc", "logs", allocID)
		return r.stdout == "one\ntwo\nthree\n", fmt.Errorf("%q", r.stdout)
	})
	if got := runTether(t, env, "", "alloc", "fs", "-tail", "-n", "2", allocID, "alloc/logs/t.stdout.0").ok(t).stdout; got != "two\nthree\n" {
		t.Fatalf("fs -tail -n 2: %q", got)
	}
	if got := runTether(t, env, "", "alloc", "logs", "-tail", "-c", "6", allocID).ok(t).stdout; got != "three\n" {
		t.Fatalf("logs -tail -c 6: %q", got)
	}

	// A terminal: refused without -o; with -o, a progress bar on stderr.
	term := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(tetherBin, args...)
		cmd.Env = append(os.Environ(), "NOMAD_ADDR="+srv.URL())
		f, err := pty.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = io.Copy(&out, f) }() // ends with EIO when the child exits
		err = cmd.Wait()
		wg.Wait()
		f.Close()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return out.String(), code
	}
	if out, code := term("alloc", "fs", allocID, path); code != 1 || !strings.Contains(out, "-o FILE") {
		t.Fatalf("big file to a terminal: exit %d\n%q", code, out)
	}
	dst := filepath.Join(t.TempDir(), "big.bin")
	out, code := term("alloc", "fs", "-o", dst, allocID, path)
	if code != 0 || !strings.Contains(out, "100%") || !strings.Contains(out, "MB") {
		t.Fatalf("-o on a terminal: exit %d, want a progress bar\n%q", code, out)
	}
	if b, err := os.ReadFile(dst); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("saved file: %d bytes, %v", len(b), err)
	}
	dst2 := filepath.Join(t.TempDir(), "big2.bin")
	r = runTether(t, env, "", "alloc", "fs", "-o", dst2, allocID, path).ok(t)
	if r.stderr != "" || r.stdout != "" {
		t.Fatalf("-o with stderr a pipe printed %q %q", r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(dst2); err != nil || len(b) != size {
		t.Fatalf("saved file: %d bytes, %v", len(b), err)
	}
}

// TestCLI_JobLogsFollowAcrossServerKill follows a two-allocation job's
// numbered lines with "job logs -f" through a round-robin balancer in
// front of three servers and stops the server carrying the stream: the
// CLI resumes from the job's cursor, so each allocation's lines arrive
// exactly once and in order.
func TestCLI_JobLogsFollowAcrossServerKill(t *testing.T) {
	c, https := startClusterWithNode(t)
	api := c.servers[0].API(t)
	registerRunning(t, api, groupJob("count", 2, false,
		shellTask("t", `i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.01; done`)), 2)
	lb := startRRProxy(t, https...)
	p := startTetherProc(t, "http://"+lb.ln.Addr().String(), "job", "logs", "-f", "count")

	next := map[string]int{} // the line number expected next, by allocation tag
	read := func(n int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for ; n > 0; n-- {
			select {
			case l, ok := <-p.lines:
				if !ok {
					t.Fatalf("the CLI ended: %s", p.stderr.String())
				}
				tag, line, _ := strings.Cut(l, "] ")
				want := next[tag] + 1
				if next[tag] == 0 {
					fmt.Sscanf(line, "line %d", &want) // the first line seen of it
				}
				if line != fmt.Sprintf("line %d", want) {
					t.Fatalf("%s: got %q, want line %d (a line lost or repeated)", tag, line, want)
				}
				next[tag] = want
			case <-deadline:
				t.Fatalf("no line: %s", p.stderr.String())
			}
		}
	}
	read(100)
	stopStreamServer(t, c, lb, https, func() { read(40) }, func() { read(400) })
	if len(next) != 2 {
		t.Fatalf("lines of %d allocations; want 2", len(next))
	}
	if code := p.interrupt(t); code != 0 {
		t.Fatalf("exit %d after SIGINT: %s", code, p.stderr.String())
	}
}
