package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/structs"
)

// archiveEntry is what a test compares of one tar entry.
type archiveEntry struct {
	typ  byte
	link string
	data string
	mode fs.FileMode
}

// readArchive lists a tar (gunzipped first when gz), failing on any
// error, a missing end included.
func readArchive(t *testing.T, body []byte, gz bool) map[string]archiveEntry {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	out := map[string]archiveEntry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("tar entry %s: %v", h.Name, err)
		}
		out[h.Name] = archiveEntry{typ: h.Typeflag, link: h.Linkname, data: string(b), mode: h.FileInfo().Mode().Perm()}
	}
	if gz {
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatalf("gzip trailer: %v", err)
		}
	}
	return out
}

// listDir is what an archive of dir must hold, read from the disk
// without following links and leaving out names in skip.
func listDir(t *testing.T, dir string, skip ...string) map[string]archiveEntry {
	t.Helper()
	out := map[string]archiveEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		for _, s := range skip {
			if rel == s {
				return filepath.SkipDir
			}
		}
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			out[rel+"/"] = archiveEntry{typ: tar.TypeDir, mode: fi.Mode().Perm()}
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = archiveEntry{typ: tar.TypeSymlink, link: l, mode: fi.Mode().Perm()}
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			out[rel] = archiveEntry{typ: tar.TypeReg, data: string(b), mode: fi.Mode().Perm()}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compareArchive fails unless got holds exactly want's entries, byte for
// byte.
func compareArchive(t *testing.T, what string, got, want map[string]archiveEntry) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing %s", what, name)
			continue
		}
		if g.typ != w.typ || g.link != w.link || g.data != w.data || g.mode != w.mode {
			t.Errorf("%s: %s = type %c link %q %d bytes mode %v; want type %c link %q %d bytes mode %v",
				what, name, g.typ, g.link, len(g.data), g.mode, w.typ, w.link, len(w.data), w.mode)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: unexpected entry %s", what, name)
		}
	}
}

// fillArchiveDir writes files, a subdirectory and links (one to a file
// inside, one absolute out of the allocation, one climbing out) into dir.
func fillArchiveDir(t *testing.T, dir string) {
	t.Helper()
	big := make([]byte, 3<<20+17)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello archive\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(dir, "sub", "big.bin"), big, 0o640))
	must(os.WriteFile(filepath.Join(dir, "sub", "deeper", "x"), []byte("x"), 0o644))
	must(os.Symlink("a.txt", filepath.Join(dir, "link")))
	must(os.Symlink("/etc", filepath.Join(dir, "etc")))
	must(os.Symlink("../../../../..", filepath.Join(dir, "up")))
}

// get sends a GET with optional headers and returns the status, body and
// headers.
func getArchive(t *testing.T, url string, hdr ...string) (int, []byte, http.Header) {
	t.Helper()
	code, body, h := do(t, "GET", url, nil, hdr...)
	return code, []byte(body), h
}

