package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseMockConfig(t *testing.T) {
	cases := []struct {
		name    string
		in      map[string]any
		want    MockTaskConfig
		wantErr string
	}{
		{name: "empty", in: map[string]any{}},
		{name: "nil map", in: nil},
		{name: "every key, JSON types", in: map[string]any{
			"run_for": "10s", "exit_code": float64(7), "exit_signal": float64(9), "exit_err_msg": "boom",
			"start_error": "nope", "start_error_recoverable": true, "start_block_for": "1s", "kill_after": "3s",
			"stdout_string": "out", "stdout_repeat": float64(2), "stdout_repeat_duration": "100ms",
			"stderr_string": "err", "stderr_repeat": float64(3), "stderr_repeat_duration": "1m",
		}, want: MockTaskConfig{
			RunFor: 10 * time.Second, ExitCode: 7, ExitSignal: 9, ExitErrMsg: "boom",
			StartError: "nope", StartErrorRecoverable: true, StartBlockFor: time.Second, KillAfter: 3 * time.Second,
			StdoutString: "out", StdoutRepeat: 2, StdoutRepeatDuration: 100 * time.Millisecond,
			StderrString: "err", StderrRepeat: 3, StderrRepeatDuration: time.Minute,
		}},
		{name: "msgpack integer types", in: map[string]any{
			"exit_code": int64(-1), "exit_signal": uint64(15), "stdout_repeat": int8(4), "stderr_repeat": uint32(5),
			"run_for": int64(time.Second),
		}, want: MockTaskConfig{ExitCode: -1, ExitSignal: 15, StdoutRepeat: 4, StderrRepeat: 5, RunFor: time.Second}},
		{name: "strings as HCL converts them", in: map[string]any{
			"exit_code": "3", "stdout_repeat": "2", "start_error_recoverable": "true", "run_for": "",
		}, want: MockTaskConfig{ExitCode: 3, StdoutRepeat: 2, StartErrorRecoverable: true}},
		{name: "json.Number", in: map[string]any{"exit_code": json.Number("12")}, want: MockTaskConfig{ExitCode: 12}},
		{name: "null values are absent", in: map[string]any{"exit_code": nil, "run_for": nil}},
		{name: "ignored Nomad keys", in: map[string]any{"signal_error": "x", "driver_ip": "10.0.0.1", "plugin_exit_after": "1s"}},
		{name: "unknown key", in: map[string]any{"run_fro": "1s"}, wantErr: `unknown mock_driver config key "run_fro"`},
		{name: "bad duration", in: map[string]any{"run_for": "10"}, wantErr: `run_for: invalid duration "10"`},
		{name: "duration of wrong type", in: map[string]any{"kill_after": true}, wantErr: "kill_after: must be a duration"},
		{name: "negative duration", in: map[string]any{"start_block_for": "-1s"}, wantErr: "start_block_for: must not be negative"},
		{name: "fractional number", in: map[string]any{"exit_code": 1.5}, wantErr: "exit_code: must be an integer"},
		{name: "number of wrong type", in: map[string]any{"exit_code": []any{1}}, wantErr: "exit_code: must be a number"},
		{name: "number out of range", in: map[string]any{"exit_code": float64(1 << 40)}, wantErr: "exit_code: 1099511627776 is out of range"},
		{name: "non-numeric string", in: map[string]any{"stdout_repeat": "many"}, wantErr: `stdout_repeat: must be a number, got "many"`},
		{name: "string of wrong type", in: map[string]any{"stdout_string": float64(1)}, wantErr: "stdout_string: must be a string"},
		{name: "bool of wrong type", in: map[string]any{"start_error_recoverable": "yes"}, wantErr: "start_error_recoverable: must be a bool"},
		{name: "negative repeat", in: map[string]any{"stderr_repeat": float64(-1)}, wantErr: "stderr_repeat: must be between 0 and"},
		{name: "repeat over limit", in: map[string]any{"stdout_repeat": float64(MockMaxRepeat + 1)}, wantErr: "stdout_repeat: must be between 0 and"},
		{name: "output over limit", in: map[string]any{"stderr_string": strings.Repeat("x", MockMaxOutputString+1)}, wantErr: "must be at most"},
		{name: "signal out of range", in: map[string]any{"exit_signal": float64(256)}, wantErr: "exit_signal: must be between 0 and 255"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMockConfig(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

// waitMockDone waits for a mock task to end and returns its result.
func waitMockDone(t *testing.T, h *MockHandle) *ExitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-h.Done():
	case <-ctx.Done():
		t.Fatal("mock task did not end within 10s")
	}
	return h.Result()
}

// startTestMock starts a mock task and kills it when the test ends.
func startTestMock(t *testing.T, cfg *MockTaskConfig, stdout, stderr *syncBuffer) *MockHandle {
	t.Helper()
	var o, e = nilWriter(stdout), nilWriter(stderr)
	h, err := StartMock(context.Background(), "test", cfg, o, e, nil)
	if err != nil {
		t.Fatalf("StartMock: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Kill(ctx); err != nil {
			t.Errorf("Kill: %v", err)
		}
	})
	return h
}

// nilWriter keeps a nil *syncBuffer an untyped nil writer.
func nilWriter(b *syncBuffer) io.Writer {
	if b == nil {
		return nil
	}
	return b
}

func TestMock_Exit(t *testing.T) {
	cases := []struct {
		name string
		cfg  MockTaskConfig
		want ExitResult
		ok   bool
	}{
		{name: "defaults exit at once, successfully", want: ExitResult{}, ok: true},
		{name: "run_for", cfg: MockTaskConfig{RunFor: 30 * time.Millisecond}, ok: true},
		{name: "exit_code", cfg: MockTaskConfig{RunFor: 5 * time.Millisecond, ExitCode: 7}, want: ExitResult{ExitCode: 7}},
		{name: "exit_signal is reported as is", cfg: MockTaskConfig{ExitSignal: 9}, want: ExitResult{Signal: 9}},
		{name: "exit_err_msg fails a zero exit", cfg: MockTaskConfig{ExitErrMsg: "the application crashed"},
			want: ExitResult{Err: errors.New("the application crashed")}},
		{name: "all three", cfg: MockTaskConfig{ExitCode: 2, ExitSignal: 15, ExitErrMsg: "x"},
			want: ExitResult{ExitCode: 2, Signal: 15, Err: errors.New("x")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			h := startTestMock(t, &tc.cfg, nil, nil)
			res := waitMockDone(t, h)
			if el := time.Since(start); el < tc.cfg.RunFor {
				t.Errorf("ended after %v; want at least run_for %v", el, tc.cfg.RunFor)
			}
			if !reflect.DeepEqual(*res, tc.want) {
				t.Errorf("result = %+v; want %+v", *res, tc.want)
			}
			if res.Successful() != tc.ok {
				t.Errorf("Successful() = %v; want %v", res.Successful(), tc.ok)
			}
		})
	}
}

func TestMock_Output(t *testing.T) {
	cases := []struct {
		name       string
		cfg        MockTaskConfig
		wantStdout string
		wantStderr string
		minTime    time.Duration
	}{
		{name: "no output", cfg: MockTaskConfig{}},
		{name: "stdout_string once", cfg: MockTaskConfig{StdoutString: "hello\n"}, wantStdout: "hello\n"},
		{name: "stdout_repeat", cfg: MockTaskConfig{StdoutString: "a\n", StdoutRepeat: 3, StdoutRepeatDuration: 5 * time.Millisecond},
			wantStdout: "a\na\na\na\n", minTime: 15 * time.Millisecond},
		{name: "stdout_repeat without duration", cfg: MockTaskConfig{StdoutString: "z", StdoutRepeat: 5}, wantStdout: "zzzzzz"},
		{name: "stderr", cfg: MockTaskConfig{StderrString: "e\n", StderrRepeat: 2, StderrRepeatDuration: 2 * time.Millisecond},
			wantStderr: "e\ne\ne\n", minTime: 4 * time.Millisecond},
		{name: "both, exit waits for the longer", cfg: MockTaskConfig{
			StdoutString: "o", StdoutRepeat: 1, StdoutRepeatDuration: 20 * time.Millisecond,
			StderrString: "e", StderrRepeat: 4, StderrRepeatDuration: time.Millisecond,
		}, wantStdout: "oo", wantStderr: "eeeee", minTime: 20 * time.Millisecond},
		{name: "run_for longer than output", cfg: MockTaskConfig{RunFor: 25 * time.Millisecond, StdoutString: "x", StdoutRepeat: 1},
			wantStdout: "xx", minTime: 25 * time.Millisecond},
		{name: "repeat without a string", cfg: MockTaskConfig{StdoutRepeat: 3, StdoutRepeatDuration: time.Hour}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			start := time.Now()
			h := startTestMock(t, &tc.cfg, &stdout, &stderr)
			res := waitMockDone(t, h)
			if el := time.Since(start); el < tc.minTime {
				t.Errorf("ended after %v; want at least %v", el, tc.minTime)
			}
			if !res.Successful() {
				t.Errorf("result = %+v; want success", res)
			}
			if got := stdout.String(); got != tc.wantStdout {
				t.Errorf("stdout = %q; want %q", got, tc.wantStdout)
			}
			if got := stderr.String(); got != tc.wantStderr {
				t.Errorf("stderr = %q; want %q", got, tc.wantStderr)
			}
		})
	}
}

