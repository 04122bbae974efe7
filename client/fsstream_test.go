package client

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/structs"
)

// afsWaitTimeout bounds every wait on a condition in these tests.
const afsWaitTimeout = 5 * time.Second

// afsFrameSink records the frames a stream sends, copying Data (it is only
// valid until send returns).
type afsFrameSink struct {
	mu     sync.Mutex
	frames []structs.StreamFrame
	data   []byte
	wake   chan struct{}
	// gate, when set, is called before a frame is recorded.
	gate func(*structs.StreamFrame)
}

func newAFSFrameSink() *afsFrameSink { return &afsFrameSink{wake: make(chan struct{}, 1)} }

func (s *afsFrameSink) send(fr *structs.StreamFrame) error {
	if s.gate != nil {
		s.gate(fr)
	}
	c := *fr
	c.Data = bytes.Clone(fr.Data)
	s.mu.Lock()
	s.frames = append(s.frames, c)
	s.data = append(s.data, fr.Data...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

func (s *afsFrameSink) snapshot() ([]structs.StreamFrame, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]structs.StreamFrame(nil), s.frames...), bytes.Clone(s.data)
}

// waitFor waits until cond holds for the frames received so far.
func (s *afsFrameSink) waitFor(t testing.TB, what string, cond func(frames []structs.StreamFrame, data []byte) bool) {
	t.Helper()
	if !s.within(afsWaitTimeout, cond) {
		frames, data := s.snapshot()
		t.Fatalf("timed out waiting for %s; got %d frames, data %q", what, len(frames), afsTrunc(data))
	}
}

// within waits up to d for cond and reports whether it held.
func (s *afsFrameSink) within(d time.Duration, cond func(frames []structs.StreamFrame, data []byte) bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	// The stream signals every frame; the ticker only guards against a
	// condition that became true without a new frame.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		frames, data := s.snapshot()
		if cond(frames, data) {
			return true
		}
		select {
		case <-s.wake:
		case <-tick.C:
		case <-deadline.C:
			frames, data := s.snapshot()
			return cond(frames, data)
		}
	}
}

func (s *afsFrameSink) waitData(t testing.TB, want string) {
	t.Helper()
	s.waitFor(t, "data "+afsTrunc([]byte(want)), func(_ []structs.StreamFrame, data []byte) bool {
		return len(data) >= len(want)
	})
	if _, data := s.snapshot(); string(data) != want {
		t.Fatalf("data = %q; want %q", afsTrunc(data), afsTrunc([]byte(want)))
	}
}

func (s *afsFrameSink) hasEvent(ev string) bool {
	frames, _ := s.snapshot()
	for _, fr := range frames {
		if fr.FileEvent == ev {
			return true
		}
	}
	return false
}

func afsTrunc(b []byte) string {
	if len(b) > 200 {
		return string(b[:100]) + "..." + string(b[len(b)-100:])
	}
	return string(b)
}

// afsRunAsync runs fn (a Stream or Logs call) in a goroutine and returns its
// result channel and a cancel func. Cleanup cancels and waits for it.
func afsRunAsync(t testing.TB, fn func(ctx context.Context) error) (<-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(afsWaitTimeout):
			t.Error("stream did not stop after cancel")
		}
	})
	return done, cancel
}

func afsWaitDone(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(afsWaitTimeout):
		t.Fatal("stream did not end")
		return nil
	}
}

func afsStreamAsync(t testing.TB, f *AllocFS, opts StreamOptions) (*afsFrameSink, <-chan error, context.CancelFunc) {
	t.Helper()
	sink := newAFSFrameSink()
	done, cancel := afsRunAsync(t, func(ctx context.Context) error { return f.Stream(ctx, opts, sink.send) })
	return sink, done, cancel
}

