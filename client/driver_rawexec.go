package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

const (
	// defaultKillTimeout is how long Kill waits after the kill signal before
	// it SIGKILLs the task (Nomad's kill_timeout default).
	defaultKillTimeout = 5 * time.Second

	// defaultKillSignal is sent by Kill when TaskConfig.KillSignal is empty.
	// Nomad's raw_exec sends SIGINT too.
	defaultKillSignal = syscall.SIGINT

	// outputDrainTimeout bounds how long output is drained after the task's
	// process group was killed. Only a process that left the group (setsid)
	// can hold a pipe open past that; its output is then cut off rather
	// than letting the task never finish.
	outputDrainTimeout = 2 * time.Second

	// defaultTaskPath is the PATH a task gets when neither its env nor the
	// agent's has one.
	defaultTaskPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// rawExecCounters counts the driver's unusual branches.
var rawExecCounters struct {
	killEscalations atomic.Uint64 // tasks SIGKILLed after their kill timeout
	outputCutOff    atomic.Uint64 // tasks whose output was closed after outputDrainTimeout
	outputWriteErrs atomic.Uint64 // output streams discarded after a write error
	waitFailures    atomic.Uint64 // waitid failed, so the group was not killed on exit
}

// inheritedEnv are the agent's variables a task gets when its own env does
// not set them. Nothing else of the agent's environment leaks into tasks.
var inheritedEnv = []string{"PATH", "HOME", "LANG"}

// TaskConfig describes one raw_exec task.
type TaskConfig struct {
	// Name is the task's name, used in log messages.
	Name string
	// Command is the program to run. A name without a slash is looked up in
	// the PATH of Env (the agent's PATH when Env has none); a relative path
	// with a slash is relative to Dir.
	Command string
	// Args are the arguments after the program name.
	Args []string
	// Env is the task's whole environment; the caller builds the NOMAD_*
	// variables. The agent's environment is not inherited, except PATH, HOME
	// and LANG when Env does not set them.
	Env map[string]string
	// Dir is the working directory, usually the task dir. Empty means the
	// agent's.
	Dir string
	// Stdout receives the task's standard output, usually a
	// *RotatingWriter. Nil discards it. Stdout and Stderr are written from
	// separate goroutines: if they are the same writer it must be safe for
	// concurrent use. A write error does not stop the task; the rest of
	// that stream is discarded.
	Stdout io.Writer
	// Stderr receives the task's standard error, like Stdout.
	Stderr io.Writer
	// KillSignal is the signal Kill sends first, by name with or without
	// the "SIG" prefix ("SIGTERM", "term", "HUP"). Empty means SIGINT.
	KillSignal string
	// KillTimeout is how long Kill waits for the task to exit after
	// KillSignal before it sends SIGKILL. Zero or negative means 5s.
	KillTimeout time.Duration
	// Logger receives the driver's own messages (output write errors). Nil
	// discards them.
	Logger hclog.Logger
}

// ExitResult is how a task ended.
type ExitResult struct {
	// ExitCode is the exit status, or 128+Signal when a signal killed the
	// task (as Nomad reports it).
	ExitCode int
	// Signal is the signal that killed the task, or 0.
	Signal int
	// OOMKilled is whether the kernel's OOM killer ended the task. Without
	// a cgroup per task it cannot be known and is always false.
	OOMKilled bool
	// Err is set when waiting for the task failed.
	Err error
}

// Successful reports whether the task exited with status 0 on its own.
func (r *ExitResult) Successful() bool {
	return r.ExitCode == 0 && r.Signal == 0 && r.Err == nil
}

// TaskHandle is a running raw_exec task. The task runs in its own process
// group, which is signalled as a whole, and ends when its main process ends:
// whatever is left of the group is then killed. Output is copied by
// goroutines owned by the handle; no helper process is involved.
type TaskHandle struct {
	name        string
	cmd         *exec.Cmd
	pid         int // also the process group ID
	killSignal  syscall.Signal
	killTimeout time.Duration
	logger      hclog.Logger
	// startedAt is the boot clock just after the process was started: a
	// process table scanned before then cannot contain the task.
	startedAt time.Duration

	// done is closed once the process was reaped and its output drained;
	// result is set before.
	done   chan struct{}
	result *ExitResult

	// grp signals the task's process group only while its main process
	// is not reaped.
	grp procGroup

	killOnce sync.Once

	// stats is the per-handle state of Stats.
	stats taskStatsState
}

// StartRawExec starts a raw_exec task. It returns once the process runs.
func StartRawExec(cfg *TaskConfig) (*TaskHandle, error) {
	if cfg == nil {
		return nil, errors.New("failed to start task: nil config")
	}
	if cfg.Command == "" {
		return nil, errors.New("failed to start task: empty command")
	}
	sig := defaultKillSignal
	if cfg.KillSignal != "" {
		s, err := parseSignal(cfg.KillSignal)
		if err != nil {
			return nil, fmt.Errorf("failed to start task: %w", err)
		}
		sig = s
	}
	killTimeout := cfg.KillTimeout
	if killTimeout <= 0 {
		killTimeout = defaultKillTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}

	env := taskEnv(cfg.Env)
	path, err := lookTaskPath(cfg.Command, envValue(env, "PATH"), cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("failed to start task: %w", err)
	}

	cmd := &exec.Cmd{
		Path:        path,
		Args:        append([]string{cfg.Command}, cfg.Args...),
		Env:         env,
		Dir:         cfg.Dir,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}

	// The pipes are made here, not with cmd.StdoutPipe, so that reaping the
	// process and draining its output are separate steps: the copiers own
	// the read ends and finish at EOF, which may come after the reap.
	var readers []*os.File
	var writers []*os.File
	closeAll := func() {
		for _, f := range readers {
			f.Close()
		}
		for _, f := range writers {
			f.Close()
		}
	}
	type stream struct {
		name string
		dst  io.Writer
		r    *os.File
	}
	var streams []stream
	for _, s := range []struct {
		name string
		dst  io.Writer
		set  func(*os.File)
	}{
		{"stdout", cfg.Stdout, func(f *os.File) { cmd.Stdout = f }},
		{"stderr", cfg.Stderr, func(f *os.File) { cmd.Stderr = f }},
	} {
		if s.dst == nil {
			continue // nil Stdout/Stderr: exec connects /dev/null
		}
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("failed to start task: %w", err)
		}
		readers, writers = append(readers, r), append(writers, w)
		s.set(w)
		streams = append(streams, stream{s.name, s.dst, r})
	}

	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, fmt.Errorf("failed to start task: %w", err)
	}
	// The child has its copies of the write ends; ours must go or the
	// readers never see EOF.
	for _, w := range writers {
		w.Close()
	}

	h := &TaskHandle{
		name:        cfg.Name,
		cmd:         cmd,
		pid:         cmd.Process.Pid,
		grp:         procGroup{pid: cmd.Process.Pid},
		killSignal:  sig,
		killTimeout: killTimeout,
		logger:      logger.With("task", cfg.Name, "pid", cmd.Process.Pid),
		startedAt:   bootClock(),
		done:        make(chan struct{}),
	}

	var copiers sync.WaitGroup
	for _, s := range streams {
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			h.copyOutput(s.name, s.dst, s.r)
		}()
	}
	go h.run(&copiers, readers)
	return h, nil
}