func TestMock_StartError(t *testing.T) {
	cases := []struct {
		name        string
		recoverable bool
	}{{"unrecoverable", false}, {"recoverable", true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout syncBuffer
			cfg := &MockTaskConfig{StartError: "no such image", StartErrorRecoverable: tc.recoverable, StdoutString: "x"}
			h, err := StartMock(context.Background(), "test", cfg, &stdout, nil, nil)
			if h != nil || err == nil || err.Error() != "no such image" {
				t.Fatalf("StartMock = %v, %v; want the start error", h, err)
			}
			var se *StartError
			if !errors.As(err, &se) || se.Recoverable != tc.recoverable || isRecoverable(err) != tc.recoverable {
				t.Fatalf("err %#v: recoverable = %v; want %v", err, isRecoverable(err), tc.recoverable)
			}
			if stdout.String() != "" {
				t.Fatalf("a failed start wrote %q", stdout.String())
			}
		})
	}
	// Errors of other types leave the decision to the restart policy.
	if !isRecoverable(errors.New("exec format error")) {
		t.Fatal("plain error not recoverable")
	}
}

func TestMock_StartBlockFor(t *testing.T) {
	cfg := &MockTaskConfig{StartBlockFor: 30 * time.Millisecond, RunFor: time.Hour}
	start := time.Now()
	h := startTestMock(t, cfg, nil, nil)
	if el := time.Since(start); el < cfg.StartBlockFor {
		t.Fatalf("StartMock returned after %v; want at least %v", el, cfg.StartBlockFor)
	}
	if h.Result() != nil {
		t.Fatal("task ended right after start")
	}

	// A stop while blocked ends the start with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h, err := StartMock(ctx, "test", &MockTaskConfig{StartBlockFor: time.Hour}, nil, nil, nil)
	if h != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("StartMock with a cancelled context = %v, %v; want context.Canceled", h, err)
	}
}

