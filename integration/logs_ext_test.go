package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	sse "github.com/tmaxmax/go-sse"

	"tether/client"
	"tether/structs"
)

// These tests cover Tether's additions to fs/logs and fs/stream (issue #17
// parts 2 to 4), through a server that forwards to the node, with real
// raw_exec tasks.

// logsCluster is a server and a raw_exec node.
func logsCluster(t testing.TB, opts ...agentOpt) (*testAgent, *testAgent) {
	t.Helper()
	srv := startServer(t, "server1")
	node := startNode(t, "node1", append([]agentOpt{withServers(srv.RPCAddr()), withMockDriver()}, opts...)...)
	return srv, node
}

// runJob registers a job of one group per task (so that one task's
// failure does not kill the others) and returns its allocations by task.
func runJob(t testing.TB, api *nomad.Client, id, typ string, tasks ...*nomad.Task) map[string]string {
	t.Helper()
	job := &nomad.Job{ID: ptr(id), Type: ptr(typ), Datacenters: []string{"dc1"}}
	for _, task := range tasks {
		job.TaskGroups = append(job.TaskGroups, &nomad.TaskGroup{Name: ptr(task.Name), Tasks: []*nomad.Task{task},
			RestartPolicy: &nomad.RestartPolicy{Attempts: ptr(0), Interval: ptr(time.Hour), Delay: ptr(time.Second), Mode: ptr("fail")}})
	}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	byTask := map[string]string{}
	waitFor(t, 30*time.Second, "allocations of "+id, func() (bool, error) {
		allocs, _, err := api.Jobs().Allocations(id, false, nil)
		if err != nil {
			return false, err
		}
		for _, a := range allocs {
			byTask[a.TaskGroup] = a.ID
		}
		return len(byTask) == len(tasks), nil
	})
	return byTask
}

// waitStarted waits until the servers know the task started.
func waitStarted(t testing.TB, api *nomad.Client, alloc, task string) {
	t.Helper()
	waitFor(t, 30*time.Second, task+" started", func() (bool, error) {
		a, _, err := api.Allocations().Info(alloc, nil)
		if err != nil {
			return false, err
		}
		st := a.TaskStates[task]
		return st != nil && !st.StartedAt.IsZero(), nil
	})
}

// logsURL is the fs/logs URL of a task's stdout with extra parameters.
func logsURL(base, alloc, task, extra string) string {
	return base + "/v1/client/fs/logs/" + alloc + "?task=" + task + "&type=stdout&" + extra
}

// getOK GETs url and fails unless it answers 200.
func getOK(t *testing.T, u string, hdr ...string) (string, http.Header) {
	t.Helper()
	code, body, h := do(t, "GET", u, nil, hdr...)
	if code != 200 {
		t.Fatalf("GET %s = %d %q", u, code, body)
	}
	return body, h
}

// ndjsonRecord is one record of format=ndjson (or an SSE message's data).
type ndjsonRecord struct {
	T     *string        `json:"t"`
	Alloc string         `json:"alloc"`
	Task  string         `json:"task"`
	Type  string         `json:"type"`
	Line  *string        `json:"line"`
	Pos   string         `json:"pos"`
	End   *ndjsonTaskEnd `json:"end"`
}

type ndjsonTaskEnd struct {
	State      string    `json:"state"`
	Failed     bool      `json:"failed"`
	ExitCode   int       `json:"exit_code"`
	Signal     int       `json:"signal"`
	FinishedAt time.Time `json:"finished_at"`
}