// TestArchive_ByteForByte archives a directory with files, a
// subdirectory and symlinks (stored as links, never followed, whether
// they point inside or out) in both formats, through the server holding
// the node's session (data connection) and on the node itself, and
// compares every entry with the disk; the whole allocation's archive
// leaves the task's secrets out.
func TestArchive_ByteForByte(t *testing.T) {
	f := startFSFixture(t)
	data := filepath.Join(f.allocDir, "alloc", "data")
	fillArchiveDir(t, data)
	want := listDir(t, data)
	dataConns := f.srv.Server().Stats()["data_connections"]
	for _, base := range []struct{ name, url string }{{"server", f.srv.URL()}, {"node", f.node.URL()}} {
		for _, format := range []string{"tar", "tar.gz", ""} {
			what := base.name + " format=" + format
			code, body, h := getArchive(t, f.url(base.url, "archive", "path=alloc/data&format="+format))
			if code != 200 {
				t.Fatalf("%s: %d %s", what, code, body)
			}
			wantType := "application/gzip"
			if format == "tar" {
				wantType = "application/x-tar"
			}
			if ct := h.Get("Content-Type"); ct != wantType {
				t.Errorf("%s: Content-Type %q; want %q", what, ct, wantType)
			}
			mustContain(t, h.Get("Content-Disposition"), `filename="`+f.allocID[:8]+"-data.")
			compareArchive(t, what, readArchive(t, body, format != "tar"), want)
		}
	}
	if n := f.srv.Server().Stats()["data_connections"] - dataConns; n < 3 {
		t.Errorf("%d data connections for three archives through the server; want each on one", n)
	}
	// The whole allocation: everything but web/secrets.
	code, body, _ := getArchive(t, f.url(f.srv.URL(), "archive", "format=tar"))
	if code != 200 {
		t.Fatalf("whole allocation: %d %s", code, body)
	}
	got := readArchive(t, body, false)
	for name := range got {
		if strings.HasPrefix(name, "web/secrets") {
			t.Fatalf("whole allocation: archive holds %s", name)
		}
	}
	if _, ok := got["web/local/"]; !ok {
		t.Fatalf("whole allocation: no web/local/ among %d entries", len(got))
	}
	compareArchive(t, "whole allocation", got, listDir(t, f.allocDir, "web/secrets"))
}

// TestArchive_BadInput refuses, with a 4xx naming the parameter, paths
// that escape (lexically or by a link), a file, an unknown format and
// the secrets dir, through the server and on the node.
func TestArchive_BadInput(t *testing.T) {
	f := startFSFixture(t)
	data := filepath.Join(f.allocDir, "alloc", "data")
	fillArchiveDir(t, data)
	cases := []struct {
		query string
		code  int
		text  string
	}{
		{"path=../..", 400, "path"},
		{"path=alloc/../../x", 400, "path"},
		{"path=alloc/data/etc", 400, "escapes"},
		{"path=alloc/data/up", 400, "escapes"},
		{"path=alloc/data/a.txt", 400, `path "alloc/data/a.txt" is not a directory`},
		{"path=alloc/data/link", 400, "is not a directory"},
		{"path=alloc/data&format=zip", 400, "format must be"},
		{"path=alloc/data&format=TAR", 400, "format must be"},
		{"path=web/secrets", 403, "prohibited"},
		{"path=web/SECRETS/", 403, "prohibited"},
		{"path=alloc/missing", 404, "not found"},
		{"path=" + strings.Repeat("a", 4097), 400, "path must be at most"},
		{"path=a%00b", 400, "path"},
	}
	for _, base := range []string{f.srv.URL(), f.node.URL()} {
		for _, tc := range cases {
			code, body, _ := do(t, "GET", f.url(base, "archive", tc.query), nil)
			if code != tc.code || !strings.Contains(body, tc.text) {
				t.Errorf("%s %s: %d %q; want %d containing %q", base, tc.query[:min(len(tc.query), 40)], code, body, tc.code, tc.text)
			}
		}
	}
	code, body, _ := do(t, "GET", f.srv.URL()+"/v1/client/fs/archive/not-a-uuid", nil)
	if code != 400 {
		t.Errorf("malformed alloc ID: %d %q; want 400", code, body)
	}
}