func TestMock_Kill(t *testing.T) {
	cases := []struct {
		name string
		cfg  MockTaskConfig
		want ExitResult
	}{
		{name: "at once", cfg: MockTaskConfig{RunFor: time.Hour}},
		{name: "kill_after", cfg: MockTaskConfig{RunFor: time.Hour, KillAfter: 30 * time.Millisecond}},
		{name: "configured result", cfg: MockTaskConfig{ExitCode: 3, ExitSignal: 2, StdoutString: "x", StdoutRepeat: 1000, StdoutRepeatDuration: time.Millisecond},
			want: ExitResult{ExitCode: 3, Signal: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout syncBuffer
			h := startTestMock(t, &tc.cfg, &stdout, nil)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := h.Kill(ctx); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if el := time.Since(start); el < tc.cfg.KillAfter {
				t.Errorf("Kill returned after %v; want at least kill_after %v", el, tc.cfg.KillAfter)
			}
			if res := h.Result(); res == nil || !reflect.DeepEqual(*res, tc.want) {
				t.Errorf("result = %+v; want %+v", res, tc.want)
			}
			// The output stopped with the kill: nothing is written later.
			n := len(stdout.String())
			if n == 0 && tc.cfg.StdoutString != "" {
				t.Error("first output missing")
			}
			if err := h.Kill(ctx); err != nil {
				t.Errorf("second Kill: %v", err)
			}
			if got := len(stdout.String()); got != n {
				t.Errorf("output grew from %d to %d bytes after the task ended", n, got)
			}
		})
	}

	// A kill whose context ends first returns its error; the task still
	// ends after kill_after.
	h := startTestMock(t, &MockTaskConfig{RunFor: time.Hour, KillAfter: 20 * time.Millisecond}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Kill(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Kill with a cancelled context = %v", err)
	}
	waitMockDone(t, h)
}

// closingWriter fails the test when written after close.
type closingWriter struct {
	mu     sync.Mutex
	closed bool
	late   atomic.Int32
	n      int
}

func (w *closingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.late.Add(1)
		return 0, os.ErrClosed
	}
	w.n += len(p)
	return len(p), nil
}

