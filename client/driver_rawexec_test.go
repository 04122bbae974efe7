package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that is safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// shTask returns the config of a task running script with sh -c.
func shTask(script string) *TaskConfig {
	return &TaskConfig{Name: "test", Command: "sh", Args: []string{"-c", script}}
}

// startTestTask starts cfg and registers a cleanup that SIGKILLs whatever is
// left of the task's process group and checks that nothing of it survives.
func startTestTask(t testing.TB, cfg *TaskConfig) *TaskHandle {
	t.Helper()
	h, err := StartRawExec(cfg)
	if err != nil {
		t.Fatalf("StartRawExec: %v", err)
	}
	t.Cleanup(func() { stopTestTask(t, h) })
	return h
}

// stopTestTask SIGKILLs the task's group and waits until the task is done
// and no live process of the group remains.
func stopTestTask(t testing.TB, h *TaskHandle) {
	t.Helper()
	if err := h.signalGroup(syscall.SIGKILL); err != nil {
		t.Errorf("kill task %d: %v", h.Pid(), err)
	}
	select {
	case <-h.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("task %d not done 10s after SIGKILL", h.Pid())
		return
	}
	waitCond(t, 5*time.Second, func() bool { return len(liveGroupMembers(h.Pid())) == 0 },
		"processes of group %d still alive", h.Pid())
}

// waitCond polls cond until it holds or timeout passes, then fails.
func waitCond(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+format, append([]any{timeout}, args...)...)
		}
		<-tick.C
	}
}

// procState returns the state letter and process group of pid, or ok=false
// if it does not exist.
func procState(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return 0, 0, false
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0][0], pgrp, true
}

// processAlive reports whether pid runs. Zombies count as dead: the
// container's init may never reap orphans.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	state, _, ok := procState(pid)
	return ok && state != 'Z' && state != 'X'
}

// liveGroupMembers returns the live (non-zombie) processes of group pgid.
func liveGroupMembers(pgid int) []int {
	names, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(filepath.Base(n))
		if err != nil {
			continue
		}
		if state, pgrp, ok := procState(pid); ok && pgrp == pgid && state != 'Z' && state != 'X' {
			out = append(out, pid)
		}
	}
	return out
}

// waitResult waits up to timeout for the task to finish.
func waitResult(t testing.TB, h *TaskHandle, timeout time.Duration) *ExitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := h.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return res
}

// readPidFile waits for a file holding a PID and returns the PID.
func readPidFile(t testing.TB, path string) int {
	t.Helper()
	var pid int
	waitCond(t, 5*time.Second, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, "no pid in %s", path)
	return pid
}