// TestArchive_TwoHops archives through a server that does not hold the
// node's session (raw messages through the peer) and through a node-only
// agent that is not the allocation's (its server relays), and compares.
func TestArchive_TwoHops(t *testing.T) {
	c := startCluster(t, 2)
	n0 := startNode(t, "node0", withServers(c.servers[0].RPCAddr()), withRawExec())
	n1 := startNode(t, "node1", withServers(c.servers[1].RPCAddr()))
	api := c.servers[0].API(t)
	job := &nomad.Job{ID: ptr("arc"), Type: ptr("service"), Datacenters: []string{"dc1"},
		Constraints: []*nomad.Constraint{{LTarget: "${node.unique.name}", RTarget: "node0", Operand: "="}},
		TaskGroups:  []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("web", "while :; do sleep 1; done")}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	alloc := waitAllocsStatus(t, api, "arc", 1, "running")[0]
	data := filepath.Join(n0.cfg.DataDir, "alloc", alloc.ID, "alloc", "data")
	fillArchiveDir(t, data)
	want := listDir(t, data)
	for _, base := range []struct{ name, url string }{{"peer server", c.servers[1].URL()}, {"other node", n1.URL()}} {
		code, body, h := getArchive(t, base.url+"/v1/client/fs/archive/"+alloc.ID+"?path=/alloc/data")
		if code != 200 {
			t.Fatalf("%s: %d %s", base.name, code, body)
		}
		compareArchive(t, base.name, readArchive(t, body, true), want)
		if base.name == "peer server" && h.Get(structs.HeaderHops) != "2" {
			t.Errorf("%s: %s %q; want 2", base.name, structs.HeaderHops, h.Get(structs.HeaderHops))
		}
	}
}