// afsCheckOffsets checks every data frame against the file content: Data must
// be content[Offset-len(Data):Offset].
func afsCheckOffsets(t testing.TB, frames []structs.StreamFrame, contents map[string]string) {
	t.Helper()
	for i, fr := range frames {
		if len(fr.Data) == 0 {
			continue
		}
		if len(fr.Data) > structs.MaxFrameData {
			t.Errorf("frame %d carries %d bytes; max %d", i, len(fr.Data), structs.MaxFrameData)
		}
		c, ok := contents[fr.File]
		if !ok {
			t.Errorf("frame %d: unexpected File %q", i, fr.File)
			continue
		}
		start := fr.Offset - int64(len(fr.Data))
		if start < 0 || fr.Offset > int64(len(c)) || c[start:fr.Offset] != string(fr.Data) {
			t.Errorf("frame %d (%s, Offset %d, %d bytes) does not match the file", i, fr.File, fr.Offset, len(fr.Data))
		}
	}
}

func TestFsStream_Origins(t *testing.T) {
	dir, _ := afsTestDir(t)
	const content = "0123456789"
	afsWriteFile(t, filepath.Join(dir, "alloc/data/f"), content)
	f := afsOpen(t, dir)

	cases := []struct {
		name   string
		path   string
		origin string
		offset int64
		want   string
	}{
		{"default", "alloc/data/f", "", 0, content},
		{"leading slash", "/alloc/data/f", "start", 0, content},
		{"unclean", "alloc//data/./f", "start", 0, content},
		{"start offset", "alloc/data/f", "start", 4, "456789"},
		{"start at EOF", "alloc/data/f", "start", 10, ""},
		{"start past EOF", "alloc/data/f", "start", 100, ""},
		{"end", "alloc/data/f", "end", 3, "789"},
		{"end zero", "alloc/data/f", "end", 0, ""},
		{"end past start", "alloc/data/f", "end", 100, content},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := newAFSFrameSink()
			err := f.Stream(context.Background(), StreamOptions{Path: tc.path, Origin: tc.origin, Offset: tc.offset}, sink.send)
			if err != nil {
				t.Fatal(err)
			}
			frames, data := sink.snapshot()
			if string(data) != tc.want {
				t.Errorf("data = %q; want %q", data, tc.want)
			}
			afsCheckOffsets(t, frames, map[string]string{"alloc/data/f": content})
			if tc.want != "" && frames[len(frames)-1].Offset != int64(len(content)) {
				t.Errorf("last Offset = %d; want %d", frames[len(frames)-1].Offset, len(content))
			}
		})
	}

	errCases := []struct {
		name string
		opts StreamOptions
		code int
		msg  string
	}{
		{"no path", StreamOptions{}, 400, "must provide a file name"},
		{"negative offset", StreamOptions{Path: "alloc/data/f", Offset: -1}, 400, "offset must not be negative"},
		{"bad origin", StreamOptions{Path: "alloc/data/f", Origin: "middle"}, 400, "origin must be start or end"},
		{"missing", StreamOptions{Path: "alloc/data/nope", Follow: true}, 404, `file "alloc/data/nope" not found`},
		{"directory", StreamOptions{Path: "alloc/data", Follow: true}, 400, `file "alloc/data" is a directory`},
		{"escape", StreamOptions{Path: "../x", Follow: true}, 400, "path escapes the alloc directory"},
		{"secret", StreamOptions{Path: "web/secrets/token", Follow: true}, 403, "Reading secret file prohibited: web/secrets/token"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Stream(context.Background(), tc.opts, func(*structs.StreamFrame) error {
				t.Error("send called")
				return nil
			})
			afsWantCode(t, err, tc.code, tc.msg, dir)
		})
	}
}

