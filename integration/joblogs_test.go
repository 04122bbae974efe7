package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	sse "github.com/tmaxmax/go-sse"
)

// These tests cover job-wide logs (issue #17 part 1): GET
// /v1/job/:job_id/logs fans out to every allocation's node through the
// routed logs call and merges the lines, tagged.

// jobLogsURL is the job-wide log URL of job with the query extra.
func jobLogsURL(base, job, extra string) string {
	return base + "/v1/job/" + job + "/logs?" + extra
}

// tickerTask is a mock_driver task writing "<name> tick\n" every 50 ms
// for an hour.
func tickerTask(name string) *nomad.Task {
	return mockTask(name, map[string]any{"run_for": "1h", "stdout_string": name + " tick\n",
		"stdout_repeat": 1000000, "stdout_repeat_duration": "50ms"})
}

// groupJob is a service job of one group of count allocations of task,
// on distinct nodes when distinct is set.
func groupJob(id string, count int, distinct bool, tasks ...*nomad.Task) *nomad.Job {
	tg := &nomad.TaskGroup{Name: ptr("g"), Count: ptr(count), Tasks: tasks,
		RestartPolicy: &nomad.RestartPolicy{Attempts: ptr(0), Interval: ptr(time.Hour), Delay: ptr(time.Second), Mode: ptr("fail")}}
	if distinct {
		tg.Constraints = []*nomad.Constraint{{Operand: "distinct_hosts", RTarget: "true"}}
	}
	return &nomad.Job{ID: ptr(id), Type: ptr("service"), Datacenters: []string{"dc1"}, TaskGroups: []*nomad.TaskGroup{tg}}
}

// registerRunning registers job and waits until n of its allocations
// meant to run are running and every one stopped has finished.
func registerRunning(t testing.TB, api *nomad.Client, job *nomad.Job, n int) []*nomad.AllocationListStub {
	t.Helper()
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register %s: %v", *job.ID, err)
	}
	var running []*nomad.AllocationListStub
	waitFor(t, 30*time.Second, fmt.Sprintf("%d allocations of %s running", n, *job.ID), func() (bool, error) {
		allocs, _, err := api.Jobs().Allocations(*job.ID, false, nil)
		if err != nil {
			return false, err
		}
		running = running[:0]
		stopping := 0
		for _, a := range allocs {
			switch {
			case a.DesiredStatus == "run" && a.ClientStatus == "running":
				running = append(running, a)
			case a.DesiredStatus != "run" && a.ClientStatus == "running":
				stopping++
			}
		}
		return len(running) == n && stopping == 0, fmt.Errorf("%d running, %d stopping", len(running), stopping)
	})
	return running
}

// jobLogRecord is one NDJSON record of a job-wide log.
type jobLogRecord struct {
	ndjsonRecord
	Error string `json:"error"`
}

// recordStream reads a job-wide stream's lines into what it keeps, in a
// goroutine that ends with the response's body (closed by the test's
// cleanup at the latest).
type recordStream struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	body  io.Closer
}

// openRecords opens u and reads its lines.
func openRecords(t *testing.T, u string) *recordStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", u, err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s = %d %q", u, resp.StatusCode, b)
	}
	s := &recordStream{t: t, done: make(chan struct{}), body: resp.Body}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		s.body.Close()
		<-s.done
	})
	return s
}