func parseNDJSON(t *testing.T, body string) []ndjsonRecord {
	t.Helper()
	var out []ndjsonRecord
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r ndjsonRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("record %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// numberedLines is a script printing line-000001 ... line-<n> (12 bytes
// each), then a last line with no newline, then sleeping.
func numberedLines(n int, last string) string {
	return fmt.Sprintf(`seq -f 'line-%%06g' 1 %d; printf '%s'; while :; do sleep 1; done`, n, last)
}

func TestLogsExt_LinesAcrossRotationAndPartialLine(t *testing.T) {
	srv, node := logsCluster(t)
	api := srv.API(t)
	// 1 MiB files: line 87382 (bytes 1048572..1048583) straddles the
	// rotation from file 0 to file 1.
	const n = 87390
	allocs := runJob(t, api, "lines", "service", shellTask("t", numberedLines(n, "partial")))
	alloc := allocs["t"]
	waitFor(t, 30*time.Second, "the log written", func() (bool, error) {
		return logsOnDisk(node.cfg.DataDir+"/alloc/"+alloc, "t", "stdout") == n*12+7, nil
	})
	want := func(from int) string {
		var b strings.Builder
		for i := from; i <= n; i++ {
			fmt.Fprintf(&b, "line-%06d\n", i)
		}
		return b.String() + "partial"
	}

	for _, base := range []string{srv.URL(), node.URL()} {
		// Plain: the last 12 lines, across the boundary, whole.
		body, h := getOK(t, logsURL(base, alloc, "t", "plain=true&lines=12"))
		if body != want(n-10) {
			t.Fatalf("lines=12 = %q; want %q", body, want(n-10))
		}
		if h.Get("X-Accel-Buffering") != "no" {
			t.Errorf("X-Accel-Buffering = %q; want no", h.Get("X-Accel-Buffering"))
		}
		// Over the whole log's start: everything.
		body, _ = getOK(t, logsURL(base, alloc, "t", "plain=true&lines=100000"))
		if len(body) != n*12+7 || !strings.HasPrefix(body, "line-000001\n") {
			t.Fatalf("lines=100000: %d bytes starting %q; want the whole log", len(body), body[:min(24, len(body))])
		}
		// Frames (Nomad's form): the same bytes in Data.
		body, _ = getOK(t, logsURL(base, alloc, "t", "lines=3"))
		dec := json.NewDecoder(strings.NewReader(body))
		var data []byte
		for {
			var f nomad.StreamFrame
			if err := dec.Decode(&f); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			data = append(data, f.Data...)
		}
		if string(data) != want(n-1) {
			t.Fatalf("frames lines=3 = %q; want %q", data, want(n-1))
		}
		// NDJSON: one record a line, stamped, with positions.
		body, h = getOK(t, logsURL(base, alloc, "t", "format=ndjson&lines=3"))
		if ct := h.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Errorf("Content-Type = %q", ct)
		}
		recs := parseNDJSON(t, body)
		if len(recs) != 3 {
			t.Fatalf("ndjson lines=3: %d records %q", len(recs), body)
		}
		for i, w := range []string{fmt.Sprintf("line-%06d", n-1), fmt.Sprintf("line-%06d", n), "partial"} {
			r := recs[i]
			if r.Line == nil || *r.Line != w || r.Alloc != alloc || r.Task != "t" || r.Type != "stdout" || r.T == nil {
				t.Errorf("record %d = %+v; want line %q stamped", i, r, w)
			}
		}
		if recs[2].Pos != fmt.Sprintf("1.%d", n*12+7-1<<20) {
			t.Errorf("last pos = %q; want file 1 at the log's end", recs[2].Pos)
		}
	}
}

func TestLogsExt_TimestampsSurviveAgentRestart(t *testing.T) {
	dataDir := t.TempDir()
	srv, node := logsCluster(t, withDataDir(dataDir))
	api := srv.API(t)
	before := time.Now()
	allocs := runJob(t, api, "stamps", "service", shellTask("t", `echo "run"; while :; do sleep 1; done`))
	alloc := allocs["t"]
	stamped := func(want int) []time.Time {
		t.Helper()
		var body string
		waitFor(t, 30*time.Second, fmt.Sprintf("%d stamped lines", want), func() (bool, error) {
			code, b, _ := do(t, "GET", logsURL(srv.URL(), alloc, "t", "plain=true&timestamps=true"), nil)
			body = b
			return code == 200 && strings.Count(b, "\n") == want, nil
		})
		var out []time.Time
		for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
			ts, rest, _ := strings.Cut(line, " ")
			if rest != "run" {
				t.Fatalf("line %q; want a stamp, one space, run", line)
			}
			tm, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || len(ts) != len("2006-01-02T15:04:05.000000000Z") {
				t.Fatalf("stamp %q: want RFC 3339 with nine digits (%v)", ts, err)
			}
			out = append(out, tm)
		}
		return out
	}
	first := stamped(1)
	if first[0].Before(before.Add(-time.Second)) || first[0].After(time.Now()) {
		t.Fatalf("stamp %v not within the test (%v..now)", first[0], before)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withDataDir(dataDir))
	again := stamped(2)
	if !again[0].Equal(first[0]) {
		t.Errorf("after the restart the first line is stamped %v; was %v", again[0], first[0])
	}
	if !again[1].After(again[0]) {
		t.Errorf("the restarted task's line is stamped %v, not after %v", again[1], again[0])
	}
	// since= a moment between the two runs keeps only the second.
	mid := again[0].Add(again[1].Sub(again[0]) / 2).Format(time.RFC3339Nano)
	body, _ := getOK(t, logsURL(srv.URL(), alloc, "t", "plain=true&since="+url.QueryEscape(mid)))
	if body != "run\n" {
		t.Errorf("since between the runs = %q; want one line", body)
	}
	if body, _ := getOK(t, logsURL(srv.URL(), alloc, "t", "plain=true&since=1h")); body != "run\nrun\n" {
		t.Errorf("since=1h = %q; want both lines", body)
	}
}