// TestArchive_CallerLeaves reads the start of a large archive through
// the server, on the data connection and through a peer, and goes away:
// the node stops (its files and connections are closed) and every
// stream ends.
func TestArchive_CallerLeaves(t *testing.T) {
	c := startCluster(t, 2)
	n0 := startNode(t, "node0", withServers(c.servers[0].RPCAddr()), withRawExec())
	api := c.servers[0].API(t)
	job := &nomad.Job{ID: ptr("arcl"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("web", "while :; do sleep 1; done")}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	alloc := waitAllocsStatus(t, api, "arcl", 1, "running")[0]
	data := filepath.Join(n0.cfg.DataDir, "alloc", alloc.ID, "alloc", "data")
	chunk := make([]byte, 1<<20)
	for i := 0; i < 8; i++ {
		if _, err := rand.Read(chunk); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Create(filepath.Join(data, fmt.Sprintf("f%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 16; j++ {
			if _, err := fh.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		fh.Close()
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	quiet := func() bool {
		return c.servers[0].OpenStreams() == 0 && c.servers[1].OpenStreams() == 0
	}
	var baseFD int
	waitFor(t, 10*time.Second, "quiet baseline", func() (bool, error) {
		baseFD = openFDs()
		return quiet(), nil
	})
	for _, srv := range []*testAgent{c.servers[0], c.servers[1]} {
		for _, format := range []string{"tar", "tar.gz"} {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL()+"/v1/client/fs/archive/"+alloc.ID+"?path=alloc/data&format="+format, nil)
			resp, err := hc.Do(req)
			if err != nil || resp.StatusCode != 200 {
				cancel()
				t.Fatalf("%s %s: %v %v", srv.cfg.Name, format, resp, err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
				cancel()
				t.Fatalf("%s %s: reading: %v", srv.cfg.Name, format, err)
			}
			cancel()
			resp.Body.Close()
		}
	}
	tr.CloseIdleConnections()
	waitFor(t, 20*time.Second, "streams and files closed", func() (bool, error) {
		fds := openFDs()
		return quiet() && fds <= baseFD+2, fmt.Errorf("%d fds (baseline %d), streams %d/%d", fds, baseFD,
			c.servers[0].OpenStreams(), c.servers[1].OpenStreams())
	})
}

// TestArchive_CLI downloads a directory with `tether alloc fs -archive`
// in both formats, to a file and to stdout, and compares it with the
// disk; a path that is a file fails with the server's message.
func TestArchive_CLI(t *testing.T) {
	f := startFSFixture(t)
	data := filepath.Join(f.allocDir, "alloc", "data")
	fillArchiveDir(t, data)
	want := listDir(t, data)
	env := map[string]string{"NOMAD_ADDR": f.srv.URL()}
	for _, name := range []string{"out.tar.gz", "out.tar"} {
		out := filepath.Join(t.TempDir(), name)
		args := []string{"alloc", "fs", "-archive", "-o", out, f.allocID, "alloc/data"}
		runTether(t, env, "", args...).ok(t, args...)
		body, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		compareArchive(t, "cli "+name, readArchive(t, body, name == "out.tar.gz"), want)
	}
	args := []string{"alloc", "fs", "-archive", f.allocID, "/alloc/data"}
	res := runTether(t, env, "", args...).ok(t, args...)
	compareArchive(t, "cli stdout", readArchive(t, []byte(res.stdout), true), want)
	res = runTether(t, env, "", "alloc", "fs", "-archive", "-o", filepath.Join(t.TempDir(), "x.tar"), f.allocID, "alloc/data/a.txt")
	if res.code != 1 || !strings.Contains(res.stderr, "is not a directory") {
		t.Fatalf("archive of a file: exit %d, stderr %q; want 1 naming the path", res.code, res.stderr)
	}
}

// BenchmarkArchive compares, through the server holding the node's
// session, cat of a 256 MiB file with archives of a 256 MiB directory
// (16 files of 16 MiB, random bytes: nothing for gzip to gain) as tar and
// tar.gz, and of 256 MiB of log lines as tar.gz, in one run; MB/s is the
// rate of the directory's bytes.
func BenchmarkArchive(b *testing.B) {
	srv := startServer(b, "server1")
	node := startNode(b, "node1", withServers(srv.RPCAddr()), withRawExec())
	api, err := nomad.NewClient(&nomad.Config{Address: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	job := &nomad.Job{ID: ptr("arcb"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("web", "while :; do sleep 1; done")}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		b.Fatal(err)
	}
	var allocID string
	waitFor(b, 30*time.Second, "a running allocation", func() (bool, error) {
		list, _, err := api.Jobs().Allocations("arcb", false, nil)
		if err != nil || len(list) == 0 || list[0].ClientStatus != "running" {
			return false, err
		}
		allocID = list[0].ID
		return true, nil
	})
	data := filepath.Join(node.cfg.DataDir, "alloc", allocID, "alloc", "data")
	const total = 256 << 20
	chunk := make([]byte, 1<<20)
	// write makes a file of random bytes, or of log-like lines (text).
	write := func(name string, size int, text bool) {
		fh, err := os.Create(filepath.Join(data, name))
		if err != nil {
			b.Fatal(err)
		}
		defer fh.Close()
		for n := 0; n < size; n += len(chunk) {
			if _, err := rand.Read(chunk); err != nil {
				b.Fatal(err)
			}
			if text {
				line := 0
				for i := 0; i < len(chunk); {
					i += copy(chunk[i:], fmt.Sprintf("2026-01-02T03:04:05.%06dZ INFO request served path=/v1/x/%d status=200 took=%dus\n", n+line, line%977, chunk[i]))
					line++
				}
			}
			if _, err := fh.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, d := range []string{"dir", "logs"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 16; i++ {
		write(fmt.Sprintf("dir/f%02d", i), total/16, false)
		write(fmt.Sprintf("logs/f%02d", i), total/16, true)
	}
	write("big", total, false)
	base := srv.URL() + "/v1/client/fs/"
	for _, bc := range []struct{ name, url string }{
		{"cat", base + "cat/" + allocID + "?path=alloc/data/big"},
		{"archive-tar", base + "archive/" + allocID + "?path=alloc/data/dir&format=tar"},
		{"archive-tar.gz", base + "archive/" + allocID + "?path=alloc/data/dir&format=tar.gz"},
		{"archive-tar.gz-text", base + "archive/" + allocID + "?path=alloc/data/logs&format=tar.gz"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				resp, err := http.Get(bc.url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || n < total/100 {
					b.Fatalf("%s: %d, %d bytes, %v", bc.name, resp.StatusCode, n, err)
				}
			}
		})
	}
}