func (w *closingWriter) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// TestMock_NoWriteAfterDone kills tasks mid-output many times: once Done is
// closed the writers may be closed, so no write may follow.
func TestMock_NoWriteAfterDone(t *testing.T) {
	for i := 0; i < 50; i++ {
		w := &closingWriter{}
		h, err := StartMock(context.Background(), "test", &MockTaskConfig{StdoutString: "x", StdoutRepeat: 1000}, w, w, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			// Kill while repeats are under way, racing a timer's write.
			waitCond(t, 10*time.Second, func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.n >= 3
			}, "repeated output")
		}
		if err := h.Kill(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-h.Done()
		w.Close()
		if w.late.Load() != 0 {
			t.Fatalf("round %d: %d writes after Done", i, w.late.Load())
		}
	}
}

func TestMock_WriteErrorStopsStreamNotTask(t *testing.T) {
	before := mockCounters.outputWriteErrs.Load()
	cfg := &MockTaskConfig{StdoutString: "x", StdoutRepeat: 1000, StdoutRepeatDuration: time.Hour, ExitCode: 4}
	h, err := StartMock(context.Background(), "test", cfg, failingWriter{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The stream's repeats are dropped with it, so the task ends at once.
	res := waitMockDone(t, h)
	if res.ExitCode != 4 {
		t.Fatalf("result = %+v; want exit code 4", res)
	}
	if got := mockCounters.outputWriteErrs.Load() - before; got != 1 {
		t.Fatalf("write errors counted = %d; want 1", got)
	}
}

func TestMock_StatsAndPid(t *testing.T) {
	h := startTestMock(t, &MockTaskConfig{RunFor: time.Hour}, nil, nil)
	if h.Pid() != 0 {
		t.Fatalf("Pid = %d; want 0", h.Pid())
	}
	u, err := h.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if u.Timestamp == 0 || u.ResourceUsage == nil || u.ResourceUsage.MemoryStats == nil || u.ResourceUsage.CpuStats == nil {
		t.Fatalf("Stats = %+v; want a stamped zero usage", u)
	}
	if m := u.ResourceUsage.MemoryStats; m.RSS != 0 || len(m.Measured) != 0 || m.Measured == nil {
		t.Fatalf("memory stats = %+v; want zero with an empty Measured", m)
	}
	if c := u.ResourceUsage.CpuStats; c.Percent != 0 || len(c.Measured) != 0 || c.Measured == nil {
		t.Fatalf("cpu stats = %+v; want zero with an empty Measured", c)
	}
	if err := h.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stats(); !errors.Is(err, ErrTaskNotRunning) {
		t.Fatalf("Stats after the end = %v; want ErrTaskNotRunning", err)
	}
}

// TestMock_RotatedOutput writes through the rotating writer raw_exec uses:
// the files that are kept hold the newest output, byte for byte.
func TestMock_RotatedOutput(t *testing.T) {
	dir := t.TempDir()
	w, err := NewRotatingWriter(dir, "web.stdout", 3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("0123456789", 7) + "\n" // 71 bytes: not a divisor of 1000
	h, err := StartMock(context.Background(), "web", &MockTaskConfig{StdoutString: line, StdoutRepeat: 99}, w, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitMockDone(t, h)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	all := strings.Repeat(line, 100) // 7100 bytes: files 0-7, of which 5, 6, 7 are kept
	var got strings.Builder
	for i := 0; i < 10; i++ {
		b, err := os.ReadFile(filepath.Join(dir, "web.stdout."+strconv.Itoa(i)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got.Write(b)
	}
	if want := all[5000:]; got.String() != want {
		t.Fatalf("kept logs are %d bytes; want the last %d", got.Len(), len(want))
	}
}

// TestMock_Cheap starts many long-running mock tasks: they hold timers, not
// goroutines.
func TestMock_Cheap(t *testing.T) {
	const n = 2000
	before := runtime.NumGoroutine()
	hs := make([]*MockHandle, n)
	for i := range hs {
		h, err := StartMock(context.Background(), "t", &MockTaskConfig{RunFor: time.Hour, StdoutString: "x", StdoutRepeat: 10, StdoutRepeatDuration: time.Hour}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = h
	}
	if grown := runtime.NumGoroutine() - before; grown > 10 {
		t.Errorf("%d running mock tasks added %d goroutines", n, grown)
	}
	for _, h := range hs {
		if err := h.Kill(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
