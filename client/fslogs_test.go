package client

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tether/structs"
)

// afsWriteLogs writes alloc/logs/<task>.<typ>.<i> for each content, i from 0,
// and returns the contents keyed by frame File.
func afsWriteLogs(t testing.TB, dir, task, typ string, contents ...string) map[string]string {
	t.Helper()
	return afsWriteLogsFrom(t, dir, task, typ, 0, contents...)
}

func afsWriteLogsFrom(t testing.TB, dir, task, typ string, first int, contents ...string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for i, c := range contents {
		rel := fmt.Sprintf("alloc/logs/%s.%s.%d", task, typ, first+i)
		afsWriteFile(t, filepath.Join(dir, rel), c)
		files[rel] = c
	}
	return files
}

func afsLogsAsync(t testing.TB, f *AllocFS, opts LogsOptions) (*afsFrameSink, <-chan error) {
	t.Helper()
	sink := newAFSFrameSink()
	done, _ := afsRunAsync(t, func(ctx context.Context) error { return f.Logs(ctx, opts, sink.send) })
	return sink, done
}

var afsWebStarted = map[string]bool{"web": true, "sidecar": false}

func TestFsLogs_Read(t *testing.T) {
	dir, _ := afsTestDir(t)
	c0, c1, c2 := "00000000", "1111111111", "22"
	files := afsWriteLogs(t, dir, "web", "stdout", c0, c1, c2)
	afsWriteLogs(t, dir, "web", "stderr", "err0")
	all := c0 + c1 + c2
	n0, n1, n2 := int64(len(c0)), int64(len(c1)), int64(len(c2))
	total := n0 + n1 + n2
	f := afsOpen(t, dir)

	cases := []struct {
		origin string
		offset int64
		want   string
	}{
		{"", 0, all},
		{"start", 3, all[3:]},
		{"start", n0, all[n0:]},
		{"start", n0 + 4, all[n0+4:]},
		{"start", total - 1, all[total-1:]},
		{"start", total, ""},
		{"start", total + 100, ""},
		{"end", 0, ""},
		{"end", 1, all[total-1:]},
		{"end", n2, c2},
		{"end", n2 + 3, all[total-n2-3:]},
		{"end", n1 + n2, c1 + c2},
		{"end", n1 + n2 + 2, all[total-n1-n2-2:]},
		{"end", total, all},
		{"end", total + 50, all},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d", tc.origin, tc.offset), func(t *testing.T) {
			sink := newAFSFrameSink()
			err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Origin: tc.origin, Offset: tc.offset, Tasks: afsWebStarted}, sink.send)
			if err != nil {
				t.Fatal(err)
			}
			frames, data := sink.snapshot()
			if string(data) != tc.want {
				t.Errorf("data = %q; want %q", data, tc.want)
			}
			afsCheckOffsets(t, frames, files)
			for _, fr := range frames {
				if fr.FileEvent != "" {
					t.Errorf("unexpected event frame %+v", fr)
				}
			}
		})
	}

	sink := newAFSFrameSink()
	if err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stderr", Tasks: afsWebStarted}, sink.send); err != nil {
		t.Fatal(err)
	}
	if frames, data := sink.snapshot(); string(data) != "err0" || frames[0].File != "alloc/logs/web.stderr.0" || frames[0].Offset != 4 {
		t.Errorf("stderr frames = %+v", frames)
	}
}

// TestFsLogs_Indexes checks index discovery: only <task>.<type>.<N> files
// count, gaps are fine (max_files removes the oldest), and other names are
// skipped rather than failing the call.
func TestFsLogs_Indexes(t *testing.T) {
	dir, _ := afsTestDir(t)
	files := afsWriteLogsFrom(t, dir, "web", "stdout", 11, "eleven-", "twelve")
	files["alloc/logs/web.stdout.100"] = "hundred"
	afsWriteFile(t, filepath.Join(dir, "alloc/logs/web.stdout.100"), "hundred")
	for _, junk := range []string{"web.stdout.foo", "web.stdout.01", "web.stdout.-1", "web.stdout.+2", "web.stdout.", "web.stdout.1.gz", "web.stderr.0", "webx.stdout.0", "web.stdout"} {
		afsWriteFile(t, filepath.Join(dir, "alloc/logs", junk), "JUNK")
	}
	afsMkdir(t, filepath.Join(dir, "alloc/logs/web.stdout.50"))
	if err := syscall.Mkfifo(filepath.Join(dir, "alloc/logs/.web.stdout.fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := afsOpen(t, dir)

	sink := newAFSFrameSink()
	if err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Tasks: afsWebStarted}, sink.send); err != nil {
		t.Fatal(err)
	}
	frames, data := sink.snapshot()
	if string(data) != "eleven-twelvehundred" {
		t.Errorf("data = %q; want eleven-twelvehundred", data)
	}
	afsCheckOffsets(t, frames, files)
}