// text returns the lines read so far.
func (s *recordStream) text() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// snapshot returns the NDJSON records read so far.
func (s *recordStream) snapshot() []jobLogRecord {
	var out []jobLogRecord
	for _, l := range s.text() {
		var r jobLogRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			s.t.Fatalf("record %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// linesByAlloc counts the line records of each allocation.
func linesByAlloc(recs []jobLogRecord) map[string]int {
	out := map[string]int{}
	for _, r := range recs {
		if r.Line != nil {
			out[r.Alloc]++
		}
	}
	return out
}

// endsByAlloc says which allocations have an end record.
func endsByAlloc(recs []jobLogRecord) map[string]bool {
	out := map[string]bool{}
	for _, r := range recs {
		if r.End != nil {
			out[r.Alloc] = true
		}
	}
	return out
}

// TestJobLogs_FollowAcrossNodes follows a job whose allocations run on
// three nodes, each bound to another of three servers, through one
// server: the two first allocations' lines come tagged; when the job's
// count is raised mid-follow, the allocations placed join (Tether's
// scheduler replaces a group's allocations when any of the group
// changes, its count too, so the two first leave, with end records); a
// stopped one leaves with an end record.
func TestJobLogs_FollowAcrossNodes(t *testing.T) {
	c := startCluster(t, 3)
	var nodes []*testAgent
	for i, s := range c.servers {
		nodes = append(nodes, startNode(t, fmt.Sprintf("node%d", i), withServers(s.RPCAddr()), withMockDriver()))
	}
	api := c.servers[0].API(t)
	waitFor(t, 20*time.Second, "three nodes ready", func() (bool, error) {
		list, err := listNodes(c.servers[0].URL())
		ready := 0
		for _, n := range list {
			if n.Status == "ready" {
				ready++
			}
		}
		return ready == 3, err
	})
	registerRunning(t, api, groupJob("web", 2, true, tickerTask("t")), 2)

	st := openRecords(t, jobLogsURL(c.servers[0].URL(), "web", "follow=true&format=ndjson"))
	plain := openRecords(t, jobLogsURL(c.servers[1].URL(), "web", "follow=true&lines=1"))
	waitFor(t, 20*time.Second, "lines of both allocations", func() (bool, error) {
		return len(linesByAlloc(st.snapshot())) == 2, nil
	})
	for _, r := range st.snapshot() {
		if r.Line != nil && (*r.Line != "t tick" || r.Task != "t" || r.Type != "stdout" || r.Alloc == "") {
			t.Fatalf("record %+v; want t's tick labelled", r)
		}
	}

	first := linesByAlloc(st.snapshot())

	// Raise the count: every allocation running now, on three nodes,
	// joins; any of the first two that was replaced has left with an end.
	running := registerRunning(t, api, groupJob("web", 3, true, tickerTask("t")), 3)
	onNodes := map[string]bool{}
	for _, a := range running {
		onNodes[a.NodeID] = true
	}
	if len(onNodes) != 3 {
		t.Fatalf("allocations on %d nodes; want 3", len(onNodes))
	}
	waitFor(t, 20*time.Second, "lines of the allocations running", func() (bool, error) {
		recs := st.snapshot()
		lines, ended := linesByAlloc(recs), endsByAlloc(recs)
		for _, a := range running {
			if lines[a.ID] == 0 {
				return false, fmt.Errorf("no line of %s yet", a.ID)
			}
		}
		for id := range first {
			if !slices.ContainsFunc(running, func(a *nomad.AllocationListStub) bool { return a.ID == id }) && !ended[id] {
				return false, fmt.Errorf("replaced %s has no end record", id)
			}
		}
		return true, nil
	})

	// Stop one: it leaves with an end record, the others go on.
	gone := running[0].ID
	if _, err := api.Allocations().Stop(&nomad.Allocation{ID: gone}, nil); err != nil {
		t.Fatal(err)
	}
	var endAt int
	waitFor(t, 30*time.Second, "the end record of the stopped allocation", func() (bool, error) {
		for i, r := range st.snapshot() {
			if r.End != nil && r.Alloc == gone {
				endAt = i
				return true, nil
			}
		}
		return false, nil
	})
	end := st.snapshot()[endAt]
	if end.End.State != "dead" || end.Task != "t" {
		t.Errorf("end record %+v; want task t dead", end)
	}
	// In plain form (through another server), an end line.
	waitFor(t, 10*time.Second, "the plain end line", func() (bool, error) {
		return slices.ContainsFunc(plain.text(), func(l string) bool {
			return strings.HasPrefix(l, "["+gone[:8]+" t] end state=dead ")
		}), nil
	})
	waitFor(t, 20*time.Second, "the others' lines after the end", func() (bool, error) {
		after := linesByAlloc(st.snapshot()[endAt+1:])
		return after[gone] == 0 && len(after) >= 2, fmt.Errorf("after the end: %v", after)
	})
	for _, r := range st.snapshot() {
		if r.Error != "" {
			t.Errorf("error record %+v", r)
		}
	}
}

// jobLogsCluster is a server and a node running a job "w" of two raw_exec
// allocations, each printing line-1 .. line-20 and sleeping; it returns
// them with the allocation IDs.
func jobLogsCluster(t *testing.T, opts ...agentOpt) (*testAgent, *testAgent, []string) {
	t.Helper()
	srv, node := logsCluster(t, opts...)
	running := registerRunning(t, srv.API(t), groupJob("w", 2, false,
		shellTask("t", `seq -f 'line-%g' 1 20; while :; do sleep 1; done`)), 2)
	var ids []string
	for _, a := range running {
		ids = append(ids, a.ID)
	}
	sort.Strings(ids)
	for _, id := range ids {
		waitFor(t, 10*time.Second, "the log of "+id, func() (bool, error) {
			return logsOnDisk(node.cfg.DataDir+"/alloc/"+id, "t", "stdout") == 9*7+11*8, nil
		})
	}
	return srv, node, ids
}

// plainByAlloc splits a plain job log into each allocation's lines
// (without the tag), keyed by the tag's allocation prefix.
func plainByAlloc(t *testing.T, body string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if l == "" {
			continue
		}
		tag, rest, ok := strings.Cut(l, "] ")
		alloc, task, ok2 := strings.Cut(strings.TrimPrefix(tag, "["), " ")
		if !ok || !ok2 || !strings.HasPrefix(tag, "[") || len(alloc) != 8 || task != "t" {
			t.Fatalf("line %q: want [alloc8 t] before the line", l)
		}
		out[alloc] = append(out[alloc], rest)
	}
	return out
}

func wantLines(from, to int) string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("line-%d", i))
	}
	return strings.Join(out, ",")
}

