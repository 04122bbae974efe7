package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tether/structs"
)

const afsAllocID = "8f3c1a8e-9b7d-4c2e-a1f0-2d5b6c7e8f90"

// afsHostSecret is the content of files outside the alloc dir; no response
// may ever contain it.
const afsHostSecret = "HOST-ONLY-CONTENT-never-serve-this"

// afsTestDir builds a fake allocation directory:
//
//	alloc/{data,logs,tmp}, web/{local,secrets,tmp}
//	web/secrets/token, web/local/app.txt
//
// and an "outside" directory holding host.txt, which symlinks may point at.
func afsTestDir(t testing.TB) (dir, outside string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, afsAllocID)
	outside = filepath.Join(base, "outside")
	for _, d := range []string{"alloc/data", "alloc/logs", "alloc/tmp", "web/local", "web/secrets", "web/tmp"} {
		afsMkdir(t, filepath.Join(dir, d))
	}
	afsMkdir(t, outside)
	afsWriteFile(t, filepath.Join(outside, "host.txt"), afsHostSecret)
	afsWriteFile(t, filepath.Join(dir, "web/secrets/token"), "s3cr3t-token")
	afsWriteFile(t, filepath.Join(dir, "web/local/app.txt"), "hello from app\n")
	return dir, outside
}