func TestLogsExt_EndOfFollowedTask(t *testing.T) {
	srv, _ := logsCluster(t)
	api := srv.API(t)
	allocs := runJob(t, api, "ends", "batch",
		shellTask("ok", `echo out; exit 0`),
		shellTask("three", `echo out; exit 3`),
		shellTask("sig", `echo out; kill -TERM $$; sleep 5`))
	cases := []struct {
		task           string
		code, signal   int
		failed         bool
		plainEndSuffix string
	}{
		{"ok", 0, 0, false, "exit_code=0 signal=0"},
		{"three", 3, 0, true, "exit_code=3 signal=0"},
		{"sig", 143, 15, true, "exit_code=143 signal=15"},
	}
	for _, tc := range cases {
		t.Run(tc.task, func(t *testing.T) {
			alloc := allocs[tc.task]
			waitStarted(t, api, alloc, tc.task)
			u := func(extra string) string { return logsURL(srv.URL(), alloc, tc.task, "follow=true&"+extra) }

			// NDJSON: the line, then the end record.
			body, _ := getOK(t, u("format=ndjson"))
			recs := parseNDJSON(t, body)
			if len(recs) != 2 || recs[0].Line == nil || *recs[0].Line != "out" || recs[1].End == nil {
				t.Fatalf("records %q; want the line and the end", body)
			}
			e := recs[1].End
			if e.State != "dead" || e.ExitCode != tc.code || e.Signal != tc.signal || e.Failed != tc.failed || e.FinishedAt.IsZero() {
				t.Errorf("end = %+v; want dead, exit %d, signal %d, failed %v", e, tc.code, tc.signal, tc.failed)
			}

			// Frames: a last frame with TaskEnd.
			body, _ = getOK(t, u(""))
			last := body[strings.LastIndex(body, `{"TaskEnd"`):]
			var f struct{ TaskEnd *ndjsonTaskEnd }
			if err := json.Unmarshal([]byte(last), &f); err != nil || f.TaskEnd == nil || f.TaskEnd.ExitCode != tc.code {
				t.Errorf("last frame %q (%v); want TaskEnd with exit %d", last, err, tc.code)
			}

			// Plain: nothing added, unless end_event=true.
			if body, _ := getOK(t, u("plain=true")); body != "out\n" {
				t.Errorf("plain = %q; want the output only", body)
			}
			body, _ = getOK(t, u("plain=true&end_event=true"))
			if !strings.HasPrefix(body, "out\nend state=dead ") || !strings.Contains(body, tc.plainEndSuffix) {
				t.Errorf("plain end_event = %q; want an end line with %q", body, tc.plainEndSuffix)
			}

			// The official Go client: the follow ends by itself.
			cancel := make(chan struct{})
			defer close(cancel)
			frames, errs := api.AllocFS().Logs(&nomad.Allocation{ID: alloc}, true, tc.task, "stdout", "start", 0, cancel, nil)
			var got []byte
			timeout := time.After(30 * time.Second)
		read:
			for {
				select {
				case fr, ok := <-frames:
					if !ok {
						break read
					}
					got = append(got, fr.Data...)
				case err := <-errs:
					t.Fatalf("Go client follow: %v", err)
				case <-timeout:
					t.Fatal("Go client follow of a dead task did not end")
				}
			}
			if string(got) != "out\n" {
				t.Errorf("Go client read %q", got)
			}
		})
	}
}

