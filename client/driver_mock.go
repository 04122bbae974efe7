package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/structs"
)

// Limits of a mock_driver task's config. The job body is bounded already;
// these keep one task from being a busy loop or holding much memory.
const (
	// MockMaxOutputString is the longest stdout_string or stderr_string:
	// as long as a job body may be (the Go client's own log test writes
	// about 470 KB in one).
	MockMaxOutputString = 1 << 20
	// MockMaxRepeat is the highest stdout_repeat or stderr_repeat.
	MockMaxRepeat = 10_000_000
	// mockMinRepeatInterval is the shortest time between two repeated
	// writes: a zero stdout_repeat_duration (Nomad's default) would
	// otherwise make the task a loop of writes.
	mockMinRepeatInterval = time.Millisecond
)

// mockCounters counts the mock driver's unusual branches.
var mockCounters struct {
	outputWriteErrs atomic.Uint64 // output streams stopped after a write error
}

// MockTaskConfig is the config of a mock_driver task, with the keys and
// meaning of Nomad's mock driver. Zero values are Nomad's defaults.
type MockTaskConfig struct {
	// RunFor (run_for) is how long the task runs before it exits with
	// ExitCode, ExitSignal and ExitErrMsg. As in Nomad, zero means it exits
	// as soon as its output is written; the exit also waits for the last
	// repeated write.
	RunFor time.Duration
	// ExitCode (exit_code) is the exit code reported when the task ends.
	ExitCode int
	// ExitSignal (exit_signal) is the signal reported when the task ends.
	// It is reported as is: the exit code is not changed to 128+signal.
	ExitSignal int
	// ExitErrMsg (exit_err_msg) is the error the task ends with; a task
	// with one is not successful, whatever its exit code.
	ExitErrMsg string
	// StartError (start_error) makes every start fail with this message.
	StartError string
	// StartErrorRecoverable (start_error_recoverable) lets the restart
	// policy retry a failed start; otherwise the task fails at once.
	StartErrorRecoverable bool
	// StartBlockFor (start_block_for) delays the start; the task stays
	// pending meanwhile.
	StartBlockFor time.Duration
	// KillAfter (kill_after) is how long the task takes to exit once it is
	// killed. It is not bounded by kill_timeout (as in Nomad).
	KillAfter time.Duration
	// StdoutString (stdout_string) is written to stdout when the task
	// starts, then StdoutRepeat more times, StdoutRepeatDuration apart.
	StdoutString string
	// StdoutRepeat (stdout_repeat) is how many times StdoutString is
	// written after the first.
	StdoutRepeat int
	// StdoutRepeatDuration (stdout_repeat_duration) is the time between
	// two writes, at least 1ms.
	StdoutRepeatDuration time.Duration
	// StderrString, StderrRepeat and StderrRepeatDuration (stderr_string,
	// stderr_repeat, stderr_repeat_duration) are the same for stderr.
	StderrString         string
	StderrRepeat         int
	StderrRepeatDuration time.Duration
}

// mockIgnoredKeys are Nomad mock_driver keys Tether accepts and does not
// act on: they concern signals, networking and the plugin process.
var mockIgnoredKeys = map[string]bool{
	"signal_error": true, "driver_ip": true, "driver_advertise": true,
	"driver_port_map": true, "plugin_exit_after": true,
}

// ParseMockConfig decodes a mock_driver task's config as it arrives from
// job JSON (float64 numbers) or msgpack (integer types). Numbers and bools
// may also be strings, as HCL converts them; durations are Go duration
// strings ("10s") or integer nanoseconds. Unknown keys are refused, naming
// the first.
func ParseMockConfig(m map[string]any) (*MockTaskConfig, error) {
	c := &MockTaskConfig{}
	durations := map[string]*time.Duration{
		"run_for": &c.RunFor, "start_block_for": &c.StartBlockFor, "kill_after": &c.KillAfter,
		"stdout_repeat_duration": &c.StdoutRepeatDuration, "stderr_repeat_duration": &c.StderrRepeatDuration,
	}
	ints := map[string]*int{
		"exit_code": &c.ExitCode, "exit_signal": &c.ExitSignal,
		"stdout_repeat": &c.StdoutRepeat, "stderr_repeat": &c.StderrRepeat,
	}
	strs := map[string]*string{
		"exit_err_msg": &c.ExitErrMsg, "start_error": &c.StartError,
		"stdout_string": &c.StdoutString, "stderr_string": &c.StderrString,
	}
	bools := map[string]*bool{"start_error_recoverable": &c.StartErrorRecoverable}

	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		if v == nil {
			continue
		}
		var err error
		switch {
		case durations[k] != nil:
			*durations[k], err = mockDuration(v)
		case ints[k] != nil:
			*ints[k], err = mockInt(v)
		case strs[k] != nil:
			s, ok := v.(string)
			if !ok {
				err = fmt.Errorf("must be a string, got %T", v)
			}
			*strs[k] = s
		case bools[k] != nil:
			*bools[k], err = mockBool(v)
		case mockIgnoredKeys[k]:
		default:
			return nil, fmt.Errorf("unknown mock_driver config key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
	}
	return c, c.verify()
}

// verify checks the limits.
func (c *MockTaskConfig) verify() error {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"run_for", c.RunFor}, {"start_block_for", c.StartBlockFor}, {"kill_after", c.KillAfter},
		{"stdout_repeat_duration", c.StdoutRepeatDuration}, {"stderr_repeat_duration", c.StderrRepeatDuration},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s: must not be negative", d.key)
		}
	}
	for _, r := range []struct {
		key string
		v   int
	}{{"stdout_repeat", c.StdoutRepeat}, {"stderr_repeat", c.StderrRepeat}} {
		if r.v < 0 || r.v > MockMaxRepeat {
			return fmt.Errorf("%s: must be between 0 and %d", r.key, MockMaxRepeat)
		}
	}
	if len(c.StdoutString) > MockMaxOutputString || len(c.StderrString) > MockMaxOutputString {
		return fmt.Errorf("stdout_string and stderr_string must be at most %d bytes", MockMaxOutputString)
	}
	if c.ExitSignal < 0 || c.ExitSignal > 255 {
		return errors.New("exit_signal: must be between 0 and 255")
	}
	return nil
}