func TestRawExecOutputToRotatingFiles(t *testing.T) {
	ad := NewAllocDir(t.TempDir(), "a1")
	if err := ad.Build([]string{"web"}); err != nil {
		t.Fatal(err)
	}
	stdout, err := NewRotatingWriter(ad.LogDir(), "web.stdout", 1000, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := NewRotatingWriter(ad.LogDir(), "web.stderr", 1000, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	cfg := shTask(`i=0; while [ $i -lt 300 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done`)
	cfg.Dir = ad.TaskDir("web")
	cfg.Stdout, cfg.Stderr = stdout, stderr
	h := startTestTask(t, cfg)
	if res := waitResult(t, h, 10*time.Second); !res.Successful() {
		t.Fatalf("result = %+v; want success", res)
	}

	for _, s := range []struct {
		base, prefix string
		size         int
	}{{"web.stdout", "out", 64}, {"web.stderr", "err", 50}} {
		var want strings.Builder
		for i := range 300 {
			fmt.Fprintf(&want, "%s-%d\n", s.prefix, i)
		}
		var got []byte
		for i := 0; ; i++ {
			b, err := os.ReadFile(filepath.Join(ad.LogDir(), s.base+"."+strconv.Itoa(i)))
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > s.size {
				t.Errorf("%s.%d has %d bytes; want at most %d", s.base, i, len(b), s.size)
			}
			got = append(got, b...)
		}
		if string(got) != want.String() {
			t.Errorf("%s files hold %d bytes %q...; want %d bytes", s.base, len(got), got[:min(len(got), 40)], want.Len())
		}
	}
}

func TestRawExecExitResult(t *testing.T) {
	cases := []struct {
		script      string
		wantCode    int
		wantSignal  int
		wantSuccess bool
	}{
		{"exit 0", 0, 0, true},
		{"exit 3", 3, 0, false},
		{"kill -TERM $$", 128 + 15, 15, false},
		{"kill -KILL $$", 128 + 9, 9, false},
	}
	for _, tc := range cases {
		t.Run(tc.script, func(t *testing.T) {
			h := startTestTask(t, shTask(tc.script))
			res := waitResult(t, h, 10*time.Second)
			if res.ExitCode != tc.wantCode || res.Signal != tc.wantSignal || res.Err != nil {
				t.Errorf("result = %+v; want ExitCode %d Signal %d", res, tc.wantCode, tc.wantSignal)
			}
			if got := res.Successful(); got != tc.wantSuccess {
				t.Errorf("Successful() = %v; want %v", got, tc.wantSuccess)
			}
			if got := h.Result(); got != res {
				t.Errorf("Result() = %+v; want %+v", got, res)
			}
		})
	}
}

func TestRawExecStartErrors(t *testing.T) {
	cases := []struct {
		name    string
		cfg     *TaskConfig
		wantErr string // whole error text, or a part of it if wantSub
		wantSub bool
	}{
		{
			name:    "missing command",
			cfg:     &TaskConfig{Command: "nope-tether-test"},
			wantErr: `failed to start task: exec: "nope-tether-test": executable file not found in $PATH`,
		},
		{
			name:    "looked up in task PATH",
			cfg:     &TaskConfig{Command: "sh", Env: map[string]string{"PATH": "/nonexistent"}},
			wantErr: `failed to start task: exec: "sh": executable file not found in $PATH`,
		},
		{
			name:    "missing absolute path",
			cfg:     &TaskConfig{Command: "/nonexistent/prog"},
			wantErr: `failed to start task: exec: "/nonexistent/prog": stat /nonexistent/prog: no such file or directory`,
		},
		{
			name:    "directory",
			cfg:     &TaskConfig{Command: "/"},
			wantErr: "is a directory",
			wantSub: true,
		},
		{
			name:    "empty command",
			cfg:     &TaskConfig{},
			wantErr: "failed to start task: empty command",
		},
		{
			name:    "unknown signal",
			cfg:     &TaskConfig{Command: "true", KillSignal: "SIGNOPE"},
			wantErr: `failed to start task: unknown signal "SIGNOPE"`,
		},
		{
			name:    "missing dir",
			cfg:     &TaskConfig{Command: "true", Dir: "/nonexistent/dir"},
			wantErr: "no such file or directory",
			wantSub: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := StartRawExec(tc.cfg)
			if err == nil {
				stopTestTask(t, h)
				t.Fatalf("StartRawExec succeeded; want error %q", tc.wantErr)
			}
			if tc.wantSub && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %q; want it to contain %q", err, tc.wantErr)
			}
			if !tc.wantSub && err.Error() != tc.wantErr {
				t.Errorf("error = %q; want %q", err, tc.wantErr)
			}
		})
	}
}

func TestRawExecEnvAndDir(t *testing.T) {
	t.Setenv("TETHER_TEST_AGENT_ONLY", "leaked")
	dir := t.TempDir()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cfg := shTask(`printf '%s|%s|%s|%s|%s\n' "$FOO" "$(pwd -P)" "${TETHER_TEST_AGENT_ONLY-unset}" "$HOME" "$PATH"`)
	cfg.Env = map[string]string{"FOO": "bar baz", "HOME": "/custom/home"}
	cfg.Dir = dir
	cfg.Stdout = &out
	h := startTestTask(t, cfg)
	if res := waitResult(t, h, 10*time.Second); !res.Successful() {
		t.Fatalf("result = %+v; want success", res)
	}
	wantPath := os.Getenv("PATH")
	if wantPath == "" {
		wantPath = defaultTaskPath
	}
	want := fmt.Sprintf("bar baz|%s|unset|/custom/home|%s\n", real, wantPath)
	if got := out.String(); got != want {
		t.Errorf("output = %q; want %q", got, want)
	}
}

func TestRawExecCommandLookup(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho ran-$0\n"
	if err := os.WriteFile(filepath.Join(dir, "tether-prog"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		command string
		env     map[string]string
		want    string
	}{
		{"relative to dir", "./tether-prog", nil, "ran-./tether-prog\n"},
		{"absolute", filepath.Join(dir, "tether-prog"), nil, "ran-" + filepath.Join(dir, "tether-prog") + "\n"},
		{"task PATH", "tether-prog", map[string]string{"PATH": "/nonexistent:relative:" + dir}, "ran-" + filepath.Join(dir, "tether-prog") + "\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			h := startTestTask(t, &TaskConfig{Command: tc.command, Env: tc.env, Dir: dir, Stdout: &out})
			if res := waitResult(t, h, 10*time.Second); !res.Successful() {
				t.Fatalf("result = %+v; want success", res)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("output = %q; want %q", got, tc.want)
			}
		})
	}
}