func TestFsLogs_Errors(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "x")
	f := afsOpen(t, dir)

	cases := []struct {
		name string
		opts LogsOptions
		code int
		msg  string
	}{
		{"no task", LogsOptions{Type: "stdout", Tasks: afsWebStarted}, 400, "must provide task name"},
		{"no type", LogsOptions{Task: "web", Tasks: afsWebStarted}, 400, "must provide log type (stdout/stderr)"},
		{"bad type", LogsOptions{Task: "web", Type: "stdin", Tasks: afsWebStarted}, 400, "must provide log type (stdout/stderr)"},
		{"bad origin", LogsOptions{Task: "web", Type: "stdout", Origin: "x", Tasks: afsWebStarted}, 400, "origin must be start or end"},
		{"negative offset", LogsOptions{Task: "web", Type: "stdout", Offset: -5, Tasks: afsWebStarted}, 400, "offset must not be negative"},
		{"unknown task", LogsOptions{Task: "db", Type: "stdout", Tasks: afsWebStarted}, 400, `unknown task name "db"`},
		{"nil task map", LogsOptions{Task: "web", Type: "stdout"}, 400, `unknown task name "web"`},
		{"not started", LogsOptions{Task: "sidecar", Type: "stdout", Tasks: afsWebStarted}, 404, `task "sidecar" not started yet. No logs available`},
		{"no files", LogsOptions{Task: "web", Type: "stderr", Tasks: afsWebStarted}, 404, `log entry for task "web" and log type "stderr" not found`},
		{"no files, follow", LogsOptions{Task: "web", Type: "stderr", Follow: true, Tasks: afsWebStarted}, 404, `log entry for task "web" and log type "stderr" not found`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Logs(context.Background(), tc.opts, func(*structs.StreamFrame) error {
				t.Error("send called")
				return nil
			})
			afsWantCode(t, err, tc.code, tc.msg, dir)
		})
	}

	// No logs dir at all (a task with logging disabled never made files).
	if err := os.RemoveAll(filepath.Join(dir, "alloc/logs")); err != nil {
		t.Fatal(err)
	}
	err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Tasks: afsWebStarted}, func(*structs.StreamFrame) error { return nil })
	afsWantCode(t, err, 404, `log entry for task "web" and log type "stdout" not found`, dir)
}

// TestFsLogs_EndZero: origin=end&offset=0 starts at the true end of the
// newest file (not at its start, Nomad's #18368).
func TestFsLogs_EndZero(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "old0", "old1")
	f := afsOpen(t, dir)

	sink := newAFSFrameSink()
	if err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Origin: "end", Tasks: afsWebStarted}, sink.send); err != nil {
		t.Fatal(err)
	}
	if frames, _ := sink.snapshot(); len(frames) != 0 {
		t.Errorf("got %d frames without follow; want none", len(frames))
	}

	sink, _ = afsLogsAsync(t, f, LogsOptions{Task: "web", Type: "stdout", Origin: "end", Follow: true, Tasks: afsWebStarted})
	// An append that lands before the stream has picked its start is
	// (rightly) not sent, and nothing tells us when that happened: append
	// until data arrives, then check that only appended bytes came.
	content := "old1"
	deadline := time.Now().Add(afsWaitTimeout)
	for {
		afsAppendFile(t, filepath.Join(dir, "alloc/logs/web.stdout.1"), "new")
		content += "new"
		if sink.within(100*time.Millisecond, func(fr []structs.StreamFrame, _ []byte) bool { return len(fr) > 0 }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no data after appends")
		}
	}
	sink.waitFor(t, "all appended data", func(_ []structs.StreamFrame, data []byte) bool {
		return len(data) > 0 && strings.HasSuffix(content, string(data)) && len(data)%3 == 0 &&
			strings.Count(string(data), "new") == len(data)/3
	})
	frames, _ := sink.snapshot()
	afsCheckOffsets(t, frames, map[string]string{"alloc/logs/web.stdout.1": content})
}