// mockDuration decodes a duration: a Go duration string or nanoseconds.
func mockDuration(v any) (time.Duration, error) {
	if s, ok := v.(string); ok {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return d, nil
	}
	n, err := mockInt64(v)
	if err != nil {
		return 0, fmt.Errorf("must be a duration string like \"10s\"")
	}
	return time.Duration(n), nil
}

// mockInt decodes an integer that fits 32 bits.
func mockInt(v any) (int, error) {
	n, err := mockInt64(v)
	if err != nil {
		return 0, err
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%d is out of range", n)
	}
	return int(n), nil
}

// mockInt64 decodes an integral number of any of the types JSON, msgpack
// and HCL produce.
func mockInt64(v any) (int64, error) {
	switch n := v.(type) {
	case int:
		return int64(n), nil
	case int8:
		return int64(n), nil
	case int16:
		return int64(n), nil
	case int32:
		return int64(n), nil
	case int64:
		return n, nil
	case uint8:
		return int64(n), nil
	case uint16:
		return int64(n), nil
	case uint32:
		return int64(n), nil
	case uint64:
		if n > math.MaxInt64 {
			return 0, fmt.Errorf("%d is out of range", n)
		}
		return int64(n), nil
	case float32:
		return mockFloat(float64(n))
	case float64:
		return mockFloat(n)
	case json.Number:
		return mockNumberString(string(n))
	case string:
		return mockNumberString(n)
	}
	return 0, fmt.Errorf("must be a number, got %T", v)
}

func mockFloat(f float64) (int64, error) {
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, fmt.Errorf("must be an integer, got %v", f)
	}
	return int64(f), nil
}

func mockNumberString(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("must be a number, got %q", s)
	}
	return mockFloat(f)
}

// mockBool decodes a bool or "true"/"false".
func mockBool(v any) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		if r, err := strconv.ParseBool(b); err == nil {
			return r, nil
		}
	}
	return false, fmt.Errorf("must be a bool, got %v", v)
}

// startMockTask is mock_driver's driverStartFunc.
func startMockTask(ctx context.Context, tr *taskRunner) (driverTask, error) {
	cfg, err := ParseMockConfig(tr.task.Config)
	if err != nil {
		return nil, &StartError{Err: fmt.Errorf("invalid mock_driver config: %w", err)}
	}
	stdout, stderr, err := tr.openLogs()
	if err != nil {
		return nil, err
	}
	return StartMock(ctx, tr.task.Name, cfg, stdout, stderr, tr.ar.c.logger)
}

// MockHandle is a running mock_driver task. No process and no goroutine
// stand behind it: a timer per pending event (the end of run_for, the next
// repeated write of each stream, the end of kill_after) does the work when
// it fires, so thousands of mock tasks cost thousands of idle timers.
type MockHandle struct {
	cfg    *MockTaskConfig
	logger hclog.Logger

	// done is closed once the task ended; result is set before. No write
	// happens after done is closed, so the caller may close the writers.
	done   chan struct{}
	result *ExitResult

	// mu guards everything below and is held across writes, so a write
	// never races the end of the task.
	mu         sync.Mutex
	exited     bool
	killed     bool
	runElapsed bool
	writing    int // streams with repeats still to write
	streams    [2]*mockStream
	runTimer   *time.Timer
	killTimer  *time.Timer
}

// mockStream is one output stream of a mock task.
type mockStream struct {
	name  string
	w     io.Writer // nil discards
	s     string
	left  int // repeats still to write
	every time.Duration
	timer *time.Timer
}