// TestJobLogs_Forms reads the job in every form, with lines, since and
// timestamps, through the server and through a node-only agent (which
// forwards the call to its server).
func TestJobLogs_Forms(t *testing.T) {
	srv, node, ids := jobLogsCluster(t)
	for _, base := range []string{srv.URL(), node.URL()} {
		t.Run(strings.TrimPrefix(base, "http://"), func(t *testing.T) {
			// Plain (the default): every line of each, tagged.
			body, h := getOK(t, jobLogsURL(base, "w", "task=t"))
			if ct := h.Get("Content-Type"); ct != "text/plain" || h.Get("X-Accel-Buffering") != "no" {
				t.Errorf("Content-Type %q, X-Accel-Buffering %q", ct, h.Get("X-Accel-Buffering"))
			}
			got := plainByAlloc(t, body)
			if len(got) != 2 {
				t.Fatalf("plain: lines of %d allocations; want 2: %q", len(got), body)
			}
			for _, id := range ids {
				if l := strings.Join(got[id[:8]], ","); l != wantLines(1, 20) {
					t.Errorf("plain %s = %s; want line-1..20", id[:8], l)
				}
			}
			// lines=N: the last N of each allocation; the task is implied
			// (its group runs one).
			got = plainByAlloc(t, must(getOK(t, jobLogsURL(base, "w", "lines=3"))))
			for _, id := range ids {
				if l := strings.Join(got[id[:8]], ","); l != wantLines(18, 20) {
					t.Errorf("lines=3 %s = %s; want line-18..20", id[:8], l)
				}
			}
			// timestamps: the capture time after the tag.
			got = plainByAlloc(t, must(getOK(t, jobLogsURL(base, "w", "lines=1&timestamps=true"))))
			for _, id := range ids {
				ts, line, _ := strings.Cut(strings.Join(got[id[:8]], ","), " ")
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || line != "line-20" {
					t.Errorf("timestamps %s = %q; want a stamp and line-20", id[:8], got[id[:8]])
				}
			}
			// since: an hour back is everything; a time to come is nothing.
			got = plainByAlloc(t, must(getOK(t, jobLogsURL(base, "w", "since=1h"))))
			for _, id := range ids {
				if l := strings.Join(got[id[:8]], ","); l != wantLines(1, 20) {
					t.Errorf("since=1h %s = %s", id[:8], l)
				}
			}
			later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
			if body := must(getOK(t, jobLogsURL(base, "w", "since="+later))); body != "" {
				t.Errorf("since=%s = %q; want nothing", later, body)
			}
			// NDJSON: the labels as fields.
			body, h = getOK(t, jobLogsURL(base, "w", "format=ndjson&lines=2"))
			if ct := h.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type = %q", ct)
			}
			byAlloc := map[string][]string{}
			for _, r := range parseNDJSON(t, body) {
				if r.Line == nil || r.Task != "t" || r.Type != "stdout" || r.T == nil {
					t.Fatalf("record %+v; want a stamped line of t", r)
				}
				byAlloc[r.Alloc] = append(byAlloc[r.Alloc], *r.Line)
			}
			for _, id := range ids {
				if l := strings.Join(byAlloc[id], ","); l != wantLines(19, 20) {
					t.Errorf("ndjson %s = %s", id, l)
				}
			}
		})
	}

	// SSE, read by a real SSE client: the records as events, ids
	// carrying the allocation.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", jobLogsURL(srv.URL(), "w", "format=sse&lines=2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	byAlloc := map[string][]string{}
	var lastID string
	conn := (&sse.Client{HTTPClient: http.DefaultClient, Backoff: sse.Backoff{MaxRetries: -1}}).NewConnection(req)
	conn.SubscribeToAll(func(ev sse.Event) {
		mu.Lock()
		lastID = ev.LastEventID
		mu.Unlock()
		if ev.Data == "" {
			return // the cursor, an id-only message
		}
		var r ndjsonRecord
		if err := json.Unmarshal([]byte(ev.Data), &r); err != nil || r.Line == nil {
			t.Errorf("event %+v: %v", ev, err)
			return
		}
		mu.Lock()
		byAlloc[r.Alloc] = append(byAlloc[r.Alloc], *r.Line)
		mu.Unlock()
	})
	_ = conn.Connect() // the stream ends: io.EOF, no retry
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if l := strings.Join(byAlloc[id], ","); l != wantLines(19, 20) {
			t.Errorf("sse %s = %s", id, l)
		}
	}
	// The last id is the job's cursor: each allocation at its log's end.
	cur := strings.Split(lastID, ",")
	slices.Sort(cur)
	if want := []string{ids[0][:8] + "=0.151", ids[1][:8] + "=0.151"}; !slices.Equal(cur, want) {
		t.Errorf("last event id %q; want the cursor %v", lastID, want)
	}
}

