package agent

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"tether/structs"
)

func TestLogRecords_Formats(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC).UnixNano()
	// A line-aligned frame of file 3: two lines, the second without its
	// newline; the first stamped, the second older than the index.
	frame := &structs.StreamFrame{File: "alloc/logs/web.stdout.3", Offset: 110, Data: []byte("a \"q\"\nb"), Stamps: []int64{t0, 0}}
	end := &structs.StreamFrame{TaskEnd: &structs.TaskEnd{State: "dead", Failed: true, ExitCode: 3,
		FinishedAt: time.Date(2026, 12, 1, 10, 0, 1, 0, time.UTC)}}
	const stamp = "2026-12-01T10:00:00.000000005Z"
	endJSON := `{"state":"dead","failed":true,"exit_code":3,"signal":0,"finished_at":"2026-12-01T10:00:01Z"}`
	labels := `"alloc":"A","task":"web","type":"stdout"`
	cases := []struct {
		name string
		rec  logRecords
		want string
	}{
		{"plain", logRecords{format: formatPlain, lineMode: true}, "a \"q\"\nb"},
		{"plain stamps", logRecords{format: formatPlain, lineMode: true, timestamps: true},
			stamp + " a \"q\"\n- b"},
		{"plain end_event", logRecords{format: formatPlain, lineMode: true, endEvent: true},
			"a \"q\"\nbend state=dead failed=true exit_code=3 signal=0 finished_at=2026-12-01T10:00:01.000000000Z\n"},
		{"frames", logRecords{format: formatFrames, lineMode: true},
			`{"Offset":110,"Data":"YSAicSIKYg==","File":"alloc/logs/web.stdout.3"}{"TaskEnd":` + endJSON + `}`},
		{"ndjson", logRecords{format: formatNDJSON, lineMode: true},
			`{"t":"` + stamp + `",` + labels + `,"line":"a \"q\"","pos":"3.109"}` + "\n" +
				`{"t":null,` + labels + `,"line":"b","pos":"3.110","partial":true}` + "\n" +
				`{"end":` + endJSON + `,` + labels + "}\n"},
		{"sse", logRecords{format: formatSSE, lineMode: true},
			"id: 3.109\ndata: {\"t\":\"" + stamp + "\"," + labels + ",\"line\":\"a \\\"q\\\"\",\"pos\":\"3.109\"}\n\n" +
				"id: 3.110\ndata: {\"t\":null," + labels + ",\"line\":\"b\",\"pos\":\"3.110\",\"partial\":true}\n\n" +
				"event: end\ndata: {\"end\":" + endJSON + "," + labels + "}\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			rec.alloc, rec.task, rec.typ = "A", "web", "stdout"
			got := rec.appendFrame(nil, frame)
			got = rec.appendFrame(got, end)
			if string(got) != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestLogRecords_Heartbeats(t *testing.T) {
	for _, tc := range []struct {
		f     logFormat
		beat  string
		every time.Duration
	}{{formatFrames, "{}", time.Second}, {formatSSE, ": heartbeat\n\n", 10 * time.Second}, {formatPlain, "", 0}, {formatNDJSON, "", 0}} {
		beat, every := (&logRecords{format: tc.f}).heartbeat()
		if string(beat) != tc.beat || every != tc.every {
			t.Errorf("format %d: heartbeat %q every %v; want %q every %v", tc.f, beat, every, tc.beat, tc.every)
		}
	}
}

func TestLogRecords_SplitsFileStreams(t *testing.T) {
	rec := &logRecords{format: formatNDJSON, alloc: "A"}
	var out []byte
	// "one\ntw" + "o\nthr" + "ee", offsets as a file stream gives them.
	for _, f := range []structs.StreamFrame{{File: "f", Offset: 6, Data: []byte("one\ntw")},
		{File: "f", Offset: 11, Data: []byte("o\nthr")}, {File: "f", Offset: 13, Data: []byte("ee")}} {
		out = rec.appendFrame(out, &f)
	}
	out = rec.finish(out)
	want := `{"t":null,"alloc":"A","file":"f","line":"one","pos":"4"}` + "\n" +
		`{"t":null,"alloc":"A","file":"f","line":"two","pos":"8"}` + "\n" +
		`{"t":null,"alloc":"A","file":"f","line":"three","pos":"13","partial":true}` + "\n"
	if string(out) != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
}

func TestLogParams(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		since string
		want  time.Time
		bad   bool
	}{
		{"10m", now.Add(-10 * time.Minute), false},
		{"2026-11-30T09:00:00Z", time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), false},
		{"2026-11-30T09:00:00.5+01:00", time.Date(2026, 11, 30, 8, 0, 0, 5e8, time.UTC), false},
		{"-5m", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	} {
		got, err := parseSince(tc.since, now)
		if (err != nil) != tc.bad || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v (bad %v)", tc.since, got, err, tc.want, tc.bad)
		}
		if err != nil && !strings.Contains(err.Error(), "since") {
			t.Errorf("parseSince(%q) error %q does not name since", tc.since, err)
		}
	}
	for _, tc := range []struct {
		q     string
		plain bool
		want  logFormat
		bad   bool
	}{
		{"", false, formatFrames, false}, {"", true, formatPlain, false},
		{"format=plain", false, formatPlain, false}, {"format=ndjson", true, formatNDJSON, false},
		{"format=sse", false, formatSSE, false}, {"format=xml", false, 0, true},
	} {
		q, _ := url.ParseQuery(tc.q)
		got, err := parseLogFormat(q, tc.plain)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseLogFormat(%q, %v) = %v, %v; want %v", tc.q, tc.plain, got, err, tc.want)
		}
	}
}
