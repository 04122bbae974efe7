package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// fsFixture is a running allocation whose dir the test can touch.
type fsFixture struct {
	srv, node *testAgent
	api       *nomad.Client
	allocID   string
	allocDir  string
}

func startFSFixture(t *testing.T, tasks ...*nomad.Task) *fsFixture {
	t.Helper()
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)
	if len(tasks) == 0 {
		tasks = []*nomad.Task{shellTask("web", `echo secret > "$NOMAD_SECRETS_DIR/token"; while :; do sleep 1; done`)}
	}
	job := &nomad.Job{ID: ptr("fsx"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: tasks}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	id := waitAllocsStatus(t, api, "fsx", 1, "running")[0].ID
	return &fsFixture{srv: srv, node: node, api: api, allocID: id, allocDir: filepath.Join(node.cfg.DataDir, "alloc", id)}
}

func (f *fsFixture) url(base, op, query string) string {
	return base + "/v1/client/fs/" + op + "/" + f.allocID + "?" + query
}

// openFollow opens a follow stream and returns its response once the
// headers arrived.
func openFollow(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return resp, nil
}

func openFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// TestFS_AbortedStreamsLeakNothing opens and aborts 1,000 follow streams
// through a server: goroutines and file descriptors of the (in-process)
// server and node return to their baseline.
func TestFS_AbortedStreamsLeakNothing(t *testing.T) {
	f := startFSFixture(t)
	if err := os.WriteFile(filepath.Join(f.allocDir, "alloc", "data", "f.txt"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := f.url(f.srv.URL(), "stream", "path=alloc/data/f.txt")
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	// Warm up, then take the baseline.
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	tr.CloseIdleConnections()
	var baseG, baseFD int
	waitFor(t, 10*time.Second, "quiet baseline", func() (bool, error) {
		baseG, baseFD = runtime.NumGoroutine(), openFDs()
		return f.srv.OpenStreams() == 0 && f.node.OpenStreams() == 0, nil
	})

	for i := 0; i < 1000; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("stream %d: %v", i, err)
		}
		if resp.StatusCode != 200 {
			cancel()
			t.Fatalf("stream %d: status %d", i, resp.StatusCode)
		}
		// Read the first frame so the whole path is open, then abort.
		buf := make([]byte, 64)
		_, _ = resp.Body.Read(buf)
		cancel()
		resp.Body.Close()
	}
	tr.CloseIdleConnections()
	waitFor(t, 30*time.Second, "goroutines and fds back to baseline", func() (bool, error) {
		g, fd := runtime.NumGoroutine(), openFDs()
		if f.srv.OpenStreams() != 0 {
			return false, fmt.Errorf("server still has %d streams", f.srv.OpenStreams())
		}
		return g <= baseG+5 && fd <= baseFD+2, fmt.Errorf("goroutines %d (baseline %d), fds %d (baseline %d)", g, baseG, fd, baseFD)
	})
}