func must(s string, _ http.Header) string { return s }

// TestJobLogs_BadInput: each bad parameter is a 400 naming it; an
// unknown job or one without allocations a 404; a follow of a job with
// none waits for its first.
func TestJobLogs_BadInput(t *testing.T) {
	srv, _, _ := jobLogsCluster(t)
	api := srv.API(t)
	two := groupJob("two", 1, false, shellTask("a", "sleep 600"), shellTask("b", "sleep 600"))
	registerRunning(t, api, two, 1)
	nowhere := groupJob("nowhere", 1, false, shellTask("t", `echo here; while :; do sleep 1; done`))
	nowhere.TaskGroups[0].Constraints = []*nomad.Constraint{{LTarget: "${meta.rack}", RTarget: "r9", Operand: "="}}
	if _, _, err := api.Jobs().Register(nowhere, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		job, query string
		code       int
		text       string
	}{
		{"w", "lines=-1", 400, "lines"},
		{"w", "lines=100001", 400, "lines"},
		{"w", "lines=ten", 400, "lines"},
		{"w", "since=yesterday", 400, "since"},
		{"w", "format=xml", 400, "format"},
		{"w", "format=json", 400, "format"},
		{"w", "type=stdin", 400, "log type"},
		{"w", "timestamps=maybe", 400, "timestamps"},
		{"w", "follow=maybe", 400, "follow"},
		{"w", "max_allocs=0", 400, "max_allocs"},
		{"w", "max_allocs=257", 400, "max_allocs"},
		{"w", "after=0.12", 400, "after"},
		{"w", "task=nope", 400, `task "nope"`},
		{"two", "", 400, "please specify the task"},
		{"missing", "", 404, "job not found"},
		{"nowhere", "", 404, "job has no allocations"},
	}
	for _, tc := range cases {
		code, body, _ := do(t, "GET", jobLogsURL(srv.URL(), tc.job, tc.query), nil)
		if code != tc.code || !strings.Contains(body, tc.text) {
			t.Errorf("GET job %s ?%s = %d %q; want %d naming %s", tc.job, tc.query, code, body, tc.code, tc.text)
		}
	}
	if code, _, _ := do(t, "PUT", jobLogsURL(srv.URL(), "w", ""), nil); code != 405 {
		t.Errorf("PUT = %d; want 405", code)
	}
	// Good bounds pass.
	for _, q := range []string{"lines=100000", "lines=0", "max_allocs=256", "max_allocs=1", "task=a", "task=b"} {
		job := "w"
		if strings.HasPrefix(q, "task=") {
			job = "two"
		}
		getOK(t, jobLogsURL(srv.URL(), job, q))
	}

	// A follow of a job with no allocations waits; the first one placed
	// (when a node that fits registers) joins.
	st := openRecords(t, jobLogsURL(srv.URL(), "nowhere", "follow=true&format=ndjson"))
	startNode(t, "rack9", withServers(srv.RPCAddr()), withMockDriver(), withMeta(map[string]string{"rack": "r9"}))
	waitFor(t, 30*time.Second, "the first allocation's line", func() (bool, error) {
		for _, r := range st.snapshot() {
			if r.Line != nil && *r.Line == "here" {
				return true, nil
			}
		}
		return false, nil
	})
}