func TestRawExecKillSignal(t *testing.T) {
	cases := []struct {
		killSignal string
		trap       string
	}{
		{"", "INT"},
		{"SIGINT", "INT"},
		{"SIGTERM", "TERM"},
		{"term", "TERM"},
		{"HUP", "HUP"},
		{"SIGUSR1", "USR1"},
		{"sigquit", "QUIT"},
	}
	for _, tc := range cases {
		t.Run(tc.killSignal, func(t *testing.T) {
			var out syncBuffer
			cfg := shTask(fmt.Sprintf(`trap 'echo got-%s; exit 0' %s; echo ready; while :; do sleep 0.1; done`, tc.trap, tc.trap))
			cfg.KillSignal = tc.killSignal
			cfg.KillTimeout = 5 * time.Second
			cfg.Stdout = &out
			h := startTestTask(t, cfg)
			waitCond(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "ready") }, "task not ready")

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := h.Kill(ctx); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if elapsed := time.Since(start); elapsed >= cfg.KillTimeout {
				t.Errorf("Kill took %v; want less than the kill timeout %v", elapsed, cfg.KillTimeout)
			}
			res := h.Result()
			if res == nil || !res.Successful() {
				t.Errorf("result = %+v; want exit 0", res)
			}
			if want := "got-" + tc.trap; !strings.Contains(out.String(), want) {
				t.Errorf("output = %q; want it to contain %q", out.String(), want)
			}
		})
	}
}

func TestRawExecKillEscalatesToSIGKILL(t *testing.T) {
	var out syncBuffer
	cfg := shTask(`trap '' INT TERM; echo ready; while :; do sleep 0.1; done`)
	cfg.KillTimeout = 300 * time.Millisecond
	cfg.Stdout = &out
	h := startTestTask(t, cfg)
	waitCond(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "ready") }, "task not ready")

	escalations := rawExecCounters.killEscalations.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := h.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	elapsed := time.Since(start)
	if rawExecCounters.killEscalations.Load() <= escalations {
		t.Errorf("killEscalations counter did not grow")
	}
	if elapsed < cfg.KillTimeout || elapsed > cfg.KillTimeout+3*time.Second {
		t.Errorf("Kill took %v; want about the kill timeout %v", elapsed, cfg.KillTimeout)
	}
	res := h.Result()
	if res == nil || res.Signal != int(syscall.SIGKILL) || res.ExitCode != 128+9 {
		t.Errorf("result = %+v; want killed by SIGKILL", res)
	}
}

func TestRawExecKillContextEnds(t *testing.T) {
	var out syncBuffer
	cfg := shTask(`trap '' INT; echo ready; while :; do sleep 0.1; done`)
	cfg.KillTimeout = 500 * time.Millisecond
	cfg.Stdout = &out
	h := startTestTask(t, cfg)
	waitCond(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "ready") }, "task not ready")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Kill(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Kill with cancelled ctx = %v; want context.Canceled", err)
	}
	// The escalation goes on without the caller.
	res := waitResult(t, h, 10*time.Second)
	if res.Signal != int(syscall.SIGKILL) {
		t.Errorf("result = %+v; want killed by SIGKILL", res)
	}
}

func TestRawExecKillIdempotent(t *testing.T) {
	var out syncBuffer
	cfg := shTask(`echo ready; while :; do sleep 0.1; done`)
	cfg.Stdout = &out
	h := startTestTask(t, cfg)
	waitCond(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "ready") }, "task not ready")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Kill(ctx); err != nil {
				t.Errorf("concurrent Kill: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := h.Kill(ctx); err != nil {
		t.Errorf("Kill after exit: %v", err)
	}
	if res := h.Result(); res == nil || res.Signal != int(syscall.SIGINT) {
		t.Errorf("result = %+v; want killed by SIGINT", res)
	}
}