// TestFS_ManyFollowersOneAddress serves 200 concurrent follow streams from
// one client address; a limit hit is a clear 429.
func TestFS_ManyFollowersOneAddress(t *testing.T) {
	f := startFSFixture(t)
	path := filepath.Join(f.allocDir, "alloc", "data", "shared.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	got := make(chan struct{}, n)
	opened := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := openFollow(ctx, f.url(f.srv.URL(), "stream", "path=alloc/data/shared.log"))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			opened <- struct{}{}
			dec := json.NewDecoder(resp.Body)
			for {
				var fr nomad.StreamFrame
				if err := dec.Decode(&fr); err != nil {
					errs <- err
					return
				}
				if strings.Contains(string(fr.Data), "hello") {
					got <- struct{}{}
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case <-opened:
		case err := <-errs:
			t.Fatalf("a follower failed: %v", err)
		case <-ctx.Done():
			t.Fatalf("only %d of %d followers opened", i, n)
		}
	}
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString("hello\n")
	fh.Close()
	for i := 0; i < n; i++ {
		select {
		case <-got:
		case err := <-errs:
			t.Fatalf("a follower failed: %v", err)
		case <-ctx.Done():
			t.Fatalf("only %d of %d followers got the write", i, n)
		}
	}
	cancel()
	wg.Wait()
	waitFor(t, 10*time.Second, "followers closed", func() (bool, error) { return f.srv.OpenStreams() == 0, nil })

	// Over the agent's stream limit: 429 at once, not a hang.
	f.srv.SetMaxStreams(1)
	defer f.srv.SetMaxStreams(0)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	first, err := openFollow(ctx2, f.url(f.srv.URL(), "stream", "path=alloc/data/shared.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	code, body, _ := do(t, "GET", f.url(f.srv.URL(), "stream", "path=alloc/data/shared.log"), nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("stream over the limit = %d %q; want 429", code, body)
	}
}

// TestFS_EscapeSuite tries to read host files out of the allocation dir
// through a server and directly: every attempt is a 4xx, never host data,
// never a host path.
func TestFS_EscapeSuite(t *testing.T) {
	f := startFSFixture(t)
	data := filepath.Join(f.allocDir, "alloc", "data")
	for name, target := range map[string]string{
		"hostdir":  "/etc",
		"hostfile": "/etc/passwd",
		"climb":    "../../../../../../../../etc/passwd",
		"climbdir": "../../..",
		"inside":   "../tmp",
	} {
		if err := os.Symlink(target, filepath.Join(data, name)); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		op, query string
		code      int
	}{
		{"cat", "path=../etc/passwd", 400},
		{"cat", "path=../../../../../../etc/passwd", 400},
		{"cat", "path=/etc/passwd", 404},
		{"cat", "path=alloc/../../../etc/passwd", 400},
		{"cat", "path=%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400},
		{"cat", "path=%252e%252e%252fetc%252fpasswd", 404},
		{"cat", "path=alloc/data/hostdir/passwd", 400},
		{"ls", "path=alloc/data/hostdir", 400},
		{"cat", "path=alloc/data/hostfile", 400},
		{"stat", "path=alloc/data/hostfile", 400},
		{"readat", "path=alloc/data/hostfile&offset=0&limit=100", 400},
		{"stream", "path=alloc/data/hostfile&follow=false", 400},
		{"cat", "path=alloc/data/climb", 400},
		{"ls", "path=alloc/data/climbdir", 400},
		{"cat", "path=web/secrets/token", 403},
		{"stream", "path=web/secrets/token&follow=false", 403},
		{"logs", "task=../../etc&type=stdout", 400},
		{"cat", "path=%00", 400},
		{"ls", "path=alloc/data/inside", 200},
	}
	for _, base := range []string{f.srv.URL(), f.node.URL()} {
		for _, tc := range cases {
			code, body, _ := do(t, "GET", f.url(base, tc.op, tc.query), nil)
			if code != tc.code {
				t.Errorf("%s %s?%s = %d %q; want %d", base, tc.op, tc.query, code, body, tc.code)
			}
			if strings.Contains(body, "root:") || strings.Contains(body, f.node.cfg.DataDir) || strings.Contains(body, "secret\n") {
				t.Errorf("%s?%s leaked %q", tc.op, tc.query, body)
			}
		}
	}

	// A symlink swapped in while a stream is open is never followed.
	swap := filepath.Join(data, "swap.txt")
	if err := os.WriteFile(swap, []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := openFollow(ctx, f.url(f.srv.URL(), "stream", "path=alloc/data/swap.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := os.Remove(swap); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", swap); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body) // the stream ends after "file deleted"
	if strings.Contains(string(body), "cm9vd") /* base64 of "root" */ || strings.Contains(string(body), "root:") {
		t.Fatalf("stream followed a swapped-in symlink: %q", body)
	}
	if !strings.Contains(string(body), "file deleted") {
		t.Fatalf("stream body %q; want a file deleted event", body)
	}
}

// TestFS_RotationUnderLiveWrites follows a task's stdout while it writes
// numbered lines across rotations; every line arrives once, in order.
func TestFS_RotationUnderLiveWrites(t *testing.T) {
	const lines = 250000
	task := shellTask("writer", fmt.Sprintf(`sleep 1; seq 1 %d | while read i; do echo "line $i"; done; while :; do sleep 1; done`, lines))
	task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(10), MaxFileSizeMB: ptr(1)}
	f := startFSFixture(t, task)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	resp, err := openFollow(ctx, f.url(f.srv.URL(), "logs", "task=writer&type=stdout&follow=true&plain=true"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := 1
	for next <= lines && sc.Scan() {
		want := "line " + strconv.Itoa(next)
		if sc.Text() != want {
			t.Fatalf("got %q; want %q (lost or repeated bytes across rotation)", sc.Text(), want)
		}
		next++
	}
	if next <= lines {
		t.Fatalf("stream ended at line %d: %v", next, sc.Err())
	}
	ls, _, err := f.api.AllocFS().List(&nomad.Allocation{ID: f.allocID, NodeID: f.node.Client().NodeID()}, "alloc/logs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rotated := 0
	for _, fi := range ls {
		if strings.HasPrefix(fi.Name, "writer.stdout.") {
			rotated++
		}
	}
	if rotated < 2 {
		t.Fatalf("only %d stdout files; the test wants rotation", rotated)
	}
}

// TestFS_AbortedBulkReadsLeakNothing aborts 100 large reads through the
// server, each after its first bytes: the bytes come on data connections
// the node dials back, and every connection, stream, token and goroutine
// must go when the caller does.
func TestFS_AbortedBulkReadsLeakNothing(t *testing.T) {
	f := startFSFixture(t)
	data := make([]byte, 16<<20)
	if err := os.WriteFile(filepath.Join(f.allocDir, "alloc", "data", "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	abort := func(query string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", f.url(f.srv.URL(), "readat", query), nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("readat %s: %v", query, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("readat %s: status %d", query, resp.StatusCode)
		}
		buf := make([]byte, 1024)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatalf("readat %s: %v", query, err)
		}
	}
	// One whole read first: the data connection path works end to end.
	resp, err := hc.Get(f.url(f.srv.URL(), "cat", "path=alloc/data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != int64(len(data)) {
		t.Fatalf("cat = %d bytes, %v; want %d", n, err, len(data))
	}
	for i := 0; i < 3; i++ {
		abort("path=alloc/data/big.bin&offset=0&limit=-1")
	}
	tr.CloseIdleConnections()
	var baseG, baseFD int
	waitFor(t, 10*time.Second, "quiet baseline", func() (bool, error) {
		runtime.GC()
		baseG, baseFD = runtime.NumGoroutine(), openFDs()
		return f.srv.OpenStreams() == 0 && f.node.OpenStreams() == 0, nil
	})
	before := aroundSession(f)
	for i := 0; i < 100; i++ {
		abort(fmt.Sprintf("path=alloc/data/big.bin&offset=%d&limit=-1", i*4096))
	}
	if n := aroundSession(f) - before; n != 100 {
		t.Fatalf("%d of 100 reads came on a data connection or as a data call", n)
	}
	tr.CloseIdleConnections()
	waitFor(t, 30*time.Second, "goroutines and fds back to baseline", func() (bool, error) {
		// splice(2) keeps pipes in a pool that the collector empties
		// (closing them); they are not connections left open.
		runtime.GC()
		g, fd := runtime.NumGoroutine(), openFDs()
		if s := f.srv.OpenStreams() + f.node.OpenStreams(); s != 0 {
			return false, fmt.Errorf("%d streams still open", s)
		}
		return g <= baseG+5 && fd <= baseFD+2, fmt.Errorf("goroutines %d (baseline %d), fds %d (baseline %d)", g, baseG, fd, baseFD)
	})
}

// aroundSession counts the bulk reads that went around the node's session:
// on a new data connection, or as a data call on one an earlier read left.
func aroundSession(f *fsFixture) uint64 {
	st := f.srv.Server().Stats()
	return st["data_connections"] + st["data_calls"]
}

// TestFS_DataConnections: through the server that holds the node's
// session, bulk reads (cat and readat of 256 KiB or more, logs without
// follow) come on a data connection and read the same as on the node
// itself; small reads and follows stay on the stream.
func TestFS_DataConnections(t *testing.T) {
	f := startFSFixture(t, shellTask("web", `yes "0123456789abcdefghi" | head -c 1000000; while :; do sleep 1; done`))
	big := bytes.Repeat([]byte("tether"), 100_000)
	if err := os.WriteFile(filepath.Join(f.allocDir, "alloc", "data", "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the task's log", func() (bool, error) {
		fi, err := os.Stat(filepath.Join(f.allocDir, "alloc", "logs", "web.stdout.0"))
		return err == nil && fi.Size() == 1000000, nil
	})
	// In this order: the cat dials a data connection and leaves it to the
	// server, which then makes the reads as data calls on it; small reads
	// never dial one; log reads always dial their own.
	for _, tc := range []struct {
		name, op, query string
		newConn, around bool // dials a data connection; bytes go around the session
	}{
		{"cat", "cat", "path=alloc/data/big.bin", true, true},
		{"readat", "readat", "path=alloc/data/big.bin&offset=7&limit=300000", false, true},
		{"small readat", "readat", "path=alloc/data/big.bin&offset=7&limit=1000", false, true},
		{"plain logs", "logs", "task=web&type=stdout&plain=true", true, true},
		{"framed logs", "logs", "task=web&type=stdout", true, true},
		{"logs from the end", "logs", "task=web&type=stdout&plain=true&origin=end&offset=5000", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, direct, _ := do(t, "GET", f.url(f.node.URL(), tc.op, tc.query), nil)
			conns, around := f.srv.Server().Stats()["data_connections"], aroundSession(f)
			code, via, _ := do(t, "GET", f.url(f.srv.URL(), tc.op, tc.query), nil)
			if code != 200 || via != direct || len(via) == 0 {
				t.Fatalf("via server: %d, %d bytes; direct %d bytes", code, len(via), len(direct))
			}
			if dialed := f.srv.Server().Stats()["data_connections"] > conns; dialed != tc.newConn {
				t.Fatalf("dialed a data connection = %v; want %v", dialed, tc.newConn)
			}
			if went := aroundSession(f) > around; went != tc.around {
				t.Fatalf("went around the session = %v; want %v", went, tc.around)
			}
		})
	}
	t.Run("small reads stay on the stream without a pooled connection", func(t *testing.T) {
		f.srv.Server().DropData(f.node.Client().NodeID())
		around := aroundSession(f)
		code, body, _ := do(t, "GET", f.url(f.srv.URL(), "readat", "path=alloc/data/big.bin&offset=7&limit=1000"), nil)
		if code != 200 || body != string(big[7:1007]) || aroundSession(f) != around {
			t.Fatalf("small readat: %d, %d bytes, around the session %v", code, len(body), aroundSession(f) != around)
		}
		// A read of 32 KiB or more dials again and leaves a connection
		// behind for the next ones.
		conns := f.srv.Server().Stats()["data_connections"]
		code, body, _ = do(t, "GET", f.url(f.srv.URL(), "readat", "path=alloc/data/big.bin&offset=7&limit=65536"), nil)
		if code != 200 || body != string(big[7:7+65536]) || f.srv.Server().Stats()["data_connections"] != conns+1 {
			t.Fatalf("64 KiB readat: %d, %d bytes, dialed %d data connections; want 1", code, len(body), f.srv.Server().Stats()["data_connections"]-conns)
		}
	})
	t.Run("later reads are data calls", func(t *testing.T) {
		before := f.srv.Server().Stats()["data_calls"]
		for i := 0; i < 5; i++ {
			code, body, _ := do(t, "GET", f.url(f.srv.URL(), "readat", fmt.Sprintf("path=alloc/data/big.bin&offset=%d&limit=300000", i)), nil)
			if code != 200 || body != string(big[i:i+300000]) {
				t.Fatalf("readat %d: %d, %d bytes", i, code, len(body))
			}
		}
		if n := f.srv.Server().Stats()["data_calls"] - before; n < 5 {
			t.Fatalf("%d of 5 sequential reads were data calls; want 5", n)
		}
		// Errors come back as the node's answers, the same as on the
		// stream, and leave the connection in the pool.
		for _, tc := range []struct {
			query string
			code  int
		}{
			{"path=alloc/data/missing.bin&offset=0&limit=300000", 404},
			{"path=alloc/data&offset=0&limit=300000", 400},
			{"path=../../etc/passwd&offset=0&limit=300000", 400},
		} {
			_, directBody, _ := do(t, "GET", f.url(f.node.URL(), "readat", tc.query), nil)
			code, body, _ := do(t, "GET", f.url(f.srv.URL(), "readat", tc.query), nil)
			if code != tc.code || body != directBody {
				t.Fatalf("%s: %d %q via the server; want %d %q as on the node", tc.query, code, body, tc.code, directBody)
			}
		}
		calls := f.srv.Server().Stats()["data_calls"]
		code, body, _ := do(t, "GET", f.url(f.srv.URL(), "cat", "path=alloc/data/big.bin"), nil)
		if code != 200 || body != string(big) || f.srv.Server().Stats()["data_calls"] != calls+1 {
			t.Fatalf("cat after errors: %d, %d bytes, data calls %d -> %d", code, len(body), calls, f.srv.Server().Stats()["data_calls"])
		}
	})
	t.Run("follow stays on the stream", func(t *testing.T) {
		before := f.srv.Server().Stats()["data_connections"]
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := openFollow(ctx, f.url(f.srv.URL(), "logs", "task=web&type=stdout&plain=true&follow=true&origin=end&offset=10"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 10)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		if f.srv.Server().Stats()["data_connections"] != before {
			t.Fatal("a follow stream used a data connection")
		}
	})
}
