package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

const logPattern = "0123456789abcdefghi\n" // 20 bytes

// decodeFrames decodes concatenated JSON frames, skipping heartbeats.
func decodeFrames(t *testing.T, body []byte) []nomad.StreamFrame {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	var out []nomad.StreamFrame
	for {
		var f nomad.StreamFrame
		if err := dec.Decode(&f); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("decoding frames: %v", err)
		}
		if !f.IsHeartbeat() {
			out = append(out, f)
		}
	}
}

// TestFS_EndToEnd runs a task that writes 2.5 MB of logs (rotated across
// three 1 MB files) and a data file, then reads them through the server
// (forwarded) and directly on the node, with raw HTTP and the Go client.
func TestFS_EndToEnd(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)

	task := shellTask("web", `yes "0123456789abcdefghi" | head -c 2500000; printf marker > "$NOMAD_ALLOC_DIR/data/file.txt"; echo secret > "$NOMAD_SECRETS_DIR/token"; while :; do sleep 1; done`)
	task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(5), MaxFileSizeMB: ptr(1)}
	quiet := shellTask("quiet", `echo unseen; while :; do sleep 1; done`)
	quiet.LogConfig = &nomad.LogConfig{Disabled: ptr(true)}
	job := &nomad.Job{ID: ptr("fs"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{task, quiet}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, api, "fs", 1, "running")[0].ID
	allocDir := filepath.Join(node.cfg.DataDir, "alloc", allocID)
	waitFor(t, 20*time.Second, "task output written", func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(allocDir, "alloc", "data", "file.txt"))
		return err == nil && string(b) == "marker", nil
	})
	want := strings.Repeat(logPattern, 2500000/len(logPattern))

	for _, tc := range []struct {
		name string
		base string
	}{{"via-server", srv.URL()}, {"direct", node.URL()}} {
		t.Run(tc.name, func(t *testing.T) {
			fsURL := func(op, query string) string {
				return tc.base + "/v1/client/fs/" + op + "/" + allocID + "?" + query
			}
			code, body, _ := do(t, "GET", fsURL("ls", "path=/alloc/logs"), nil)
			if code != 200 {
				t.Fatalf("ls = %d %q", code, body)
			}
			for _, f := range []string{`"web.stdout.0"`, `"web.stdout.1"`, `"web.stdout.2"`} {
				mustContain(t, body, f)
			}
			code, body, _ = do(t, "GET", fsURL("stat", "path=alloc/data/file.txt"), nil)
			if code != 200 || !strings.Contains(body, `"Size":6`) {
				t.Fatalf("stat = %d %q", code, body)
			}
			code, body, hdr := do(t, "GET", fsURL("cat", "path=alloc/data/file.txt"), nil)
			if code != 200 || body != "marker" || hdr.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("cat = %d %q %v", code, body, hdr)
			}
			code, body, _ = do(t, "GET", fsURL("readat", "path=alloc/data/file.txt&offset=1&limit=3"), nil)
			if code != 200 || body != "ark" {
				t.Fatalf("readat = %d %q", code, body)
			}
			code, body, _ = do(t, "GET", fsURL("readat", "path=alloc/data/file.txt&offset=2&limit=-1"), nil)
			if code != 200 || body != "rker" {
				t.Fatalf("readat limit=-1 = %d %q", code, body)
			}

			// Whole log, plain and framed: every byte once, in order.
			code, body, hdr = do(t, "GET", fsURL("logs", "task=web&type=stdout&plain=true"), nil)
			if code != 200 || body != want {
				t.Fatalf("plain logs = %d, %d bytes (%s); want %d bytes", code, len(body), hdr.Get("Content-Type"), len(want))
			}
			code, body, hdr = do(t, "GET", fsURL("logs", "task=web&type=stdout"), nil)
			if code != 200 || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("framed logs = %d %s", code, hdr.Get("Content-Type"))
			}
			var got bytes.Buffer
			for _, f := range decodeFrames(t, []byte(body)) {
				if len(f.Data) > 64*1024 {
					t.Fatalf("frame of %d bytes; want at most 64 KiB", len(f.Data))
				}
				if len(f.Data) > 0 && (!strings.HasPrefix(f.File, "alloc/logs/web.stdout.") || f.Offset == 0) {
					t.Fatalf("frame File %q Offset %d; want a rotated file and its offset", f.File, f.Offset)
				}
				got.Write(f.Data)
			}
			if got.String() != want {
				t.Fatalf("framed logs decoded to %d bytes; want %d", got.Len(), len(want))
			}
			// A task that wrote nothing on stderr: an empty 200.
			if code, body, _ = do(t, "GET", fsURL("logs", "task=web&type=stderr&plain=true"), nil); code != 200 || body != "" {
				t.Fatalf("empty stderr = %d %q", code, body)
			}
			// The last N bytes across rotated files.
			code, body, _ = do(t, "GET", fsURL("logs", "task=web&type=stdout&plain=true&origin=end&offset=1500000"), nil)
			if code != 200 || body != want[len(want)-1500000:] {
				t.Fatalf("origin=end logs = %d, %d bytes", code, len(body))
			}

			// Refusals: real status codes, no host path, no host content.
			for _, rc := range []struct {
				query string
				op    string
				code  int
			}{
				{"path=../../../../etc/passwd", "cat", 400},
				{"path=alloc/../../../etc/passwd", "stream", 400},
				{"path=web/secrets/token", "cat", 403},
				{"path=alloc/nope", "cat", 404},
				{"path=alloc/nope", "stat", 404},
				{"path=alloc/nope&offset=0", "readat", 404},
				{"path=alloc", "cat", 400},
				{"path=alloc/data/file.txt&offset=x", "readat", 400},
				{"task=nope&type=stdout", "logs", 400},
				{"task=web&type=stdin", "logs", 400},
				{"task=quiet&type=stdout", "logs", 404},
				{"task=web&type=stdout&origin=middle", "logs", 400},
			} {
				code, body, _ := do(t, "GET", fsURL(rc.op, rc.query), nil)
				if code != rc.code {
					t.Errorf("%s?%s = %d %q; want %d", rc.op, rc.query, code, body, rc.code)
				}
				if strings.Contains(body, node.cfg.DataDir) || strings.Contains(body, "root:") || strings.Contains(body, "secret\n") {
					t.Errorf("%s?%s leaked %q", rc.op, rc.query, body)
				}
			}
		})
	}

	// The official Go client goes to the node for cat, readat and logs.
	alloc, _, err := api.Allocations().Info(allocID, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := api.AllocFS().Cat(alloc, "alloc/data/file.txt", nil)
	if err != nil {
		t.Fatalf("AllocFS().Cat: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "marker" {
		t.Fatalf("Cat = %q", b)
	}
	rc, err = api.AllocFS().ReadAt(alloc, "alloc/data/file.txt", 3, -1, nil)
	if err != nil {
		t.Fatalf("AllocFS().ReadAt: %v", err)
	}
	b, _ = io.ReadAll(rc)
	rc.Close()
	if string(b) != "ker" {
		t.Fatalf("ReadAt = %q", b)
	}
	files, _, err := api.AllocFS().List(alloc, "/", nil)
	if err != nil || len(files) != 3 {
		t.Fatalf("AllocFS().List = %v, %v; want alloc, quiet and web", files, err)
	}
	cancel := make(chan struct{})
	frames, errs := api.AllocFS().Logs(alloc, false, "web", "stdout", "start", 0, cancel, nil)
	var n int
	for f := range frames {
		n += len(f.Data)
	}
	close(cancel)
	select {
	case err := <-errs:
		t.Fatalf("AllocFS().Logs error: %v", err)
	default:
	}
	if n != len(want) {
		t.Fatalf("AllocFS().Logs read %d bytes; want %d", n, len(want))
	}

	st, _, err := api.AllocFS().Stat(alloc, "alloc/data/file.txt", nil)
	if err != nil || st.Size != 6 || st.IsDir || st.ContentType == "" {
		t.Fatalf("AllocFS().Stat = %+v, %v", st, err)
	}

	// The Go client's follow streams, cancelled by the caller.
	streamCancel := make(chan struct{})
	sframes, serrs := api.AllocFS().Stream(alloc, "alloc/data/file.txt", "start", 0, streamCancel, nil)
	select {
	case f := <-sframes:
		if string(f.Data) != "marker" {
			t.Fatalf("AllocFS().Stream first frame %q; want marker", f.Data)
		}
	case err := <-serrs:
		t.Fatalf("AllocFS().Stream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("AllocFS().Stream sent nothing")
	}
	close(streamCancel)
	logCancel := make(chan struct{})
	lframes, lerrs := api.AllocFS().Logs(alloc, true, "web", "stdout", "end", 100, logCancel, nil)
	select {
	case f := <-lframes:
		if len(f.Data) != 100 {
			t.Fatalf("AllocFS().Logs follow from end-100 gave %d bytes; want 100", len(f.Data))
		}
	case err := <-lerrs:
		t.Fatalf("AllocFS().Logs follow: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("AllocFS().Logs follow sent nothing")
	}
	close(logCancel)
	waitFor(t, 10*time.Second, "cancelled follows closed on the node", func() (bool, error) {
		return node.OpenStreams() == 0, fmt.Errorf("%d streams open on the node", node.OpenStreams())
	})

	// Follow: a write wakes the stream promptly, through the server.
	followPath := filepath.Join(allocDir, "alloc", "data", "follow.txt")
	if err := os.WriteFile(followPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL()+"/v1/client/fs/stream/"+allocID+"?path=alloc/data/follow.txt&origin=end", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream = %v %v", resp, err)
	}
	got := make(chan string, 16)
	go func() {
		dec := json.NewDecoder(resp.Body)
		for {
			var f nomad.StreamFrame
			if dec.Decode(&f) != nil {
				close(got)
				return
			}
			if len(f.Data) > 0 {
				got <- string(f.Data)
			}
		}
	}()
	f, err := os.OpenFile(followPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("tick\n")
	f.Close()
	select {
	case s := <-got:
		if s != "tick\n" {
			t.Fatalf("followed %q; want tick", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not deliver the append")
	}
	stop()
	resp.Body.Close()

	// After GC, file calls answer 404.
	if _, _, err := api.Jobs().Deregister("fs", false, nil); err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "fs", 1, "complete")
	if err := api.Allocations().GC(alloc, nil); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"ls", "cat", "stream"} {
		code, body, _ := do(t, "GET", srv.URL()+"/v1/client/fs/"+op+"/"+allocID+"?path=alloc/data/file.txt", nil)
		if code != 404 {
			t.Errorf("%s after GC = %d %q; want 404", op, code, body)
		}
	}
	code, body, _ := do(t, "GET", srv.URL()+"/v1/client/fs/logs/"+allocID+"?task=web&type=stdout", nil)
	if code != 404 {
		t.Errorf("logs after GC = %d %q; want 404", code, body)
	}
}

// TestFS_CatLengthAndShrink: cat and readat announce their exact length in
// Content-Length, through the server and direct; a file that shrinks while
// it is read ends the body short with an error, never as a complete read.
func TestFS_CatLengthAndShrink(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)
	job := &nomad.Job{ID: ptr("cat"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("idle", `while :; do sleep 1; done`)}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, api, "cat", 1, "running")[0].ID
	dataDir := filepath.Join(node.cfg.DataDir, "alloc", allocID, "alloc", "data")
	waitFor(t, 20*time.Second, "alloc data dir", func() (bool, error) {
		_, err := os.Stat(dataDir)
		return err == nil, nil
	})
	small := bytes.Repeat([]byte("0123456789"), 100_000) // 1,000,000 bytes
	if err := os.WriteFile(filepath.Join(dataDir, "small.bin"), small, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, base string }{{"via-server", srv.URL()}, {"direct", node.URL()}} {
		t.Run(tc.name, func(t *testing.T) {
			fsURL := func(op, query string) string {
				return tc.base + "/v1/client/fs/" + op + "/" + allocID + "?" + query
			}
			for _, c := range []struct {
				op, query string
				want      []byte
			}{
				{"cat", "path=alloc/data/small.bin", small},
				{"readat", "path=alloc/data/small.bin&offset=999990&limit=-1", small[999990:]},
				{"readat", "path=alloc/data/small.bin&offset=12&limit=300000", small[12:300012]},
				{"readat", "path=alloc/data/small.bin&offset=2000000&limit=5", nil},
			} {
				resp, err := http.Get(fsURL(c.op, c.query))
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, c.want) {
					t.Fatalf("%s %s = %d, %d bytes, %v; want 200, %d bytes", c.op, c.query, resp.StatusCode, len(body), err, len(c.want))
				}
				if resp.ContentLength != int64(len(c.want)) {
					t.Fatalf("%s %s: Content-Length %d; want %d", c.op, c.query, resp.ContentLength, len(c.want))
				}
			}

			// 64 MiB is more than every buffer between the node's file
			// and this reader can hold while it reads nothing.
			big := filepath.Join(dataDir, "shrinks-"+tc.name+".bin")
			if err := os.WriteFile(big, bytes.Repeat([]byte{'z'}, 64<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get(fsURL("cat", "path=alloc/data/shrinks-"+tc.name+".bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.ContentLength != 64<<20 {
				t.Fatalf("cat = %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
			}
			var one [1]byte
			if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(big, 1024); err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil {
				t.Fatalf("read of a file that shrank ended cleanly after %d bytes", n+1)
			}
			if n+1 >= 64<<20 {
				t.Fatalf("read %d bytes of a file truncated to 1 KiB", n+1)
			}
		})
	}
}