// TestFsLogs_FollowRotation has a writer append to the newest file, then
// rotate to new indices, as the log rotator does; the follower must get
// every byte once, in order.
func TestFsLogs_FollowRotation(t *testing.T) {
	for _, origin := range []string{"start", "end"} {
		t.Run(origin, func(t *testing.T) {
			dir, _ := afsTestDir(t)
			files := afsWriteLogs(t, dir, "web", "stdout", "zero-", "one-", "two-")
			f := afsOpen(t, dir)

			want := "zero-one-two-"
			offset := int64(0)
			if origin == "end" {
				want, offset = "one-two-", int64(len("one-two-"))
			}
			sink, _ := afsLogsAsync(t, f, LogsOptions{Task: "web", Type: "stdout", Origin: origin, Offset: offset, Follow: true, Tasks: afsWebStarted})
			if origin == "end" {
				// The start is computed from the end: let the stream
				// pick it before the writer moves the end.
				sink.waitData(t, want)
			}

			// The writer runs concurrently with the reader, with no pauses.
			rng := rand.New(rand.NewSource(7))
			var written bytes.Buffer
			writerDone := make(chan error, 1)
			go func() {
				defer close(writerDone)
				for idx := 2; idx <= 6; idx++ {
					p := filepath.Join(dir, fmt.Sprintf("alloc/logs/web.stdout.%d", idx))
					fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
					if err != nil {
						writerDone <- err
						return
					}
					for n := 0; n < 40; n++ {
						chunk := []byte(fmt.Sprintf("[%d:%d:%s]", idx, n, strings.Repeat("z", rng.Intn(4000))))
						if _, err := fh.Write(chunk); err != nil {
							writerDone <- err
							return
						}
						written.Write(chunk)
					}
					fh.Close()
				}
			}()
			if err := <-writerDone; err != nil {
				t.Fatal(err)
			}
			want += written.String()
			sink.waitData(t, want)

			// Every frame matches its file at its offset, and files come
			// in index order.
			for idx := 2; idx <= 6; idx++ {
				rel := fmt.Sprintf("alloc/logs/web.stdout.%d", idx)
				b, err := os.ReadFile(filepath.Join(dir, rel))
				if err != nil {
					t.Fatal(err)
				}
				files[rel] = string(b)
			}
			frames, _ := sink.snapshot()
			afsCheckOffsets(t, frames, files)
			last := 0
			for _, fr := range frames {
				var idx int
				if _, err := fmt.Sscanf(fr.File, "alloc/logs/web.stdout.%d", &idx); err != nil || idx < last {
					t.Errorf("frame for %s after index %d", fr.File, last)
				}
				last = idx
			}
		})
	}
}

// TestFsLogs_FileDeleted removes log files while they are being read.
func TestFsLogs_FileDeleted(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: many frames

	t.Run("current file mid-read", func(t *testing.T) {
		dir, _ := afsTestDir(t)
		afsWriteLogs(t, dir, "web", "stdout", big, "one-", "two-")
		f := afsOpen(t, dir)
		sink := newAFSFrameSink()
		first := true
		sink.gate = func(*structs.StreamFrame) {
			if first {
				first = false
				// The descriptor is open: removing the name loses nothing.
				if err := os.Remove(filepath.Join(dir, "alloc/logs/web.stdout.0")); err != nil {
					t.Error(err)
				}
			}
		}
		if err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Tasks: afsWebStarted}, sink.send); err != nil {
			t.Fatal(err)
		}
		if _, data := sink.snapshot(); string(data) != big+"one-two-" {
			t.Errorf("got %d bytes; want %d", len(data), len(big)+8)
		}
	})

	t.Run("next file removed before it is reached", func(t *testing.T) {
		dir, _ := afsTestDir(t)
		afsWriteLogs(t, dir, "web", "stdout", big, "one-", "two-")
		f := afsOpen(t, dir)
		sink := newAFSFrameSink()
		first := true
		sink.gate = func(*structs.StreamFrame) {
			if first {
				first = false
				if err := os.Remove(filepath.Join(dir, "alloc/logs/web.stdout.1")); err != nil {
					t.Error(err)
				}
			}
		}
		if err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Tasks: afsWebStarted}, sink.send); err != nil {
			t.Fatal(err)
		}
		if _, data := sink.snapshot(); string(data) != big+"two-" {
			t.Errorf("got %d bytes; want %d", len(data), len(big)+4)
		}
	})

	t.Run("followed file deleted, then a new index", func(t *testing.T) {
		dir, _ := afsTestDir(t)
		afsWriteLogs(t, dir, "web", "stdout", "zero-")
		f := afsOpen(t, dir)
		sink, done := afsLogsAsync(t, f, LogsOptions{Task: "web", Type: "stdout", Follow: true, Tasks: afsWebStarted})
		sink.waitData(t, "zero-")
		if err := os.Remove(filepath.Join(dir, "alloc/logs/web.stdout.0")); err != nil {
			t.Fatal(err)
		}
		sink.waitFor(t, "file deleted event", func(frames []structs.StreamFrame, _ []byte) bool {
			for _, fr := range frames {
				if fr.FileEvent == structs.FileEventDeleted && fr.File == "alloc/logs/web.stdout.0" && fr.Offset == 5 {
					return true
				}
			}
			return false
		})
		afsWriteLogsFrom(t, dir, "web", "stdout", 1, "one-")
		sink.waitData(t, "zero-one-")
		select {
		case err := <-done:
			t.Fatalf("stream ended after a delete: %v", err)
		default:
		}
	})
}