func afsOpen(t testing.TB, dir string) *AllocFS {
	t.Helper()
	f, err := OpenAllocFS(dir, afsAllocID)
	if err != nil {
		t.Fatalf("OpenAllocFS: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func afsMkdir(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	// Pin the mode so FileMode strings do not depend on the umask.
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func afsWriteFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

func afsAppendFile(t testing.TB, p, content string) {
	t.Helper()
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(content); err != nil {
		t.Fatal(err)
	}
}

func afsSymlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// afsWantCode checks that err is a structs.Error with the given code and, if
// msg is not empty, that message. It also checks that no error message
// leaks the host path of the alloc dir.
func afsWantCode(t *testing.T, err error, code int, msg string, hostDir string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want %d %q", code, msg)
	}
	if got := structs.StatusCode(err); got != code {
		t.Errorf("status = %d (%v); want %d", got, err, code)
	}
	if msg != "" && err.Error() != msg {
		t.Errorf("message = %q; want %q", err.Error(), msg)
	}
	// The alloc dir's parent also holds the "outside" dir symlinks point at.
	if hostDir != "" && strings.Contains(err.Error(), filepath.Dir(hostDir)) {
		t.Errorf("message %q leaks the host path", err.Error())
	}
}

// afsReadAll runs every read endpoint on p and returns what each produced: the
// content for cat/readat/stream, or the error.
func afsReadAll(t *testing.T, f *AllocFS, p string) map[string]struct {
	data string
	err  error
} {
	t.Helper()
	out := map[string]struct {
		data string
		err  error
	}{}
	var buf bytes.Buffer
	_, err := f.ReadAt(context.Background(), p, 0, -1, &buf)
	out["cat"] = struct {
		data string
		err  error
	}{buf.String(), err}

	buf.Reset()
	_, err = f.ReadAt(context.Background(), p, 1, 100, &buf)
	out["readat"] = struct {
		data string
		err  error
	}{buf.String(), err}

	rc, _, err := f.OpenRange(p, 0, -1)
	var data []byte
	if err == nil {
		data, err = io.ReadAll(rc)
		rc.Close()
	}
	out["openrange"] = struct {
		data string
		err  error
	}{string(data), err}

	buf.Reset()
	err = f.Stream(context.Background(), StreamOptions{Path: p}, func(fr *structs.StreamFrame) error {
		buf.Write(fr.Data)
		return nil
	})
	out["stream"] = struct {
		data string
		err  error
	}{buf.String(), err}
	return out
}

func TestAllocFS_OpenMissing(t *testing.T) {
	_, err := OpenAllocFS(filepath.Join(t.TempDir(), "nope"), afsAllocID)
	afsWantCode(t, err, http.StatusNotFound, "allocation "+afsAllocID+" has no directory on this node", "")
}

func TestAllocFS_Escapes(t *testing.T) {
	dir, outside := afsTestDir(t)
	afsSymlink(t, "/etc", filepath.Join(dir, "alloc/data/out"))
	afsSymlink(t, filepath.Join(outside, "host.txt"), filepath.Join(dir, "alloc/data/abs-file"))
	afsSymlink(t, "../../../outside/host.txt", filepath.Join(dir, "alloc/data/rel-file"))
	afsSymlink(t, "../../../outside", filepath.Join(dir, "alloc/data/rel-dir"))
	afsSymlink(t, "../../web/secrets/token", filepath.Join(dir, "alloc/data/to-secret"))
	afsSymlink(t, "../../web/secrets", filepath.Join(dir, "alloc/data/secrets-dir"))
	afsSymlink(t, "../../web/local/app.txt", filepath.Join(dir, "alloc/data/inside"))
	afsSymlink(t, "loop2", filepath.Join(dir, "alloc/data/loop1"))
	afsSymlink(t, "loop1", filepath.Join(dir, "alloc/data/loop2"))
	f := afsOpen(t, dir)

	const escape = "path escapes the alloc directory"
	cases := []struct {
		path string
		code int    // 0: readable, content want
		msg  string // checked when not empty
		want string
	}{
		{path: "../", code: 400, msg: escape},
		{path: "..", code: 400, msg: escape},
		{path: "../../etc/passwd", code: 400, msg: escape},
		{path: "alloc/../../x", code: 400, msg: escape},
		{path: "alloc/data/../../../" + afsAllocID + "/web/local/app.txt", code: 400, msg: escape},
		// Absolute paths are relative to the alloc dir, as in Nomad.
		{path: "/etc/passwd", code: 404, msg: `file "etc/passwd" not found`},
		// The HTTP layer decodes once; what is left is a plain name.
		{path: "%2e%2e/x", code: 404, msg: `file "%2e%2e/x" not found`},
		{path: "..%2fx", code: 404, msg: `file "..%2fx" not found`},
		{path: "alloc/data/out/passwd", code: 400, msg: escape},
		// ".." is resolved lexically first, as in Nomad and in URLs.
		{path: "alloc/data/out/../../x", code: 404, msg: `file "alloc/x" not found`},
		{path: "alloc/data/abs-file", code: 400, msg: escape},
		{path: "alloc/data/rel-file", code: 400, msg: escape},
		{path: "alloc/data/rel-dir/host.txt", code: 400, msg: escape},
		{path: "alloc/data/loop1", code: 400},
		{path: "alloc/data/inside", want: "hello from app\n"},
		{path: "/web/local/app.txt", want: "hello from app\n"},
		{path: "web/secrets/token", code: 403, msg: "Reading secret file prohibited: web/secrets/token"},
		{path: "/web/secrets/token", code: 403, msg: "Reading secret file prohibited: web/secrets/token"},
		{path: "web/SECRETS/token", code: 403, msg: "Reading secret file prohibited: web/SECRETS/token"},
		{path: "web/private/key", code: 403, msg: "Reading private file prohibited: web/private/key"},
		{path: "alloc/data/to-secret", code: 403, msg: "Reading secret file prohibited: alloc/data/to-secret"},
		{path: "alloc/data/secrets-dir/token", code: 403},
		{path: "web/local/../secrets/token", code: 403, msg: "Reading secret file prohibited: web/secrets/token"},
		{path: "alloc/data", code: 400, msg: `file "alloc/data" is a directory`},
		{path: "alloc/missing", code: 404, msg: `file "alloc/missing" not found`},
		{path: "web/local/app.txt/x", code: 404, msg: `file "web/local/app.txt/x" not found`},
		{path: "", code: 400, msg: "must provide a file name"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			for op, res := range afsReadAll(t, f, tc.path) {
				if strings.Contains(res.data, afsHostSecret) || strings.Contains(res.data, "root:") ||
					strings.Contains(res.data, "s3cr3t") {
					t.Fatalf("%s returned forbidden content %q", op, res.data)
				}
				if tc.code == 0 {
					if res.err != nil {
						t.Errorf("%s: %v", op, res.err)
						continue
					}
					want := tc.want
					if op == "readat" {
						want = want[1:]
					}
					if res.data != want {
						t.Errorf("%s = %q; want %q", op, res.data, want)
					}
					continue
				}
				t.Run(op, func(t *testing.T) { afsWantCode(t, res.err, tc.code, tc.msg, dir) })
			}
		})
	}

	// ls and stat through escaping links are refused too; listing the
	// secrets dir is allowed (names only) as in Nomad.
	for _, p := range []string{"alloc/data/out", "alloc/data/rel-dir", "../", "alloc/../../"} {
		_, err := f.List(p)
		afsWantCode(t, err, 400, escape, dir)
	}
	for _, p := range []string{"alloc/data/out", "alloc/data/out/passwd", "alloc/data/abs-file", "alloc/data/rel-file", "../x"} {
		_, err := f.Stat(p)
		afsWantCode(t, err, 400, escape, dir)
	}
	if _, err := f.Stat("/etc/passwd"); structs.StatusCode(err) != 404 {
		t.Errorf("stat /etc/passwd: %v; want 404", err)
	}
	ls, err := f.List("web/secrets")
	if err != nil || len(ls) != 1 || ls[0].Name != "token" {
		t.Errorf("ls web/secrets = %v, %v; want [token]", ls, err)
	}
	st, err := f.Stat("web/secrets/token")
	if err != nil || st.ContentType != "application/octet-stream" || st.Size != int64(len("s3cr3t-token")) {
		t.Errorf("stat web/secrets/token = %+v, %v; want size %d, octet-stream (never sniffed)", st, err, len("s3cr3t-token"))
	}
	if st, err := f.Stat("alloc/data/inside"); err != nil || st.Name != "inside" || st.ContentType != "text/plain; charset=utf-8" {
		t.Errorf("stat of inside link = %+v, %v", st, err)
	}
}

func TestAllocFS_List(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/b.txt"), "bbb")
	afsWriteFile(t, filepath.Join(dir, "alloc/data/a.txt"), "a")
	afsWriteFile(t, filepath.Join(dir, "alloc/data/.hidden"), "")
	afsMkdir(t, filepath.Join(dir, "alloc/data/sub"))
	afsSymlink(t, "a.txt", filepath.Join(dir, "alloc/data/link"))
	if err := syscall.Mkfifo(filepath.Join(dir, "alloc/logs/.web.stdout.fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "alloc/tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	f := afsOpen(t, dir)

	type entry struct {
		name, mode string
		dir        bool
		size       int64
	}
	cases := []struct {
		path string
		want []entry
	}{
		{"", []entry{{"alloc", "drwxr-xr-x", true, -1}, {"web", "drwxr-xr-x", true, -1}}},
		{"/", []entry{{"alloc", "drwxr-xr-x", true, -1}, {"web", "drwxr-xr-x", true, -1}}},
		{"/alloc", []entry{{"data", "drwxr-xr-x", true, -1}, {"logs", "drwxr-xr-x", true, -1}, {"tmp", "dtrwxrwxrwx", true, -1}}},
		{"alloc/data", []entry{
			{".hidden", "-rw-r--r--", false, 0},
			{"a.txt", "-rw-r--r--", false, 1},
			{"b.txt", "-rw-r--r--", false, 3},
			{"link", "Lrwxrwxrwx", false, -1},
			{"sub", "drwxr-xr-x", true, -1},
		}},
		{"alloc/logs", []entry{{".web.stdout.fifo", "prw-------", false, 0}}},
		{"alloc/data/sub", []entry{}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			got, err := f.List(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("List returned nil; want a non-nil slice")
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d entries; want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Name != w.name || g.FileMode != w.mode || g.IsDir != w.dir || (w.size >= 0 && g.Size != w.size) {
					t.Errorf("entry %d = %+v; want %+v", i, g, w)
				}
				if g.ModTime.IsZero() || g.ContentType != "" {
					t.Errorf("entry %d = %+v; want a ModTime and no ContentType", i, g)
				}
			}
		})
	}

	_, err := f.List("alloc/data/a.txt")
	afsWantCode(t, err, 400, `file "alloc/data/a.txt" is not a directory`, dir)
	_, err = f.List("alloc/nope")
	afsWantCode(t, err, 404, `file "alloc/nope" not found`, dir)
}

func TestAllocFS_Stat(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/page.html"), "<!DOCTYPE html><html><body>x</body></html>")
	afsWriteFile(t, filepath.Join(dir, "alloc/data/conf.json"), `{"a":1}`)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/empty.json"), "")
	afsWriteFile(t, filepath.Join(dir, "alloc/data/empty"), "")
	afsWriteFile(t, filepath.Join(dir, "alloc/data/img"), "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	afsWriteFile(t, filepath.Join(dir, "alloc/data/bin"), "\x00\x01\x02\x03")
	if err := syscall.Mkfifo(filepath.Join(dir, "alloc/data/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := afsOpen(t, dir)

	cases := []struct {
		path, name, ctype string
		dir               bool
		size              int64
	}{
		{"/", afsAllocID, "application/octet-stream", true, -1},
		{"alloc", "alloc", "application/octet-stream", true, -1},
		{"/web/local/app.txt", "app.txt", "text/plain; charset=utf-8", false, 15},
		{"alloc/data/page.html", "page.html", "text/html; charset=utf-8", false, -1},
		{"alloc/data/conf.json", "conf.json", "application/json", false, 7},
		{"alloc/data/empty.json", "empty.json", "application/json", false, 0},
		{"alloc/data/empty", "empty", "application/octet-stream", false, 0},
		{"alloc/data/img", "img", "image/png", false, -1},
		{"alloc/data/bin", "bin", "application/octet-stream", false, 4},
		// A fifo must not be opened (it would block): octet-stream.
		{"alloc/data/fifo", "fifo", "application/octet-stream", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			got, err := f.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.name || got.ContentType != tc.ctype || got.IsDir != tc.dir || (tc.size >= 0 && got.Size != tc.size) {
				t.Errorf("Stat = %+v; want name %q, type %q, dir %v, size %d", got, tc.name, tc.ctype, tc.dir, tc.size)
			}
		})
	}
	_, err := f.Stat("")
	afsWantCode(t, err, 400, "must provide a file name", dir)
	_, err = f.Stat("alloc/nope")
	afsWantCode(t, err, 404, `file "alloc/nope" not found`, dir)
}

func TestAllocFS_ReadAt(t *testing.T) {
	dir, _ := afsTestDir(t)
	const content = "0123456789abcdef"
	afsWriteFile(t, filepath.Join(dir, "alloc/data/f"), content)
	if err := syscall.Mkfifo(filepath.Join(dir, "alloc/data/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := afsOpen(t, dir)

	cases := []struct {
		name          string
		offset, limit int64
		want          string
		code          int
	}{
		{"cat", 0, -1, content, 0},
		{"limit zero is no limit", 0, 0, content, 0},
		{"offset and limit", 2, 3, "234", 0},
		{"limit past EOF", 10, 100, "abcdef", 0},
		{"offset at EOF", 16, -1, "", 0},
		{"offset past EOF", 1000, 5, "", 0},
		{"huge limit", 15, 1<<63 - 1, "f", 0},
		{"negative offset", -1, -1, "", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := f.ReadAt(context.Background(), "alloc/data/f", tc.offset, tc.limit, &buf)
			if tc.code != 0 {
				afsWantCode(t, err, tc.code, "offset must not be negative", dir)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want || n != int64(len(tc.want)) {
				t.Errorf("ReadAt = %q (n=%d); want %q", buf.String(), n, tc.want)
			}

			rc, info, err := f.OpenRange("/alloc/data/f", tc.offset, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || string(got) != tc.want {
				t.Errorf("OpenRange read %q, %v; want %q", got, err, tc.want)
			}
			if info.Name != "f" || info.Size != int64(len(content)) || info.FileMode != "-rw-r--r--" {
				t.Errorf("OpenRange info = %+v", info)
			}
		})
	}

	// A fifo is refused rather than blocking the caller.
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(context.Background(), "alloc/data/fifo", 0, -1, io.Discard)
		done <- err
	}()
	select {
	case err := <-done:
		afsWantCode(t, err, 400, `file "alloc/data/fifo" is not a regular file`, dir)
	case <-time.After(5 * time.Second):
		t.Fatal("ReadAt of a fifo blocked")
	}

	// A cancelled context stops the copy.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.ReadAt(ctx, "alloc/data/f", 0, -1, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadAt with cancelled ctx = %v; want context.Canceled", err)
	}
}

// afsHashWriter hashes what it is given and keeps nothing.
type afsHashWriter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (w *afsHashWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.Write(p)
}

func TestAllocFS_CatConstantMemory(t *testing.T) {
	dir, _ := afsTestDir(t)
	const size = 64 << 20
	p := filepath.Join(dir, "alloc/data/big")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse-ish: holes with a marker written every 4 MiB.
	for off := int64(0); off < size; off += 4 << 20 {
		if _, err := fh.WriteAt([]byte("marker-"+time.Duration(off).String()), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Truncate(size); err != nil {
		t.Fatal(err)
	}
	fh.Close()

	want := sha256.New()
	src, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(want, src, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	src.Close()

	f := afsOpen(t, dir)
	w := &afsHashWriter{h: sha256.New()}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n, err := f.ReadAt(context.Background(), "alloc/data/big", 0, -1, w)
	runtime.ReadMemStats(&after)
	if err != nil || n != size || w.n != size {
		t.Fatalf("ReadAt = %d, %v; want %d bytes", n, err, size)
	}
	if !bytes.Equal(w.h.Sum(nil), want.Sum(nil)) {
		t.Error("content differs from the file")
	}
	// Everything allocated during the copy, garbage included, must be far
	// below the file size: a buffered copy would allocate ≥ 64 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("ReadAt of a %d MiB file allocated %d KiB; want constant memory", size>>20, alloc>>10)
	}
}

// TestAllocFS_ConcurrentUse runs the read endpoints from many goroutines on
// one AllocFS (run with -race).
func TestAllocFS_ConcurrentUse(t *testing.T) {
	dir, _ := afsTestDir(t)
	f := afsOpen(t, dir)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if _, err := f.List("web"); err != nil {
					t.Error(err)
				}
				if _, err := f.Stat("web/local/app.txt"); err != nil {
					t.Error(err)
				}
				var buf bytes.Buffer
				if _, err := f.ReadAt(context.Background(), "web/local/app.txt", 0, -1, &buf); err != nil || buf.String() != "hello from app\n" {
					t.Error(buf.String(), err)
				}
			}
		}()
	}
	wg.Wait()
}

func TestAllocFS_ValidateStreamOrigin(t *testing.T) {
	for _, o := range []string{"", "start", "end"} {
		if err := ValidateStreamOrigin(o); err != nil {
			t.Errorf("ValidateStreamOrigin(%q) = %v", o, err)
		}
	}
	for _, o := range []string{"START", "middle", " end"} {
		afsWantCode(t, ValidateStreamOrigin(o), 400, "origin must be start or end", "")
	}
}