// StartMock starts a mock task: after StartBlockFor (or ctx's end, which
// fails the start with ctx.Err()) it fails with StartError, or writes the
// first output and returns the running task. stdout and stderr (nil
// discards) are written from timer callbacks, one at a time; an error
// stops that stream, not the task.
func StartMock(ctx context.Context, name string, cfg *MockTaskConfig, stdout, stderr io.Writer, logger hclog.Logger) (*MockHandle, error) {
	if cfg == nil {
		return nil, errors.New("failed to start task: nil config")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.StartBlockFor > 0 {
		t := time.NewTimer(cfg.StartBlockFor)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("failed to start task: %w", ctx.Err())
		}
	}
	if cfg.StartError != "" {
		return nil, &StartError{Err: errors.New(cfg.StartError), Recoverable: cfg.StartErrorRecoverable}
	}
	h := &MockHandle{
		cfg:    cfg,
		logger: logger.With("task", name, "driver", DriverMock),
		done:   make(chan struct{}),
	}
	h.streams[0] = &mockStream{name: "stdout", w: stdout, s: cfg.StdoutString, left: cfg.StdoutRepeat, every: cfg.StdoutRepeatDuration}
	h.streams[1] = &mockStream{name: "stderr", w: stderr, s: cfg.StderrString, left: cfg.StderrRepeat, every: cfg.StderrRepeatDuration}

	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.streams {
		if st.s == "" {
			continue
		}
		if !h.writeLocked(st) || st.left == 0 {
			continue
		}
		st.every = max(st.every, mockMinRepeatInterval)
		h.writing++
		st.timer = time.AfterFunc(st.every, func() { h.repeat(st) })
	}
	if cfg.RunFor > 0 {
		h.runTimer = time.AfterFunc(cfg.RunFor, h.runForElapsed)
	} else {
		h.runElapsed = true
		h.maybeExitLocked()
	}
	return h, nil
}

// writeLocked writes the stream's string once; false stops the stream.
func (h *MockHandle) writeLocked(st *mockStream) bool {
	if st.w == nil {
		return true
	}
	if _, err := io.WriteString(st.w, st.s); err != nil {
		mockCounters.outputWriteErrs.Add(1)
		h.logger.Error("failed to write task output; discarding the rest", "stream", st.name, "error", err)
		st.left = 0
		return false
	}
	return true
}

// repeat is a stream's timer: one more write, then the next timer or the
// end of the stream.
func (h *MockHandle) repeat(st *mockStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.exited || h.killed || st.left == 0 {
		return
	}
	st.left--
	if h.writeLocked(st) && st.left > 0 {
		st.timer.Reset(st.every)
		return
	}
	st.left = 0
	h.writing--
	h.maybeExitLocked()
}

// runForElapsed is the run_for timer.
func (h *MockHandle) runForElapsed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runElapsed = true
	h.maybeExitLocked()
}

// maybeExitLocked ends the task once run_for elapsed and every repeated
// write was made, unless a kill is under way (its own timer ends it).
func (h *MockHandle) maybeExitLocked() {
	if h.runElapsed && h.writing == 0 && !h.killed {
		h.exitLocked()
	}
}

// exitLocked ends the task with its configured result and stops its timers.
func (h *MockHandle) exitLocked() {
	if h.exited {
		return
	}
	h.exited = true
	for _, t := range []*time.Timer{h.runTimer, h.killTimer, h.streams[0].timer, h.streams[1].timer} {
		if t != nil {
			t.Stop()
		}
	}
	res := &ExitResult{ExitCode: h.cfg.ExitCode, Signal: h.cfg.ExitSignal}
	if h.cfg.ExitErrMsg != "" {
		res.Err = errors.New(h.cfg.ExitErrMsg)
	}
	h.result = res
	close(h.done)
}

// Pid returns 0: a mock task has no process.
func (h *MockHandle) Pid() int { return 0 }

// Done returns a channel closed when the task ended.
func (h *MockHandle) Done() <-chan struct{} { return h.done }

// Result returns how the task ended, or nil while it runs.
func (h *MockHandle) Result() *ExitResult {
	select {
	case <-h.done:
		return h.result
	default:
		return nil
	}
}

// Kill stops the task: its output stops at once and it exits KillAfter
// later, with its configured result (as Nomad's mock driver). It returns
// once the task ended, or with ctx.Err() when ctx ends first (the task
// still ends). Calling it again, or on an ended task, is safe.
func (h *MockHandle) Kill(ctx context.Context) error {
	h.mu.Lock()
	if !h.exited && !h.killed {
		h.killed = true
		for _, st := range h.streams {
			if st.timer != nil {
				st.timer.Stop()
			}
		}
		if h.cfg.KillAfter > 0 {
			h.killTimer = time.AfterFunc(h.cfg.KillAfter, func() {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.exitLocked()
			})
		} else {
			h.exitLocked()
		}
	}
	h.mu.Unlock()
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal accepts any signal while the task runs and does nothing with
// it: a mock task has no process.
func (h *MockHandle) Signal(syscall.Signal) error {
	select {
	case <-h.done:
		return ErrTaskNotRunning
	default:
		return nil
	}
}

// Stats reports zero usage with Measured empty: nothing is measured for a
// task without a process, and no /proc scan is made for it.
func (h *MockHandle) Stats() (*structs.TaskResourceUsage, error) {
	select {
	case <-h.done:
		return nil, ErrTaskNotRunning
	default:
	}
	u := emptyTaskUsage()
	u.Timestamp = time.Now().UnixNano()
	return u, nil
}
