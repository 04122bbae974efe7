package agent

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tether/structs"
)

// TestJobLogRecords checks the forms of one allocation's part of a
// job-wide log: the tag before each line in plain form (a last line with
// no newline still ends one, since the next is another allocation's), the
// allocation before each SSE id, and error records.
func TestJobLogRecords(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC).UnixNano()
	frame := &structs.StreamFrame{File: "alloc/logs/web.stdout.3", Offset: 110, Data: []byte("a\nb"), Stamps: []int64{t0, 0}}
	end := &structs.StreamFrame{TaskEnd: &structs.TaskEnd{State: "dead", ExitCode: 0,
		FinishedAt: time.Date(2026, 12, 1, 10, 0, 1, 0, time.UTC)}}
	const stamp = "2026-12-01T10:00:00.000000005Z"
	labels := `"alloc":"0123456789","task":"web","type":"stdout"`
	cases := []struct {
		name string
		rec  logRecords
		want string
	}{
		{"plain", logRecords{format: formatPlain, endEvent: true},
			"[01234567 web] a\n[01234567 web] b\n" +
				"[01234567 web] end state=dead failed=false exit_code=0 signal=0 finished_at=2026-12-01T10:00:01.000000000Z\n" +
				"[01234567 web] error: gone\n"},
		{"plain stamps", logRecords{format: formatPlain, timestamps: true},
			"[01234567 web] " + stamp + " a\n[01234567 web] - b\n[01234567 web] error: gone\n"},
		{"ndjson", logRecords{format: formatNDJSON},
			`{"t":"` + stamp + `",` + labels + `,"line":"a","pos":"3.109"}` + "\n" +
				`{"t":null,` + labels + `,"line":"b","pos":"3.110","partial":true}` + "\n" +
				`{"end":{"state":"dead","failed":false,"exit_code":0,"signal":0,"finished_at":"2026-12-01T10:00:01Z"},` + labels + "}\n" +
				`{"error":"gone",` + labels + "}\n"},
		{"sse", logRecords{format: formatSSE, idFor: func(b []byte, pos string) []byte { return append(b, "c="+pos...) }},
			"id: c=3.109\ndata: {\"t\":\"" + stamp + "\"," + labels + ",\"line\":\"a\",\"pos\":\"3.109\"}\n\n" +
				"id: c=3.110\ndata: {\"t\":null," + labels + ",\"line\":\"b\",\"pos\":\"3.110\",\"partial\":true}\n\n" +
				"id: c=end\nevent: end\ndata: {\"end\":{\"state\":\"dead\",\"failed\":false,\"exit_code\":0,\"signal\":0,\"finished_at\":\"2026-12-01T10:00:01Z\"}," + labels + "}\n\n" +
				"event: error\ndata: {\"error\":\"gone\"," + labels + "}\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			rec.lineMode = true
			rec.alloc, rec.task, rec.typ = "0123456789", "web", "stdout"
			rec.prefix = "[01234567 web] "
			got := rec.appendFrame(nil, frame)
			got = rec.appendFrame(got, end)
			got = rec.appendError(got, errorText(structs.NotFound("gone")))
			if string(got) != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseJobLogs(t *testing.T) {
	cases := []struct {
		query, hdr string
		err        string // a 400 naming it, or "" for none
		check      func(*jobLogsOptions) bool
	}{
		{query: "", check: func(o *jobLogsOptions) bool {
			return o.rec.format == formatPlain && o.rec.endEvent && !o.follow && o.maxAllocs == defaultJobLogAllocs &&
				o.req.LogType == "stdout" && o.req.LineMode && !o.req.Plain && !o.req.Wait
		}},
		{query: "follow=true&type=stderr&task=web&max_allocs=256", check: func(o *jobLogsOptions) bool {
			return o.follow && o.req.Follow && o.req.Wait && o.req.LogType == "stderr" && o.task == "web" && o.maxAllocs == 256
		}},
		{query: "format=ndjson&lines=5&since=10m&timestamps=true&end_event=false", check: func(o *jobLogsOptions) bool {
			return o.rec.format == formatNDJSON && o.req.Tail && o.req.Lines == 5 && !o.req.Since.IsZero() &&
				o.rec.timestamps && !o.rec.endEvent
		}},
		// An EventSource reconnecting resumes from its cursor; after=
		// takes one too; neither is a position of one log.
		{query: "format=sse", hdr: "01234567=3.10,89abcdef=end", check: func(o *jobLogsOptions) bool {
			return o.req.After == "" && o.resume.lookup("01234567-aaaa") == "3.10" && o.resume.lookup("89abcdef-0000") == cursorEnd
		}},
		{query: "format=ndjson&after=01234567=0.5", check: func(o *jobLogsOptions) bool {
			return o.req.After == "" && o.resume.lookup("01234567-aaaa") == "0.5"
		}},
		// Last-Event-ID only counts for SSE.
		{query: "format=ndjson", hdr: "garbage", check: func(o *jobLogsOptions) bool { return o.resume == nil }},
		{query: "format=sse", hdr: "0123/3.10", err: "job cursor"},
		{query: "after=01234567=x", err: "job cursor"},
		{query: "after=0123=1.2", err: "job cursor"},
		{query: "after=01234567=1.2,", err: "job cursor"},
		{query: "lines=-1", err: "lines"},
		{query: "since=soon", err: "since"},
		{query: "format=frames", err: "format"},
		{query: "type=stdin", err: "log type"},
		{query: "follow=perhaps", err: "follow"},
		{query: "max_allocs=0", err: "max_allocs"},
		{query: "max_allocs=257", err: "max_allocs"},
		{query: "max_allocs=x", err: "max_allocs"},
		{query: "after=0.1", err: "after"},
		{query: "after=ZZZZZZZZ=0.1", err: "after"},
		{query: "end_event=x", err: "end_event"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/v1/job/j/logs?"+tc.query, nil)
		if tc.hdr != "" {
			r.Header.Set("Last-Event-ID", tc.hdr)
		}
		o, err := parseJobLogs(r, "default", "j")
		if tc.err != "" {
			if structs.StatusCode(err) != 400 || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("?%s: error %v; want a 400 naming %s", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil || !tc.check(o) {
			t.Errorf("?%s: %+v, %v", tc.query, o, err)
		}
	}
}

func TestJobLogsTask(t *testing.T) {
	group := func(name string, tasks ...string) *structs.TaskGroup {
		tg := &structs.TaskGroup{Name: name}
		for _, n := range tasks {
			tg.Tasks = append(tg.Tasks, &structs.Task{Name: n})
		}
		return tg
	}
	one := &structs.Job{ID: "j", TaskGroups: []*structs.TaskGroup{group("a", "web"), group("b", "db")}}
	two := &structs.Job{ID: "j", TaskGroups: []*structs.TaskGroup{group("a", "web", "side")}}
	cases := []struct {
		job   *structs.Job
		task  string
		err   string
		group string // an allocation of it
		want  string // its task, "" none
	}{
		{job: one, group: "a", want: "web"},
		{job: one, group: "b", want: "db"},
		{job: one, task: "db", group: "a", want: ""},
		{job: one, task: "db", group: "b", want: "db"},
		{job: one, task: "nope", err: `task "nope" not found in job "j"; it runs web, db`},
		{job: two, err: `group "a" of job "j" runs more than one task (web, side)`},
		{job: two, task: "side", group: "a", want: "side"},
		{job: two, task: "side", group: "gone", want: ""},
	}
	for _, tc := range cases {
		o := &jobLogsOptions{task: tc.task}
		err := o.checkTask(tc.job)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("task %q of %v: error %v; want %q", tc.task, tc.job.TaskGroups, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("task %q: %v", tc.task, err)
		}
		// The allocation's own job (its version) wins over the current one.
		for _, al := range []*structs.Allocation{{TaskGroup: tc.group}, {TaskGroup: tc.group, Job: tc.job}} {
			got, ok := o.taskOf(al, tc.job)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("task %q, group %q: %q %v; want %q", tc.task, tc.group, got, ok, tc.want)
			}
		}
	}
}

func TestJobLogsErrorText(t *testing.T) {
	if got := errorText(errors.Join(structs.NotFound("Unknown allocation"))); got != "Unknown allocation" {
		t.Errorf("typed: %q", got)
	}
	if got := errorText(errors.New("plain")); got != "plain" {
		t.Errorf("plain: %q", got)
	}
}

func TestJobCursor(t *testing.T) {
	const a, b = "0123abcd-0000-0000-0000-000000000001", "0123abcd-0000-0000-0000-000000000002"
	const c = "ffffffff-0000-0000-0000-000000000003"
	cases := []struct {
		name   string
		resume string // "" for a fresh stream
		sets   [][2]string
		want   string
	}{
		{"fresh", "", [][2]string{{c, "0.5"}, {c, "0.9"}}, "ffffffff=0.9"},
		{"two allocations share a prefix", "", [][2]string{{a, "0.1"}, {c, "1.2"}, {b, "0.3"}}, a + "=0.1,ffffffff=1.2," + b + "=0.3"},
		{"resumed keeps what it was given", "ffffffff=end,aaaaaaaa=2.7", [][2]string{{a, "0.4"}}, "ffffffff=end,aaaaaaaa=2.7,0123abcd=0.4"},
		{"resumed entry bound", "ffffffff=1.0", [][2]string{{c, "1.8"}}, "ffffffff=1.8"},
	}
	for _, tc := range cases {
		var parsed *jobCursor
		if tc.resume != "" {
			var err error
			if parsed, err = parseJobCursor(tc.resume); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		cur := parsed.running()
		for _, s := range tc.sets {
			cur.set(s[0], s[1])
		}
		got := string(cur.appendTo(nil))
		if got != tc.want {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
		back, err := parseJobCursor(got)
		if err != nil {
			t.Fatalf("%s: its own cursor %q: %v", tc.name, got, err)
		}
		for _, s := range tc.sets {
			if pos := back.lookup(s[0]); pos == "" {
				t.Errorf("%s: %q finds nothing for %s", tc.name, got, s[0])
			}
		}
	}
	// A key two allocations could match names neither.
	amb, _ := parseJobCursor("0123abcd=0.1,0123abcd-0000=0.2")
	if amb.lookup(a) != "" {
		t.Errorf("ambiguous key matched %q", amb.lookup(a))
	}
}