func TestLogsExt_WaitForTaskStart(t *testing.T) {
	srv, _ := logsCluster(t)
	api := srv.API(t)
	task := mockTask("slow", map[string]any{"start_block_for": "4s", "run_for": "100ms", "stdout_string": "hello\n"})
	allocs := runJob(t, api, "slow", "batch", task)
	alloc := allocs["slow"]
	// Once the node knows the allocation, its task has not started yet.
	waitFor(t, 10*time.Second, "the allocation on the node", func() (bool, error) {
		code, _, _ := do(t, "GET", srv.URL()+"/v1/client/fs/ls/"+alloc+"?path=/", nil)
		return code == 200, nil
	})
	code, body, _ := do(t, "GET", logsURL(srv.URL(), alloc, "slow", "follow=true&format=ndjson"), nil)
	if code != 404 || !strings.Contains(body, "not started yet") {
		t.Fatalf("without wait = %d %q; want 404 not started yet", code, body)
	}
	body, _ = getOK(t, logsURL(srv.URL(), alloc, "slow", "follow=true&wait=true&format=ndjson"))
	recs := parseNDJSON(t, body)
	if len(recs) != 2 || recs[0].Line == nil || *recs[0].Line != "hello" || recs[1].End == nil || recs[1].End.ExitCode != 0 {
		t.Fatalf("wait=true = %q; want hello and the end", body)
	}
}

