package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/coverage"
	"sort"
	"strconv"
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// TestPathCount counts the functions and files of Tether that one call
// runs: a forwarded GET /v1/client/stats and a cat of a 1 MiB file, each
// sent to server A for a node whose session is on server B (one peer
// hop). It needs a coverage build and is a measurement, not a check:
//
//	TETHER_PATH_COUNT=1 go test -cover -coverpkg=tether/... -run TestPathCount -v ./integration/
//
// How: the coverage counters are written before and after each call;
// the blocks whose counts grew are what the call ran. Background work
// (heartbeats, stats sampling) could land in a window, so each call is
// measured three times and only functions seen in all three count.
func TestPathCount(t *testing.T) {
	if os.Getenv("TETHER_PATH_COUNT") == "" {
		t.Skip("measurement only: set TETHER_PATH_COUNT=1 and build with -cover -coverpkg=tether/...")
	}
	if testing.CoverMode() == "" {
		t.Skip("needs -cover -coverpkg=tether/...")
	}
	c := startCluster(t, 2)
	node := startNode(t, "node", withServers(c.servers[1].RPCAddr()), withRawExec())
	api := c.servers[0].API(t)
	job := &nomad.Job{
		ID: ptr("pc"), Name: ptr("pc"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{
			shellTask("t", `head -c 1048576 /dev/zero > "$NOMAD_ALLOC_DIR/data/f"; echo ready; while :; do sleep 1; done`),
		}}},
	}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	alloc := waitAllocsStatus(t, api, "pc", 1, "running")[0]
	base := c.servers[0].URL()
	stats := base + "/v1/client/stats?node_id=" + node.Client().NodeID()
	cat := base + "/v1/client/fs/cat/" + alloc.ID + "?path=alloc/data/f"
	waitFor(t, 20e9, "file written", func() (bool, error) {
		code, body, err := tryGet(cat)
		return code == 200 && len(body) == 1<<20, err
	})
	for _, tc := range []struct{ name, url string }{{"stats", stats}, {"cat", cat}} {
		var sets []map[string]bool
		for i := 0; i < 3; i++ {
			get(t, tc.url) // warm: routes cached, connections open
			before := snapshot(t)
			get(t, tc.url)
			sets = append(sets, ranFunctions(t, before, snapshot(t)))
		}
		funcs, files := map[string]bool{}, map[string]bool{}
		for f := range sets[0] {
			if sets[1][f] && sets[2][f] {
				funcs[f] = true
				files[strings.SplitN(f, ":", 2)[0]] = true
			}
		}
		var list []string
		for f := range funcs {
			list = append(list, f)
		}
		sort.Strings(list)
		t.Logf("%s through a peer server: %d functions in %d files\n%s", tc.name, len(funcs), len(files), strings.Join(list, "\n"))
	}
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
}

// snapshot writes the coverage counters and returns them as a text
// profile: block → count.
func snapshot(t *testing.T) map[string]int64 {
	t.Helper()
	dir := t.TempDir()
	if err := coverage.WriteMetaDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := coverage.WriteCountersDir(dir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "profile.txt")
	if b, err := exec.Command("go", "tool", "covdata", "textfmt", "-i", dir, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("covdata: %v: %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "mode:") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		n, _ := strconv.ParseInt(line[i+1:], 10, 64)
		m[line[:i]] += n
	}
	return m
}

// ranFunctions returns the functions ("file:func") with a block whose
// count grew between two snapshots.
func ranFunctions(t *testing.T, before, after map[string]int64) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	prof := filepath.Join(dir, "delta.out")
	var b strings.Builder
	b.WriteString("mode: set\n")
	for block, n := range after {
		ran := 0
		if n > before[block] {
			ran = 1
		}
		fmt.Fprintf(&b, "%s %d\n", block, ran)
	}
	if err := os.WriteFile(prof, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "cover", "-func", prof).CombinedOutput()
	if err != nil {
		t.Fatalf("cover -func: %v: %s", err, out)
	}
	funcs := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[0] == "total:" || fields[2] == "0.0%" {
			continue
		}
		file := fields[0][:strings.IndexByte(fields[0], ':')]
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		funcs[file+":"+fields[1]] = true
	}
	return funcs
}