// TestJobLogs_ACL: read-logs (the capability of fs/logs) on the job's
// namespace is needed; each allocation's call carries the caller's token,
// which the node checks again.
func TestJobLogs_ACL(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withACL(time.Second))
	registerRunning(t, mgmt, groupJob("acl", 2, false, tickerTask("t")), 2)
	readJob := makeToken(t, mgmt, "read-job", `namespace "default" { capabilities = ["read-job"] }`)
	readLogs := makeToken(t, mgmt, "read-logs", `namespace "default" { capabilities = ["read-logs"] }`)
	other := makeToken(t, mgmt, "other-ns", `namespace "other" { capabilities = ["read-logs"] }`)
	for _, base := range []string{srv.URL(), node.URL()} {
		for _, tc := range []struct {
			name, secret string
			code         int
		}{
			{"no token", "", 403},
			{"bogus", "00000000-0000-0000-0000-000000000000", 403},
			{"read-job", readJob, 403},
			{"other namespace", other, 403},
			{"read-logs", readLogs, 200},
			{"management", mgmtSecret, 200},
		} {
			var hdr []string
			if tc.secret != "" {
				hdr = []string{"X-Nomad-Token", tc.secret}
			}
			code, body, _ := do(t, "GET", jobLogsURL(base, "acl", "lines=1&format=ndjson"), nil, hdr...)
			if code != tc.code {
				t.Errorf("%s via %s = %d %q; want %d", tc.name, base, code, body, tc.code)
				continue
			}
			if code == 200 {
				byAlloc := map[string]int{}
				for _, r := range parseNDJSON(t, body) {
					if r.Line == nil {
						t.Errorf("%s: record %+v; want lines only", tc.name, r)
						continue
					}
					byAlloc[r.Alloc]++
				}
				if len(byAlloc) != 2 {
					t.Errorf("%s via %s: lines of %d allocations: %q", tc.name, base, len(byAlloc), body)
				}
			}
		}
	}
}