// Pid returns the PID of the task's main process, which is also its process
// group ID.
func (h *TaskHandle) Pid() int { return h.pid }

// Done returns a channel closed when the task exited and its output was
// drained.
func (h *TaskHandle) Done() <-chan struct{} { return h.done }

// Result returns how the task ended, or nil while it runs.
func (h *TaskHandle) Result() *ExitResult {
	select {
	case <-h.done:
		return h.result
	default:
		return nil
	}
}

// Wait blocks until the task exited and its output was drained, and returns
// how it ended. If ctx ends first it returns ctx.Err() and the task keeps
// running.
func (h *TaskHandle) Wait(ctx context.Context) (*ExitResult, error) {
	select {
	case <-h.done:
		return h.result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Kill stops the task: it sends the kill signal to the task's process group,
// waits up to the kill timeout for the task to exit, then SIGKILLs the
// group. It returns once the task exited, or with ctx.Err() when ctx ends
// first (the escalation to SIGKILL still happens). Calling it again, or on
// an exited task, is safe.
func (h *TaskHandle) Kill(ctx context.Context) error {
	h.killOnce.Do(func() {
		if err := h.signalGroup(h.killSignal); err != nil {
			h.logger.Warn("failed to send kill signal", "signal", h.killSignal, "error", err)
		}
		go h.escalate()
	})
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// escalate SIGKILLs the group if the task has not exited within the kill
// timeout. It returns when the task is done or the SIGKILL was sent, so its
// lifetime is bounded by the kill timeout.
func (h *TaskHandle) escalate() {
	t := time.NewTimer(h.killTimeout)
	defer t.Stop()
	select {
	case <-h.done:
	case <-t.C:
		rawExecCounters.killEscalations.Add(1)
		h.logger.Debug("task did not exit within kill timeout; sending SIGKILL", "kill_timeout", h.killTimeout)
		if err := h.signalGroup(syscall.SIGKILL); err != nil {
			h.logger.Warn("failed to SIGKILL task", "error", err)
		}
	}
}

// signalGroup sends sig to the task's process group unless the main process
// was already reaped. A group that is already gone is not an error.
func (h *TaskHandle) signalGroup(sig syscall.Signal) error { return h.grp.signal(sig) }

// Signal sends sig to the task's process group (alloc signal).
func (h *TaskHandle) Signal(sig syscall.Signal) error {
	select {
	case <-h.done:
		return ErrTaskNotRunning
	default:
	}
	return h.signalGroup(sig)
}

// execSpec is what an exec into the task runs with: the task's
// environment and working directory.
func (h *TaskHandle) execSpec() (env []string, dir string) { return h.cmd.Env, h.cmd.Dir }

// procGroup is a process group led by a child of the agent. Signals are
// sent with mu held and only while the leader is not reaped: until then
// its PID, which is the group ID, cannot be reused, so a signal cannot
// hit a stranger.
type procGroup struct {
	pid int
	// session: the leader leads a session (exec on a terminal), whose
	// members may be in other groups (an interactive shell's jobs); they
	// are signalled too.
	session bool

	mu     sync.Mutex
	reaped bool
}

// signal sends sig to the group unless its leader was reaped. A group
// that is already gone is not an error.
func (g *procGroup) signal(sig syscall.Signal) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reaped {
		return nil
	}
	return g.signalLocked(sig)
}

// signalLocked signals the group (and the session); mu is held and the
// leader not reaped, so its ID names no stranger.
func (g *procGroup) signalLocked(sig syscall.Signal) error {
	if g.session {
		signalSession(g.pid, sig)
	}
	if err := syscall.Kill(-g.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to signal process group %d: %w", g.pid, err)
	}
	return nil
}

// signalSession sends sig to every process of session sid, found in
// /proc (field 6 of stat, after the command's parenthesised name).
func signalSession(sid int, sig syscall.Signal) {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	want := strconv.Itoa(sid)
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:])) // state ppid pgrp session ...
		if len(f) < 4 || f[3] != want {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != sid {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// reap waits for the leader (cmd's process) to exit, SIGKILLs what is left
// of its group (the group ends with its leader: left-over members, such as
// `cmd &` in a shell, would also hold output pipes open forever) and
// reaps the leader. It returns cmd.Wait's error.
func (g *procGroup) reap(cmd *exec.Cmd, logger hclog.Logger) error {
	// Wait for the exit without reaping, so the group ID stays reserved
	// while the rest of the group is killed.
	waitErr := waitExitNoReap(g.pid)
	if waitErr != nil {
		rawExecCounters.waitFailures.Add(1)
		logger.Warn("waitid failed; reaping directly", "error", waitErr)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if waitErr == nil {
		if err := g.signalLocked(syscall.SIGKILL); err != nil {
			logger.Warn("failed to kill rest of process group", "error", err)
		}
	}
	err := cmd.Wait()
	g.reaped = true
	return err
}

// drainOutput waits for copiers to finish reading readers, at most
// outputDrainTimeout (only a process that left the group can hold a pipe
// open that long: its output is then cut off), and closes readers.
func drainOutput(copiers *sync.WaitGroup, readers []io.Closer, logger hclog.Logger) {
	drained := make(chan struct{})
	go func() {
		copiers.Wait()
		close(drained)
	}()
	t := time.NewTimer(outputDrainTimeout)
	select {
	case <-drained:
	case <-t.C:
		// Closing the read ends makes the copiers' reads fail, so they
		// return.
		rawExecCounters.outputCutOff.Add(1)
		logger.Warn("output still open after exit; closing it", "timeout", outputDrainTimeout)
		for _, r := range readers {
			r.Close()
		}
		<-drained
	}
	t.Stop()
	for _, r := range readers {
		r.Close()
	}
}

// run owns the task's lifetime: it waits for the main process to exit, kills
// the rest of its group, reaps it, waits for the copiers to drain the pipes
// and publishes the result.
func (h *TaskHandle) run(copiers *sync.WaitGroup, readers []*os.File) {
	err := h.grp.reap(h.cmd, h.logger)
	res := exitResult(h.cmd.ProcessState, err)
	closers := make([]io.Closer, len(readers))
	for i, r := range readers {
		closers[i] = r
	}
	drainOutput(copiers, closers, h.logger)
	h.result = res
	close(h.done)
}

// copyOutput copies one output stream until EOF (or until run closes the
// pipe). After a write error the rest of the stream is read and discarded
// so the task never blocks on a full pipe.
func (h *TaskHandle) copyOutput(name string, dst io.Writer, r *os.File) {
	buf := make([]byte, 32*1024)
	var werr error
	for {
		n, err := r.Read(buf)
		if n > 0 && werr == nil {
			if _, werr = dst.Write(buf[:n]); werr != nil {
				rawExecCounters.outputWriteErrs.Add(1)
				h.logger.Error("failed to write task output; discarding the rest", "stream", name, "error", werr)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				h.logger.Warn("failed to read task output", "stream", name, "error", err)
			}
			return
		}
	}
}

// waitExitNoReap blocks until process pid has exited, leaving it a zombie.
func waitExitNoReap(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return err
	}
}

// exitResult converts the outcome of exec.Cmd.Wait.
func exitResult(ps *os.ProcessState, waitErr error) *ExitResult {
	if ps == nil {
		if waitErr == nil {
			waitErr = errors.New("no process state")
		}
		return &ExitResult{ExitCode: -1, Err: fmt.Errorf("failed to wait for task: %w", waitErr)}
	}
	res := &ExitResult{ExitCode: ps.ExitCode()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.Signal = int(ws.Signal())
		res.ExitCode = 128 + res.Signal
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		res.Err = fmt.Errorf("failed to wait for task: %w", waitErr)
	}
	return res
}

// taskEnv builds a task's environment from env plus the inherited defaults,
// sorted by name so the child's environment is deterministic.
func taskEnv(env map[string]string) []string {
	out := make([]string, 0, len(env)+len(inheritedEnv))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	for _, k := range inheritedEnv {
		if _, ok := env[k]; ok {
			continue
		}
		v, ok := os.LookupEnv(k)
		if !ok && k == "PATH" {
			v, ok = defaultTaskPath, true
		}
		if ok {
			out = append(out, k+"="+v)
		}
	}
	sort.Strings(out)
	return out
}

// envValue returns the value of key in a KEY=value list.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookTaskPath resolves command like exec.LookPath but in the task's PATH.
// Relative PATH entries are skipped: they would resolve against the task's
// working directory, which exec.LookPath refuses too (exec.ErrDot). A
// command with a slash is used as is (relative to dir).
func lookTaskPath(command, path, dir string) (string, error) {
	if strings.Contains(command, "/") {
		p := command
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", &exec.Error{Name: command, Err: err}
		}
		return command, nil
	}
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, command)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: command, Err: exec.ErrNotFound}
}

