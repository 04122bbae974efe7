package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	nomad "github.com/hashicorp/nomad/api"

	"tether/structs"
)

// The fuzz targets of the agent's parsers: every input is taken or refused
// with a 4xx that names what was wrong, never a panic or a 5xx.

// addFiles adds the contents of files (paths from this package) as seeds.
func addFiles(f *testing.F, paths ...string) {
	f.Helper()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// want4xx fails unless err carries a 4xx status.
func want4xx(t *testing.T, what string, in any, err error) {
	t.Helper()
	if c := structs.StatusCode(err); c < 400 || c > 499 {
		t.Fatalf("%s(%q): status %d for %v; want a 4xx", what, in, c, err)
	}
}

// checkFileName fails unless name can be a file name on a node: one
// path element that goes nowhere else.
func checkFileName(t *testing.T, what, name string) {
	t.Helper()
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		t.Fatalf("%s name %q was accepted; it becomes a file name on nodes", what, name)
	}
}

// FuzzDecodeJobRegister: a job registration body is refused with a 400 or
// taken, and a job that is taken names its groups and tasks with names
// that are safe as file names (task dirs and log files on nodes).
func FuzzDecodeJobRegister(f *testing.F) {
	addFiles(f, "../examples/web.json", "../integration/testdata/peer-job.json")
	f.Add([]byte(`{"Job": null}`))
	f.Add([]byte(`{"Job": {"ID": "a", "TaskGroups": [{"Name": "../x", "Tasks": [{"Name": "t", "Driver": "mock_driver"}]}]}}`))
	f.Add([]byte(`{"Job": {"ID": "a", "TaskGroups": [{"Name": "g", "Count": -1, "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": 1}}]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		job, _, err := decodeJobRegister(body)
		if err != nil {
			want4xx(t, "decodeJobRegister", body, err)
			return
		}
		for _, tg := range job.TaskGroups {
			checkFileName(t, "group", tg.Name)
			for _, task := range tg.Tasks {
				checkFileName(t, "task", task.Name)
			}
		}
	})
}

// FuzzParseJobHCL: a jobspec parses or fails with diagnostics; a job that
// parses, sent as Nomad's job JSON, is registered or refused with a 400
// (the two parsers of a job agree on its shape).
func FuzzParseJobHCL(f *testing.F) {
	f.Add([]byte(`job "web" {
  datacenters = ["dc1"]
  group "g" {
    count = 2
    restart {
      attempts = 2
      interval = "5m"
      mode     = "fail"
    }
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo ${NOMAD_ALLOC_ID} on ${node.unique.name}"]
      }
      env { A = "1" }
      resources {
        cpu    = 100
        memory = 64
      }
      logs {
        max_files     = 2
        max_file_size = 5
      }
    }
  }
}`))
	f.Add([]byte(`job "a" { group "b" { task "c" { driver = "mock_driver" config { run_for = "1s" } } } }`))
	f.Add([]byte(`job "a" {} job "b" {}`))
	f.Add([]byte(`job "a" { group "g" { count = "many" } }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		job, diags := parseJobHCL(src, parseFilename)
		if diags.HasErrors() {
			if diagText(diags) == "" {
				t.Fatalf("parseJobHCL(%q): errors without a text", src)
			}
			return
		}
		body, err := json.Marshal(map[string]*nomad.Job{"Job": job})
		if err != nil {
			t.Fatalf("parseJobHCL(%q) made a job that does not encode: %v", src, err)
		}
		if _, _, err := decodeJobRegister(body); err != nil {
			want4xx(t, "decodeJobRegister of the parsed job", body, err)
		}
	})
}

// FuzzLoadConfig: an agent configuration file (HCL or JSON) loads or
// fails with an error that names the file; a loaded one merges over the
// defaults and validates without a panic.
func FuzzLoadConfig(f *testing.F) {
	addFiles(f, "testdata/config/client.hcl", "testdata/config/server.hcl", "testdata/config/agent.json",
		"../examples/client.hcl", "../examples/server.hcl")
	f.Add([]byte(`server { raft_snapshot_threshold = -1 }`))
	f.Add([]byte(`ports { http = "x" }`))
	f.Add([]byte(`client { meta { "a.b" = 1 } }`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "agent.hcl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := LoadConfig(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) && !strings.Contains(err.Error(), "agent.hcl") {
				t.Fatalf("LoadConfig(%q) = %v; the error does not name the file", data, err)
			}
			return
		}
		_ = DefaultConfig().Merge(cfg).Validate()
	})
}

// FuzzLogsParams: the parameters of the file and log streams (offset,
// origin, follow, plain, lines, since, timestamps, end_event, wait,
// after and Last-Event-ID, format) are taken within their bounds or
// refused with a 400 naming the parameter.
func FuzzLogsParams(f *testing.F) {
	for _, q := range []string{
		"offset=10&origin=end&follow=true",
		"lines=100&format=ndjson&timestamps=true",
		"since=10m&format=sse",
		"since=2026-12-02T10:00:00Z&end_event=1&wait=true",
		"after=3.1024&plain=true",
		"lines=-1", "lines=99999999999999999999", "offset=-5", "origin=middle", "since=-1h", "format=xml",
		"after=1", "follow=maybe", "offset=9223372036854775808",
	} {
		f.Add(q, "")
	}
	f.Add("format=sse", "2.77")
	f.Add("format=sse", "x")
	params := []string{"offset", "origin", "follow", "plain", "lines", "since", "timestamps", "end_event", "wait", "after", "format"}
	f.Fuzz(func(t *testing.T, query, lastEventID string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v1/client/fs/logs/x", RawQuery: query}, Header: http.Header{}}
		if lastEventID != "" {
			r.Header.Set("Last-Event-ID", lastEventID)
		}
		err := parseLogsQuery(r)
		if err == nil {
			return
		}
		want4xx(t, "logs parameters", query, err)
		named := false
		for _, p := range params {
			named = named || strings.Contains(err.Error(), p)
		}
		if !named {
			t.Fatalf("query %q: %q names no parameter", query, err)
		}
	})
}