// TestJobLogs_CallerGoesAway opens follows of a job of three allocations
// and leaves: every branch stops, the agents' streams and the goroutines
// go back to their baseline.
func TestJobLogs_CallerGoesAway(t *testing.T) {
	srv, node := logsCluster(t)
	registerRunning(t, srv.API(t), groupJob("away", 3, false, tickerTask("t")), 3)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	open := func(u string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("job logs: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("job logs: status %d", resp.StatusCode)
		}
		// The first line: the branches are open to the node. Leave.
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatalf("first line: %v", err)
		}
	}
	quiet := func() (bool, error) {
		for _, a := range []*testAgent{srv, node} {
			if n := a.OpenStreams(); n != 0 {
				return false, fmt.Errorf("%s has %d streams open", a.cfg.Name, n)
			}
		}
		return true, nil
	}
	urls := []string{jobLogsURL(srv.URL(), "away", "follow=true"), jobLogsURL(srv.URL(), "away", "follow=true&format=ndjson&lines=5"),
		jobLogsURL(node.URL(), "away", "follow=true&format=sse")}
	for _, u := range urls {
		open(u) // warm the pools
	}
	tr.CloseIdleConnections()
	var baseG int
	waitFor(t, 10*time.Second, "quiet baseline", func() (bool, error) {
		baseG = runtime.NumGoroutine()
		return quiet()
	})
	for i := 0; i < 30; i++ {
		open(urls[i%len(urls)])
	}
	tr.CloseIdleConnections()
	waitFor(t, 20*time.Second, "streams and goroutines back to baseline", func() (bool, error) {
		if ok, err := quiet(); !ok {
			return false, err
		}
		g := runtime.NumGoroutine()
		return g <= baseG+5, fmt.Errorf("goroutines %d (baseline %d)", g, baseG)
	})
}

// TestJobLogs_CLI runs "tether job logs": the last lines of each
// allocation, tagged; NDJSON with -json; a follow by a job ID prefix
// ended by Ctrl-C with exit 0; bad input as an error and exit 1.
func TestJobLogs_CLI(t *testing.T) {
	srv, _, ids := jobLogsCluster(t)
	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	r := runTether(t, env, "", "job", "logs", "-n", "2", "-timestamps", "w", "t").ok(t)
	got := plainByAlloc(t, r.stdout)
	for _, id := range ids {
		lines := got[id[:8]]
		if len(lines) != 2 || !strings.HasSuffix(lines[1], " line-20") {
			t.Errorf("job logs -n 2 -timestamps, %s: %q", id[:8], lines)
		}
	}
	r = runTether(t, env, "", "job", "logs", "-json", "-n", "1", "w").ok(t)
	recs := parseNDJSON(t, r.stdout)
	if len(recs) != 2 || recs[0].Alloc == recs[1].Alloc || *recs[0].Line != "line-20" {
		t.Errorf("job logs -json -n 1 = %q", r.stdout)
	}
	for _, tc := range []struct {
		args []string
		text string
	}{
		{[]string{"job", "logs", "-since", "soon", "w"}, "since"},
		{[]string{"job", "logs", "nope"}, `No job(s) with prefix or id "nope" found`},
		{[]string{"job", "logs", "w", "other"}, `task "other" not found`},
	} {
		if r := runTether(t, env, "", tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.text) {
			t.Errorf("tether %v = exit %d %q; want 1 and %q", tc.args, r.code, r.stderr, tc.text)
		}
	}

	registerRunning(t, srv.API(t), groupJob("tickers", 2, false, tickerTask("t")), 2)
	p := startTetherProc(t, srv.URL(), "job", "logs", "-f", "-n", "1", "tick")
	seen := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for len(seen) < 2 {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("the CLI ended: %s", p.stderr.String())
			}
			tag, line, _ := strings.Cut(l, "] ")
			if line != "t tick" {
				t.Fatalf("line %q; want [alloc8 t] t tick", l)
			}
			seen[tag] = true
		case <-deadline:
			t.Fatalf("lines of %d allocations; want 2 (%s)", len(seen), p.stderr.String())
		}
	}
	if code := p.interrupt(t); code != 0 {
		t.Errorf("Ctrl-C: exit %d; want 0 (%s)", code, p.stderr.String())
	}
}