func TestLogsExt_SSEResumesWithLastEventID(t *testing.T) {
	srv, _ := logsCluster(t)
	api := srv.API(t)
	const n = 30
	allocs := runJob(t, api, "sse", "batch",
		shellTask("t", fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "line-$i"; i=$((i+1)); sleep 0.05; done`, n)))
	alloc := allocs["t"]
	waitStarted(t, api, alloc, "t")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var lines, resumedFrom []string
	var firstBody io.Closer
	var lastID string
	client := &sse.Client{
		HTTPClient: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(r)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && firstBody == nil {
				firstBody = resp.Body
			}
			if id := r.Header.Get("Last-Event-ID"); id != "" {
				resumedFrom = append(resumedFrom, id)
			}
			return resp, err
		})},
		Backoff: sse.Backoff{InitialInterval: 10 * time.Millisecond, Jitter: -1, Multiplier: 1},
	}
	req, err := http.NewRequestWithContext(ctx, "GET", logsURL(srv.URL(), alloc, "t", "follow=true&format=sse"), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := client.NewConnection(req)
	var end *ndjsonTaskEnd
	conn.SubscribeToAll(func(ev sse.Event) {
		var r ndjsonRecord
		if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
			t.Errorf("event %q: %v", ev.Data, err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Type == "end":
			end = r.End
			cancel()
		case r.Line != nil:
			lines = append(lines, *r.Line)
			lastID = ev.LastEventID
			if len(lines) == 5 {
				// Cut the first connection: the client reconnects with
				// the last id it saw.
				firstBody.Close()
			}
		}
	})
	if err := conn.Connect(); err != nil && ctx.Err() == nil {
		t.Fatalf("Connect: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if end == nil || end.ExitCode != 0 {
		t.Fatalf("end = %+v; want exit 0", end)
	}
	if len(resumedFrom) == 0 {
		t.Fatal("the client never resumed")
	}
	if _, ok := structs.ParseLogPos(resumedFrom[0]); !ok {
		t.Errorf("resumed from %q; want N.offset", resumedFrom[0])
	}
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, "line-"+strconv.Itoa(i))
	}
	if strings.Join(lines, ",") != strings.Join(want, ",") {
		t.Errorf("lines across the reconnection = %v; want each of 1..%d once, in order", lines, n)
	}
	if lastID == "" {
		t.Error("no id on the line events")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLogsExt_StreamFormats(t *testing.T) {
	srv, _ := logsCluster(t)
	api := srv.API(t)
	allocs := runJob(t, api, "file", "service", shellTask("t",
		`printf 'a\nb\nc' > "$NOMAD_ALLOC_DIR/data/f"; while :; do sleep 1; done`))
	alloc := allocs["t"]
	u := srv.URL() + "/v1/client/fs/stream/" + alloc + "?path=alloc/data/f&follow=false&"
	waitFor(t, 10*time.Second, "the file", func() (bool, error) {
		code, body, _ := do(t, "GET", u+"format=ndjson", nil)
		return code == 200 && strings.Count(body, "\n") == 3, nil
	})
	body, _ := getOK(t, u+"format=ndjson")
	recs := parseNDJSON(t, body)
	// The last line has no newline: it goes when the stream ends.
	for i, w := range []struct{ line, pos string }{{"a", "2"}, {"b", "4"}, {"c", "5"}} {
		if r := recs[i]; r.Line == nil || *r.Line != w.line || r.Pos != w.pos || r.T != nil || r.Alloc != alloc {
			t.Errorf("record %d = %+v; want %q ending at %s, no time", i, r, w.line, w.pos)
		}
	}
	body, h := getOK(t, u+"format=sse", "Last-Event-ID", "2")
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type = %q", ct)
	}
	if !strings.HasPrefix(body, "id: 4\ndata: {") || !strings.Contains(body, "id: 5\n") || strings.Contains(body, `"line":"a"`) {
		t.Errorf("sse from Last-Event-ID 2 = %q; want b and c only", body)
	}
}

func TestLogsExt_BadInput(t *testing.T) {
	srv, _ := logsCluster(t)
	api := srv.API(t)
	allocs := runJob(t, api, "bad", "service", shellTask("t", `echo x; while :; do sleep 1; done`))
	alloc := allocs["t"]
	waitFor(t, 10*time.Second, "the log", func() (bool, error) {
		code, _, _ := do(t, "GET", logsURL(srv.URL(), alloc, "t", "plain=true"), nil)
		return code == 200, nil
	})
	stream := srv.URL() + "/v1/client/fs/stream/" + alloc + "?path=alloc/logs/t.stdout.0&follow=false&"
	cases := []struct {
		url, param string
		hdr        []string
	}{
		{logsURL(srv.URL(), alloc, "t", "lines=-1"), "lines", nil},
		{logsURL(srv.URL(), alloc, "t", "lines=100001"), "lines", nil},
		{logsURL(srv.URL(), alloc, "t", "lines=ten"), "lines", nil},
		{logsURL(srv.URL(), alloc, "t", "since=yesterday"), "since", nil},
		{logsURL(srv.URL(), alloc, "t", "since=-5m"), "since", nil},
		{logsURL(srv.URL(), alloc, "t", "format=xml"), "format", nil},
		{logsURL(srv.URL(), alloc, "t", "timestamps=maybe"), "timestamps", nil},
		{logsURL(srv.URL(), alloc, "t", "after=3"), "after", nil},
		{logsURL(srv.URL(), alloc, "t", "format=sse"), "Last-Event-ID", []string{"Last-Event-ID", "x.y"}},
		{stream + "format=json", "format", nil},
		{stream + "format=sse", "Last-Event-ID", []string{"Last-Event-ID", "-4"}},
	}
	for _, tc := range cases {
		code, body, _ := do(t, "GET", tc.url, nil, tc.hdr...)
		if code != 400 || !strings.Contains(body, tc.param) {
			t.Errorf("GET %s %v = %d %q; want 400 naming %s", tc.url, tc.hdr, code, body, tc.param)
		}
	}
	// lines=100000 and lines=0 are fine.
	for _, q := range []string{"lines=100000", "lines=0"} {
		getOK(t, logsURL(srv.URL(), alloc, "t", q))
	}
}

func TestLogsExt_CLI(t *testing.T) {
	srv, _ := logsCluster(t)
	api := srv.API(t)
	allocs := runJob(t, api, "cli", "batch",
		shellTask("three", `seq -f 'l%g' 1 5; exit 3`),
		shellTask("sig", `echo out; kill -TERM $$; sleep 5`))
	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	for task := range allocs {
		waitStarted(t, api, allocs[task], task)
	}

	// -f to the end: the task's exit code.
	r := runTether(t, env, "", "alloc", "logs", "-f", allocs["three"])
	if r.code != 3 || r.stdout != "l1\nl2\nl3\nl4\nl5\n" {
		t.Errorf("logs -f of exit 3 = exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runTether(t, env, "", "alloc", "logs", "-f", allocs["sig"]); r.code != 143 || r.stdout != "out\n" {
		t.Errorf("logs -f of SIGTERM = exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	// Without -f: 0 whatever the task did.
	r = runTether(t, env, "", "alloc", "logs", "-n", "2", allocs["three"]).ok(t)
	if r.stdout != "l4\nl5\n" {
		t.Errorf("logs -n 2 = %q", r.stdout)
	}
	r = runTether(t, env, "", "alloc", "logs", "-n", "1", "-timestamps", "-since", "1h", allocs["three"]).ok(t)
	ts, line, _ := strings.Cut(strings.TrimSuffix(r.stdout, "\n"), " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || line != "l5" {
		t.Errorf("logs -n 1 -timestamps = %q; want a stamp and l5", r.stdout)
	}
	if r := runTether(t, env, "", "alloc", "logs", "-since", "soon", allocs["three"]); r.code != 1 || !strings.Contains(r.stderr, "since") {
		t.Errorf("-since soon = exit %d %q", r.code, r.stderr)
	}
}

// BenchmarkLogsExt_Tail100ThroughServer asks a server for lines=100 of a
// 100 MB log rotated over ten 10 MB files (100-byte lines, written through
// the node's own log writer, so stamped) of a task on a node whose session
// the server holds: the HTTP call, the route, the node's backwards scan
// and the framing back. What the node reads from disk is measured by
// client's BenchmarkLogsTail100.
func BenchmarkLogsExt_Tail100ThroughServer(b *testing.B) {
	srv, node := logsCluster(b)
	api, err := nomad.NewClient(&nomad.Config{Address: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	task := mockTask("big", map[string]any{"run_for": "1h"})
	task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(10), MaxFileSizeMB: ptr(10)}
	alloc := runJob(b, api, "big", "service", task)["big"]
	waitStarted(b, api, alloc, "big")
	w, err := client.NewRotatingWriter(filepath.Join(node.cfg.DataDir, "alloc", alloc, "alloc", "logs"), "big.stdout", 10, 10<<20)
	if err != nil {
		b.Fatal(err)
	}
	chunk := bytes.Repeat(append(bytes.Repeat([]byte("x"), 99), '\n'), 40)
	for written := 0; written < 100<<20; written += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	u := logsURL(srv.URL(), alloc, "big", "plain=true&lines=100")
	get := func() {
		resp, err := http.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 100*100 {
			b.Fatalf("status %d, %d bytes; want 200 and 100 lines", resp.StatusCode, n)
		}
	}
	get() // warm: connections, route cache
	b.ResetTimer()
	for b.Loop() {
		get()
	}
}