// checkExecutable reports whether p is an executable regular file.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return syscall.EISDIR
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return err
	}
	return nil
}

// signalsByName are the signals a kill_signal may name, without "SIG".
var signalsByName = map[string]syscall.Signal{
	"ABRT":   syscall.SIGABRT,
	"ALRM":   syscall.SIGALRM,
	"BUS":    syscall.SIGBUS,
	"CHLD":   syscall.SIGCHLD,
	"CONT":   syscall.SIGCONT,
	"FPE":    syscall.SIGFPE,
	"HUP":    syscall.SIGHUP,
	"ILL":    syscall.SIGILL,
	"INT":    syscall.SIGINT,
	"IO":     syscall.SIGIO,
	"IOT":    syscall.SIGIOT,
	"KILL":   syscall.SIGKILL,
	"PIPE":   syscall.SIGPIPE,
	"PROF":   syscall.SIGPROF,
	"PWR":    syscall.SIGPWR,
	"QUIT":   syscall.SIGQUIT,
	"SEGV":   syscall.SIGSEGV,
	"STOP":   syscall.SIGSTOP,
	"SYS":    syscall.SIGSYS,
	"TERM":   syscall.SIGTERM,
	"TRAP":   syscall.SIGTRAP,
	"TSTP":   syscall.SIGTSTP,
	"TTIN":   syscall.SIGTTIN,
	"TTOU":   syscall.SIGTTOU,
	"URG":    syscall.SIGURG,
	"USR1":   syscall.SIGUSR1,
	"USR2":   syscall.SIGUSR2,
	"VTALRM": syscall.SIGVTALRM,
	"WINCH":  syscall.SIGWINCH,
	"XCPU":   syscall.SIGXCPU,
	"XFSZ":   syscall.SIGXFSZ,
}

// parseSignal parses a signal name such as "SIGTERM", "TERM" or "sigterm".
func parseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "SIG")
	if sig, ok := signalsByName[n]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", name)
}