// TestJobLogs_SSEResumesWithLastEventID: a job-wide SSE follow cut twice,
// once in the first allocation's lines and once just after its end (the
// second allocation starts writing only then), is resumed by a real SSE
// client from the cursor it kept as its last event id: every line of
// both allocations arrives once, in order, and each end once.
func TestJobLogs_SSEResumesWithLastEventID(t *testing.T) {
	srv, node := logsCluster(t)
	const n = 30
	job := groupJob("resume", 2, false, shellTask("t", fmt.Sprintf(
		`while [ ! -e "$NOMAD_ALLOC_DIR/data/go" ]; do sleep 0.02; done; `+
			`i=1; while [ $i -le %d ]; do echo "line-$i"; i=$((i+1)); sleep 0.02; done`, n)))
	job.Type = ptr("batch")
	var ids []string
	for _, a := range registerRunning(t, srv.API(t), job, 2) {
		ids = append(ids, a.ID)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	lines := map[string][]string{}
	ends := map[string]int{}
	var resumedFrom []string
	var body io.Closer // the current connection's
	total := 0
	firstEnd := make(chan struct{})
	client := &sse.Client{
		HTTPClient: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(r)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				body = resp.Body
			}
			if id := r.Header.Get("Last-Event-ID"); id != "" {
				resumedFrom = append(resumedFrom, id)
			}
			return resp, err
		})},
		Backoff: sse.Backoff{InitialInterval: 10 * time.Millisecond, Jitter: -1, Multiplier: 1},
	}
	req, err := http.NewRequestWithContext(ctx, "GET", jobLogsURL(srv.URL(), "resume", "follow=true&format=sse"), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(ev sse.Event) {
		if ev.Data == "" {
			return // the cursor
		}
		var r ndjsonRecord
		if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
			t.Errorf("event %q: %v", ev.Data, err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Type == "end":
			ends[r.Alloc]++
			if len(ends) == 1 && ends[r.Alloc] == 1 {
				body.Close() // cut just after the first end
				close(firstEnd)
			}
			if len(ends) == 2 {
				cancel()
			}
		case r.Line != nil:
			lines[r.Alloc] = append(lines[r.Alloc], *r.Line)
			if total++; total == 10 {
				body.Close() // cut mid-stream
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	start := func(id string) {
		if err := os.WriteFile(filepath.Join(node.cfg.DataDir, "alloc", id, "alloc", "data", "go"), nil, 0o644); err != nil {
			t.Error(err)
		}
	}
	start(ids[0])
	select {
	case <-firstEnd:
		start(ids[1])
	case <-ctx.Done():
	}
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Fatalf("Connect: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumedFrom) < 2 {
		t.Fatalf("resumed %d times (%q); want 2", len(resumedFrom), resumedFrom)
	}
	for _, id := range resumedFrom {
		if !strings.Contains(id, "=") {
			t.Errorf("resumed from %q; want a job cursor", id)
		}
	}
	if !strings.Contains(resumedFrom[len(resumedFrom)-1], "=end") {
		t.Errorf("the last resume %q names no ended allocation", resumedFrom[len(resumedFrom)-1])
	}
	for _, id := range ids {
		if got := strings.Join(lines[id], ","); got != wantLines(1, n) {
			t.Errorf("%s: lines across the reconnections = %s; want each of 1..%d once, in order", id, got, n)
		}
		if ends[id] != 1 {
			t.Errorf("%s: %d end records; want 1", id, ends[id])
		}
	}
}