func TestFsLogs_FileRecreated(t *testing.T) {
	dir, outside := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "zero-")
	f := afsOpen(t, dir)
	sink, done := afsLogsAsync(t, f, LogsOptions{Task: "web", Type: "stdout", Follow: true, Tasks: afsWebStarted})
	sink.waitData(t, "zero-")

	// Replaced by a new file of the same index: read it from 0.
	p := filepath.Join(dir, "alloc/logs/web.stdout.0")
	afsWriteFile(t, p+".tmp", "again-")
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	sink.waitData(t, "zero-again-")
	afsAppendFile(t, p, "more")
	sink.waitData(t, "zero-again-more")

	// Replaced by a symlink out of the alloc dir: refused, never read.
	afsSymlink(t, filepath.Join(outside, "host.txt"), p+".tmp")
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	afsWantCode(t, afsWaitDone(t, done), 400, "path escapes the alloc directory", dir)
	if _, data := sink.snapshot(); string(data) != "zero-again-more" {
		t.Errorf("data = %q", data)
	}
}

// TestFsLogs_SymlinkIndex: a rotated "file" that is a afsSymlink out of the
// alloc dir or into secrets is refused when the follower reaches it.
func TestFsLogs_SymlinkIndex(t *testing.T) {
	cases := []struct {
		name   string
		target func(dir, outside string) string
		code   int
	}{
		{"host file", func(dir, outside string) string { return filepath.Join(outside, "host.txt") }, 400},
		{"relative escape", func(dir, outside string) string { return "../../../outside/host.txt" }, 400},
		{"secrets", func(dir, outside string) string { return "../../web/secrets/token" }, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := afsTestDir(t)
			afsWriteLogs(t, dir, "web", "stdout", "zero-")
			f := afsOpen(t, dir)
			sink, done := afsLogsAsync(t, f, LogsOptions{Task: "web", Type: "stdout", Follow: true, Tasks: afsWebStarted})
			sink.waitData(t, "zero-")
			afsSymlink(t, tc.target(dir, outside), filepath.Join(dir, "alloc/logs/web.stdout.1"))
			err := afsWaitDone(t, done)
			afsWantCode(t, err, tc.code, "", dir)
			if _, data := sink.snapshot(); string(data) != "zero-" {
				t.Errorf("data = %q; want only zero-", data)
			}
		})
	}
}

func TestFsLogs_AllocDirRemoved(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "zero-", "one-")
	f := afsOpen(t, dir)
	sink, done := afsLogsAsync(t, f, LogsOptions{Task: "web", Type: "stdout", Follow: true, Tasks: afsWebStarted})
	sink.waitData(t, "zero-one-")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	err := afsWaitDone(t, done)
	if err != nil {
		afsWantCode(t, err, 404, "allocation directory was removed", dir)
	}
}

// TestFsLogs_NoFollowStopsAtStartIndex: without follow, files created after
// the call started are not read.
func TestFsLogs_NoFollowStopsAtStartIndex(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "zero-", "one-")
	f := afsOpen(t, dir)
	sink := newAFSFrameSink()
	first := true
	sink.gate = func(*structs.StreamFrame) {
		if first {
			first = false
			afsWriteLogsFrom(t, dir, "web", "stdout", 2, "two-")
		}
	}
	if err := f.Logs(context.Background(), LogsOptions{Task: "web", Type: "stdout", Tasks: afsWebStarted}, sink.send); err != nil {
		t.Fatal(err)
	}
	if _, data := sink.snapshot(); string(data) != "zero-one-" {
		t.Errorf("data = %q; want zero-one-", data)
	}
}