// parseLogsQuery runs the parsers of /v1/client/fs/logs and
// /v1/client/fs/stream in the order the handler does and checks what
// they took.
func parseLogsQuery(r *http.Request) error {
	q := r.URL.Query()
	var req structs.FsLogsRequest
	var err error
	if req.Follow, err = queryBool(q, "follow", false); err != nil {
		return err
	}
	if req.Plain, err = queryBool(q, "plain", false); err != nil {
		return err
	}
	if req.Offset, err = queryOffset(q); err != nil {
		return err
	}
	if req.Origin, err = parseOrigin(q.Get("origin")); err != nil {
		return err
	}
	rec, err := parseLogsExt(r, &req)
	if err != nil {
		return err
	}
	e := req.LogsExt
	switch {
	case req.Offset < 0, req.Origin != "start" && req.Origin != "end":
		return errors.New("offset or origin out of bounds")
	case e.Lines < 0 || e.Lines > structs.MaxLogLines:
		return errors.New("lines out of bounds")
	case e.After != "" && !validPos(e.After):
		return errors.New("after is not a position")
	case rec.lineMode && req.Plain:
		return errors.New("a line-mode read asks for plain bytes")
	}
	// The same parameters on a file stream: after is a byte offset there.
	sreq := structs.FsStreamRequest{Offset: req.Offset, Origin: req.Origin}
	format, err := parseLogFormat(q, false)
	if err != nil {
		return err
	}
	if err := resumeStream(&sreq, resumeFrom(r, format)); err != nil {
		return err
	}
	if sreq.Offset < 0 {
		return errors.New("resumed at a negative offset")
	}
	return nil
}

func validPos(s string) bool {
	_, ok := structs.ParseLogPos(s)
	return ok
}

// FuzzParseSince: since= is a time in RFC 3339 or a duration back from
// now, never one in the future of now for a duration.
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"10m", "1h30m", "0s", "-1s", "2026-12-02T10:00:00Z", "2026-12-02T10:00:00.123456789+02:00", "9999999h", "1e3s", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got, err := parseSince(v, now)
		if err != nil {
			want4xx(t, "parseSince", v, err)
			if !strings.Contains(err.Error(), "since") {
				t.Fatalf("parseSince(%q) = %q; does not name since", v, err)
			}
			return
		}
		if _, perr := time.Parse(time.RFC3339Nano, v); perr != nil && got.After(now) {
			t.Fatalf("parseSince(%q) = %v, after now %v", v, got, now)
		}
	})
}

// FuzzMetaApply: a metadata update body is refused with a 400 or taken
// with valid keys and string or null values only, and what is taken,
// encoded again, decodes to the same update.
func FuzzMetaApply(f *testing.F) {
	for _, b := range []string{
		`{"Meta": {"rack": "r1", "zone": null}}`,
		`{"NodeID": "5f1c7a3e-2f0b-4c1e-9d55-0d3c1b2a4e6f", "Meta": {"a.b": "c"}}`,
		`{"Meta": {"a": 1}}`, `{"Meta": {"": "x"}}`, `{"Meta": {}}`, `{"Meta": {"a": "\u0000"}}`, `[]`, ``,
	} {
		f.Add([]byte(b), "")
	}
	f.Add([]byte(`{"Meta": {"k": "v"}}`), "5f1c7a3e-2f0b-4c1e-9d55-0d3c1b2a4e6f")
	f.Fuzz(func(t *testing.T, body []byte, nodeID string) {
		req, err := decodeMetaApply(metaRequest(body, nodeID))
		if err != nil {
			want4xx(t, "decodeMetaApply", body, err)
			return
		}
		if len(req.Meta) == 0 {
			t.Fatalf("decodeMetaApply(%q) took an empty update", body)
		}
		for k := range req.Meta {
			if err := structs.ValidateMetaKey(k); err != nil {
				t.Fatalf("decodeMetaApply(%q) took key %q: %v", body, k, err)
			}
		}
		again, err := json.Marshal(map[string]any{"NodeID": req.NodeID, "Meta": req.Meta})
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeMetaApply(metaRequest(again, ""))
		if err != nil {
			t.Fatalf("re-encoded update %s refused: %v", again, err)
		}
		b1, _ := json.Marshal(req.Meta)
		b2, _ := json.Marshal(back.Meta)
		// NodeID passes through to the route, which looks it up; JSON
		// cannot carry it when it is not UTF-8.
		if !bytes.Equal(b1, b2) || utf8.ValidString(req.NodeID) && back.NodeID != req.NodeID {
			t.Fatalf("update %s came back as %s", b1, b2)
		}
	})
}

// metaRequest is a POST /v1/client/metadata with body and ?node_id.
func metaRequest(body []byte, nodeID string) *http.Request {
	u := &url.URL{Path: "/v1/client/metadata"}
	if nodeID != "" {
		u.RawQuery = url.Values{"node_id": {nodeID}}.Encode()
	}
	r, _ := http.NewRequest(http.MethodPost, u.String(), bytes.NewReader(body))
	return r
}