func TestFsStream_FrameSize(t *testing.T) {
	dir, _ := afsTestDir(t)
	content := make([]byte, 1<<20+123)
	rand.New(rand.NewSource(1)).Read(content)
	if err := os.WriteFile(filepath.Join(dir, "alloc/data/big"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	f := afsOpen(t, dir)
	sink := newAFSFrameSink()
	if err := f.Stream(context.Background(), StreamOptions{Path: "alloc/data/big"}, sink.send); err != nil {
		t.Fatal(err)
	}
	frames, data := sink.snapshot()
	if !bytes.Equal(data, content) {
		t.Fatalf("got %d bytes; want the %d-byte file", len(data), len(content))
	}
	if len(frames) < len(content)/structs.MaxFrameData {
		t.Errorf("%d frames for %d bytes", len(frames), len(content))
	}
	afsCheckOffsets(t, frames, map[string]string{"alloc/data/big": string(content)})
}

func TestFsStream_FollowAppend(t *testing.T) {
	dir, _ := afsTestDir(t)
	p := filepath.Join(dir, "alloc/data/app.log")
	afsWriteFile(t, p, "first\n")
	f := afsOpen(t, dir)

	sink, _, _ := afsStreamAsync(t, f, StreamOptions{Path: "alloc/data/app.log", Follow: true})
	sink.waitData(t, "first\n")

	want := "first\n"
	fastest := time.Hour
	for i := 0; i < 5; i++ {
		line := strings.Repeat("x", i+1) + "\n"
		want += line
		start := time.Now()
		afsAppendFile(t, p, line)
		sink.waitData(t, want)
		fastest = min(fastest, time.Since(start))
	}
	// fsnotify, not the poll, wakes the follower: at least one append must
	// arrive well before the fallback poll could have fired.
	if fastest >= followPollInterval {
		t.Errorf("fastest wake-up took %v; fsnotify does not seem to wake the stream (poll is %v)", fastest, followPollInterval)
	}
	frames, _ := sink.snapshot()
	afsCheckOffsets(t, frames, map[string]string{"alloc/data/app.log": want})
}

func TestFsStream_FollowPastEOF(t *testing.T) {
	dir, _ := afsTestDir(t)
	p := filepath.Join(dir, "alloc/data/app.log")
	afsWriteFile(t, p, "0123456789")
	f := afsOpen(t, dir)

	// Offset 15 is past EOF: nothing until the file grows beyond it.
	sink, _, _ := afsStreamAsync(t, f, StreamOptions{Path: "alloc/data/app.log", Offset: 15, Follow: true})
	afsAppendFile(t, p, "abcde") // size 15: still nothing to send
	afsAppendFile(t, p, "VWXYZ")
	sink.waitData(t, "VWXYZ")
	if sink.hasEvent(structs.FileEventTruncated) {
		t.Error("growth below the offset was reported as truncation")
	}
}

func TestFsStream_Truncate(t *testing.T) {
	dir, _ := afsTestDir(t)
	p := filepath.Join(dir, "alloc/data/app.log")
	afsWriteFile(t, p, "abcdef")
	f := afsOpen(t, dir)

	sink, _, _ := afsStreamAsync(t, f, StreamOptions{Path: "alloc/data/app.log", Follow: true})
	sink.waitData(t, "abcdef")
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	afsAppendFile(t, p, "xy")
	sink.waitData(t, "abcdefxy")

	frames, _ := sink.snapshot()
	var events []string
	for _, fr := range frames {
		switch {
		case fr.FileEvent != "":
			events = append(events, fr.FileEvent)
			if fr.File != "alloc/data/app.log" || len(fr.Data) != 0 {
				t.Errorf("event frame = %+v", fr)
			}
		case len(fr.Data) > 0:
			events = append(events, string(fr.Data))
		}
	}
	if got := strings.Join(events, "|"); got != "abcdef|file truncated|xy" {
		t.Errorf("frames = %q; want abcdef|file truncated|xy", got)
	}
	if last := frames[len(frames)-1]; last.Offset != 2 {
		t.Errorf("Offset after truncation = %d; want 2", last.Offset)
	}
}

func TestFsStream_Delete(t *testing.T) {
	cases := []struct {
		name   string
		remove func(t *testing.T, p string)
	}{
		{"remove", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}},
		{"rename away", func(t *testing.T, p string) {
			if err := os.Rename(p, p+".1"); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced by a new file", func(t *testing.T, p string) {
			afsWriteFile(t, p+".new", "other content")
			if err := os.Rename(p+".new", p); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := afsTestDir(t)
			p := filepath.Join(dir, "alloc/data/app.log")
			afsWriteFile(t, p, "abc")
			f := afsOpen(t, dir)

			sink, done, _ := afsStreamAsync(t, f, StreamOptions{Path: "alloc/data/app.log", Follow: true})
			sink.waitData(t, "abc")
			tc.remove(t, p)
			if err := afsWaitDone(t, done); err != nil {
				t.Fatalf("Stream = %v; want nil after a delete", err)
			}
			frames, data := sink.snapshot()
			if string(data) != "abc" {
				t.Errorf("data = %q; want abc", data)
			}
			last := frames[len(frames)-1]
			want := structs.StreamFrame{File: "alloc/data/app.log", FileEvent: structs.FileEventDeleted, Offset: 3}
			if last.File != want.File || last.FileEvent != want.FileEvent || last.Offset != want.Offset || len(last.Data) != 0 {
				t.Errorf("last frame = %+v; want %+v", last, want)
			}
		})
	}
}

// TestFsStream_SymlinkSwap replaces the followed file (or its directory)
// with a afsSymlink out of the alloc dir while the stream is open: the stream
// reports the file deleted and ends, and never sends host content.
func TestFsStream_SymlinkSwap(t *testing.T) {
	cases := []struct {
		name string
		swap func(t *testing.T, dir, outside string)
	}{
		{"file to host file via rename", func(t *testing.T, dir, outside string) {
			afsSymlink(t, filepath.Join(outside, "host.txt"), filepath.Join(dir, "alloc/data/.swap"))
			if err := os.Rename(filepath.Join(dir, "alloc/data/.swap"), filepath.Join(dir, "alloc/data/app.log")); err != nil {
				t.Fatal(err)
			}
		}},
		{"file to /etc/passwd", func(t *testing.T, dir, outside string) {
			p := filepath.Join(dir, "alloc/data/app.log")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			afsSymlink(t, "/etc/passwd", p)
		}},
		{"directory to host dir", func(t *testing.T, dir, outside string) {
			afsWriteFile(t, filepath.Join(outside, "app.log"), afsHostSecret+afsHostSecret)
			if err := os.Rename(filepath.Join(dir, "alloc/data"), filepath.Join(dir, "alloc/data.old")); err != nil {
				t.Fatal(err)
			}
			afsSymlink(t, outside, filepath.Join(dir, "alloc/data"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := afsTestDir(t)
			p := filepath.Join(dir, "alloc/data/app.log")
			afsWriteFile(t, p, "abc")
			f := afsOpen(t, dir)

			sink, done, _ := afsStreamAsync(t, f, StreamOptions{Path: "alloc/data/app.log", Follow: true})
			sink.waitData(t, "abc")
			tc.swap(t, dir, outside)
			// Grow the host file so a follower reading it would see data.
			afsAppendFile(t, filepath.Join(outside, "host.txt"), afsHostSecret)
			if err := afsWaitDone(t, done); err != nil {
				t.Fatalf("Stream = %v; want nil", err)
			}
			_, data := sink.snapshot()
			if string(data) != "abc" {
				t.Errorf("data = %q; want only abc", afsTrunc(data))
			}
			if !sink.hasEvent(structs.FileEventDeleted) {
				t.Error("no file deleted event")
			}
		})
	}
}

func TestFsStream_AllocDirRemoved(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/app.log"), "abc")
	f := afsOpen(t, dir)

	sink, done, _ := afsStreamAsync(t, f, StreamOptions{Path: "alloc/data/app.log", Follow: true})
	sink.waitData(t, "abc")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := afsWaitDone(t, done); err != nil && structs.StatusCode(err) != 404 {
		t.Fatalf("Stream = %v; want nil or a 404", err)
	}
}

func TestFsStream_SendError(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/app.log"), "abc")
	f := afsOpen(t, dir)
	boom := errors.New("client went away")
	err := f.Stream(context.Background(), StreamOptions{Path: "alloc/data/app.log", Follow: true}, func(*structs.StreamFrame) error {
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Stream = %v; want the send error", err)
	}
}

// TestFsStream_CancelNoLeak cancels an open follow stream: it must return
// promptly with ctx's error and leave no goroutine or descriptor behind.
func TestFsStream_CancelNoLeak(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/app.log"), "abc")
	afsWriteLogs(t, dir, "web", "stdout", "log0")
	f := afsOpen(t, dir)

	runs := []struct {
		name string
		run  func(ctx context.Context, send func(*structs.StreamFrame) error) error
	}{
		{"stream", func(ctx context.Context, send func(*structs.StreamFrame) error) error {
			return f.Stream(ctx, StreamOptions{Path: "alloc/data/app.log", Follow: true}, send)
		}},
		{"logs", func(ctx context.Context, send func(*structs.StreamFrame) error) error {
			return f.Logs(ctx, LogsOptions{Task: "web", Type: "stdout", Follow: true, Tasks: map[string]bool{"web": true}}, send)
		}},
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			goroutines := runtime.NumGoroutine()
			fds := afsCountFDs(t)

			sink := newAFSFrameSink()
			done, cancel := afsRunAsync(t, func(ctx context.Context) error { return r.run(ctx, sink.send) })
			sink.waitFor(t, "first frame", func(fr []structs.StreamFrame, _ []byte) bool { return len(fr) > 0 })
			start := time.Now()
			cancel()
			if err := afsWaitDone(t, done); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v; want context.Canceled", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("stream took %v to stop", d)
			}
			afsWaitCond(t, "goroutines to settle", func() bool { return runtime.NumGoroutine() <= goroutines })
			if fds >= 0 {
				afsWaitCond(t, "descriptors to be closed", func() bool { return afsCountFDs(t) <= fds })
			}
		})
	}
}

// afsWaitCond polls cond until it holds or afsWaitTimeout passes.
func afsWaitCond(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(afsWaitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// afsCountFDs returns the number of open descriptors, or -1 where that cannot
// be read.
func afsCountFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestFsStream_Ready: Ready is called once, after validation and open and
// before the first frame; not at all when the request fails; and its error
// aborts the stream.
func TestFsStream_Ready(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteFile(t, filepath.Join(dir, "alloc/data/app.log"), "abc")
	afsWriteLogs(t, dir, "web", "stdout", "log0")
	f := afsOpen(t, dir)

	type call func(ready func() error, send func(*structs.StreamFrame) error) error
	stream := func(p string) call {
		return func(ready func() error, send func(*structs.StreamFrame) error) error {
			return f.Stream(context.Background(), StreamOptions{Path: p, Ready: ready}, send)
		}
	}
	logs := func(task string) call {
		return func(ready func() error, send func(*structs.StreamFrame) error) error {
			return f.Logs(context.Background(), LogsOptions{Task: task, Type: "stdout", Tasks: afsWebStarted, Ready: ready}, send)
		}
	}
	cases := []struct {
		name      string
		run       call
		wantReady bool
	}{
		{"stream ok", stream("alloc/data/app.log"), true},
		{"stream missing", stream("alloc/data/nope"), false},
		{"stream secret", stream("web/secrets/token"), false},
		{"logs ok", logs("web"), true},
		{"logs unknown task", logs("db"), false},
		{"logs not started", logs("sidecar"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var events []string
			err := tc.run(func() error {
				events = append(events, "ready")
				return nil
			}, func(*structs.StreamFrame) error {
				events = append(events, "frame")
				return nil
			})
			if tc.wantReady {
				if err != nil || len(events) < 2 || events[0] != "ready" || strings.Count(strings.Join(events, ","), "ready") != 1 {
					t.Errorf("events = %v, err = %v; want ready once, then frames", events, err)
				}
				boom := errors.New("ack failed")
				err := tc.run(func() error { return boom }, func(*structs.StreamFrame) error {
					t.Error("frame sent after Ready failed")
					return nil
				})
				if !errors.Is(err, boom) {
					t.Errorf("err = %v; want Ready's error", err)
				}
				return
			}
			if err == nil || len(events) != 0 {
				t.Errorf("events = %v, err = %v; want an error and no Ready", events, err)
			}
		})
	}
}