func TestRawExecKillsGrandchildren(t *testing.T) {
	cases := []struct {
		name   string
		script string
		kill   bool
	}{
		// Kill: sh dies of SIGINT, the background sleep ignores it (POSIX
		// shells ignore SIGINT in asynchronous lists).
		{"on kill", `sleep 1000 & echo $! > gc.pid; wait`, true},
		// The main process exits by itself while its child holds stdout.
		{"on main exit", `sleep 1000 & echo $! > gc.pid`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var out syncBuffer
			cfg := shTask(tc.script)
			cfg.Dir = dir
			cfg.Stdout, cfg.Stderr = &out, &out
			h := startTestTask(t, cfg)
			gc := readPidFile(t, filepath.Join(dir, "gc.pid"))
			t.Cleanup(func() {
				if processAlive(gc) {
					syscall.Kill(gc, syscall.SIGKILL)
				}
			})

			start := time.Now()
			if tc.kill {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := h.Kill(ctx); err != nil {
					t.Fatalf("Kill: %v", err)
				}
			} else {
				waitResult(t, h, 10*time.Second)
			}
			// Done must come from killing the group, not from giving up
			// on the output.
			if elapsed := time.Since(start); elapsed >= outputDrainTimeout {
				t.Errorf("task done after %v; want less than %v", elapsed, outputDrainTimeout)
			}
			waitCond(t, 5*time.Second, func() bool { return !processAlive(gc) }, "grandchild %d still alive", gc)
		})
	}
}

func TestRawExecEscapedChildDoesNotHang(t *testing.T) {
	dir := t.TempDir()
	var out syncBuffer
	// setsid moves the child out of the task's group, out of reach of the
	// group kill, while it keeps stdout open.
	// The child writes its PID only once setsid ran; sh exits after that.
	cfg := shTask(`setsid sh -c 'echo $$ > gc.pid; exec sleep 1000' & while [ ! -s gc.pid ]; do sleep 0.01; done; echo bye`)
	cfg.Dir = dir
	cfg.Stdout = &out
	h := startTestTask(t, cfg)
	gc := readPidFile(t, filepath.Join(dir, "gc.pid"))
	t.Cleanup(func() {
		syscall.Kill(gc, syscall.SIGKILL)
		waitCond(t, 5*time.Second, func() bool { return !processAlive(gc) }, "escaped child %d still alive", gc)
	})

	cutOff := rawExecCounters.outputCutOff.Load()
	res := waitResult(t, h, outputDrainTimeout+5*time.Second)
	if rawExecCounters.outputCutOff.Load() <= cutOff {
		t.Errorf("outputCutOff counter did not grow")
	}
	if !res.Successful() {
		t.Errorf("result = %+v; want success", res)
	}
	if got := out.String(); got != "bye\n" {
		t.Errorf("output = %q; want %q", got, "bye\n")
	}
}

func TestRawExecWaitContext(t *testing.T) {
	h := startTestTask(t, shTask(`while :; do sleep 0.1; done`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res, err := h.Wait(ctx); res != nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %+v, %v; want nil, context.Canceled", res, err)
	}
	if res := h.Result(); res != nil {
		t.Errorf("Result() = %+v; want nil while running", res)
	}
	if !processAlive(h.Pid()) {
		t.Errorf("task died after Wait's context ended")
	}
	select {
	case <-h.Done():
		t.Errorf("Done closed while running")
	default:
	}
}

func TestRawExecOutputErrors(t *testing.T) {
	cases := []struct {
		name string
		out  io.Writer
	}{
		{"nil output", nil},
		{"failing writer", failingWriter{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// 1 MB is far more than a pipe buffer: if the output were not
			// read to the end, head would block forever.
			cfg := shTask(`head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2`)
			cfg.Stdout, cfg.Stderr = tc.out, tc.out
			writeErrs := rawExecCounters.outputWriteErrs.Load()
			h := startTestTask(t, cfg)
			if res := waitResult(t, h, 10*time.Second); !res.Successful() {
				t.Errorf("result = %+v; want success", res)
			}
			if _, failing := tc.out.(failingWriter); failing && rawExecCounters.outputWriteErrs.Load() < writeErrs+2 {
				t.Errorf("outputWriteErrs grew by %d; want 2 (stdout and stderr)", rawExecCounters.outputWriteErrs.Load()-writeErrs)
			}
		})
	}
}

func TestRawExecParseSignal(t *testing.T) {
	cases := []struct {
		in      string
		want    syscall.Signal
		wantErr bool
	}{
		{"SIGINT", syscall.SIGINT, false},
		{"INT", syscall.SIGINT, false},
		{"sigterm", syscall.SIGTERM, false},
		{" SIGHUP ", syscall.SIGHUP, false},
		{"SIGUSR1", syscall.SIGUSR1, false},
		{"usr2", syscall.SIGUSR2, false},
		{"SIGQUIT", syscall.SIGQUIT, false},
		{"SIGKILL", syscall.SIGKILL, false},
		{"SIGNOPE", 0, true},
		{"SIG", 0, true},
		{"15", 0, true},
	}
	for _, tc := range cases {
		got, err := parseSignal(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
