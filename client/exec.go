package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// Exec into a task (GET /v1/client/allocation/:alloc_id/exec, issue #20).
//
// The command runs as a child of the agent, with the task's environment
// and working directory, in a process group of its own (with a TTY, a
// session whose controlling terminal is a pseudo-terminal). Its stdin is
// written from the caller's messages as they come, its output read in
// chunks of at most MaxExecOutputChunk and sent as JSON in raw messages:
// a caller that does not read blocks the stream, then the readers, then
// the command (nothing is buffered beyond a chunk per stream and the
// transport's windows). The session ends when the command exits (after
// its output was sent, with an "exited" message), and the command's
// group is killed when the caller goes away, the task stops or the agent
// shuts down: every goroutine and the process are gone when the handler
// returns.

// Exit codes of a command that could not be started, as a shell reports
// them.
const (
	execExitNotFound      = 127
	execExitNotExecutable = 126
)

// errExecNotSupported is Nomad's answer for a driver without exec.
var errExecNotSupported = structs.BadRequest("task driver does not support exec")

// execStats counts the node's exec sessions and their unusual ends (in a
// fleet, of every node of the process).
var execStats struct {
	started   atomic.Uint64 // commands started
	notFound  atomic.Uint64 // commands that could not be started (exit 126/127)
	cancelled atomic.Uint64 // sessions ended by the caller, the task or the agent before the command exited
	running   atomic.Int64  // commands running now
}

// allocExec serves Allocations.Exec: the first message is the request.
func (c *Client) allocExec(ctx context.Context, st *rpc.Stream) error {
	var req structs.AllocExecRequest
	if err := st.Recv(&req); err != nil {
		return err
	}
	task, spec, err := c.execTarget(ctx, &req)
	if err != nil {
		return err
	}
	logger := c.logger.Named("exec").With("alloc_id", req.AllocID, "task", req.Task)
	env, dir := spec.execSpec()
	s, err := startExec(req.Cmd, req.Tty, env, dir)
	if err != nil {
		var ne *execNotFound
		if !errors.As(err, &ne) {
			return err
		}
		execStats.notFound.Add(1)
		return sendExecNotFound(st, ne)
	}
	if err := st.SendRaw(execAck); err != nil {
		s.abort(logger)
		return err
	}
	execStats.started.Add(1)
	execStats.running.Add(1)
	defer execStats.running.Add(-1)
	logger.Debug("exec started", "pid", s.grp.pid, "tty", req.Tty)
	err = s.serve(ctx, st, task.Done(), logger)
	if err != nil {
		execStats.cancelled.Add(1)
	}
	return err
}

// execTarget checks an exec request in Nomad's order (token, allocation,
// capability, then the task) and returns the running task.
func (c *Client) execTarget(ctx context.Context, req *structs.AllocExecRequest) (driverTask, execDriverTask, error) {
	aclObj, err := c.ResolveToken(ctx, req.AuthToken)
	if err != nil {
		return nil, nil, err
	}
	ar, err := c.runnerFor(req.AllocID)
	if err != nil {
		return nil, nil, err
	}
	if ar.isDestroyed() {
		return nil, nil, structs.NotFound("allocation %s was garbage collected on this node", req.AllocID)
	}
	if req.Task == "" {
		return nil, nil, structs.BadRequest("must provide task name")
	}
	tr := ar.tasks[req.Task]
	driver := ""
	if tr != nil {
		driver = tr.task.Driver
	}
	if !aclObj.AllowExec(ar.alloc().Namespace, driver) {
		return nil, nil, structs.ErrPermissionDenied
	}
	if err := structs.ValidateExecCommand(req.Cmd); err != nil {
		return nil, nil, err
	}
	if tr == nil {
		return nil, nil, structs.BadRequest("unknown task name %q", req.Task)
	}
	h, err := tr.runningHandle()
	if err != nil {
		return nil, nil, err
	}
	spec, ok := h.(execDriverTask)
	if !ok {
		return nil, nil, errExecNotSupported
	}
	return h, spec, nil
}

// execNotFound is a command that could not be started because it does
// not exist or is not executable: the caller gets a message on stderr and
// the exit code a shell would give, as from any command that failed.
type execNotFound struct {
	code int
	err  error
}

func (e *execNotFound) Error() string { return e.err.Error() }

// sendExecNotFound answers a command that could not be started.
func sendExecNotFound(st *rpc.Stream, ne *execNotFound) error {
	if err := st.SendRaw(execAck); err != nil {
		return err
	}
	msg := []byte(ne.err.Error() + "\n")
	if err := st.SendRaw(structs.AppendExecDataJSON(nil, "stderr", msg)); err != nil {
		return err
	}
	return st.SendRaw(structs.AppendExecExitJSON(nil, ne.code))
}

// execAck is the node's first message: the command runs.
var execAck = []byte("{}")

// execSession is one running command.
type execSession struct {
	cmd   *exec.Cmd
	grp   procGroup
	tty   bool
	stdin *os.File // the pipe's write end, or the pty's master
	outs  []*os.File
}

// startExec starts cmd with env in dir: on a pseudo-terminal when tty,
// else on pipes.
func startExec(command []string, tty bool, env []string, dir string) (*execSession, error) {
	path, err := lookTaskPath(command[0], envValue(env, "PATH"), dir)
	if err != nil {
		code := execExitNotExecutable
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = execExitNotFound
		}
		return nil, &execNotFound{code: code, err: err}
	}
	cmd := &exec.Cmd{Path: path, Args: command, Env: env, Dir: dir}
	s := &execSession{cmd: cmd, tty: tty}
	if tty {
		// A session of its own, with the pty as controlling terminal:
		// the shell's job control works, and the session is a process
		// group (its ID the leader's PID) to kill as a whole.
		var ptmx *os.File
		if ptmx, err = pty.StartWithAttrs(cmd, nil, &syscall.SysProcAttr{Setsid: true, Setctty: true}); err == nil {
			s.stdin, s.outs = ptmx, []*os.File{ptmx}
		}
	} else {
		err = s.startPipes()
	}
	if err != nil {
		if errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.EACCES) {
			return nil, &execNotFound{code: execExitNotExecutable, err: fmt.Errorf("exec: %q: %w", command[0], errors.Unwrap(err))}
		}
		return nil, fmt.Errorf("failed to start command: %w", err)
	}
	s.grp.pid, s.grp.session = cmd.Process.Pid, tty
	return s, nil
}

// abort kills and reaps a command whose session could not start.
func (s *execSession) abort(logger hclog.Logger) {
	if err := s.grp.signal(syscall.SIGKILL); err != nil {
		logger.Warn("failed to kill exec'd command", "error", err)
	}
	s.grp.reap(s.cmd, logger)
	s.stdin.Close()
	for _, f := range s.outs {
		f.Close()
	}
}

// startPipes starts the command on three pipes, in a process group of
// its own.
func (s *execSession) startPipes() error {
	var files []*os.File // every end, closed on failure
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	fail := func(err error) error {
		for _, f := range files {
			f.Close()
		}
		return err
	}
	inR, inW, err := pipe()
	if err != nil {
		return fail(err)
	}
	outR, outW, err := pipe()
	if err != nil {
		return fail(err)
	}
	errR, errW, err := pipe()
	if err != nil {
		return fail(err)
	}
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = inR, outW, errW
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		fail(nil)
		return err
	}
	// The child has its copies; ours must go, or the readers never see
	// EOF.
	inR.Close()
	outW.Close()
	errW.Close()
	s.stdin, s.outs = inW, []*os.File{outR, errR}
	return nil
}

// serve runs the session until the command exits and its output was
// sent (then it sends the exit and returns nil), or until ctx ends, the
// task ends (taskDone), or the caller goes away (the group is killed and
// the cause returned). Every goroutine it starts has ended when it
// returns, and the command has been reaped.
func (s *execSession) serve(ctx context.Context, st *rpc.Stream, taskDone <-chan struct{}, logger hclog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var wg sync.WaitGroup
	// kill ends the session early: the group dies, and closing our ends
	// of stdin unblocks a write the command does not read.
	var killOnce sync.Once
	kill := func(cause error) {
		killOnce.Do(func() {
			cancel(cause)
			if err := s.grp.signal(syscall.SIGKILL); err != nil {
				logger.Warn("failed to kill exec'd command", "error", err)
			}
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			kill(context.Cause(ctx))
		case <-taskDone:
			kill(structs.NewError(http.StatusConflict, "task is not running any more"))
		}
	}()

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.readInput(st); err != nil {
			kill(err)
		}
	}()

	var readers sync.WaitGroup
	names := []string{"stdout", "stderr"}
	for i, f := range s.outs {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := sendOutput(st, names[i], f, s.tty); err != nil {
				kill(err)
			}
		}()
	}

	waitErr := s.grp.reap(s.cmd, logger)
	closers := make([]io.Closer, len(s.outs))
	for i, f := range s.outs {
		closers[i] = f
	}
	drainOutput(&readers, closers, logger)
	var err error
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	} else {
		err = st.SendRaw(structs.AppendExecExitJSON(nil, exitResult(s.cmd.ProcessState, waitErr).ExitCode))
	}
	// Stop the watcher and the input reader: a Recv ends at its deadline,
	// a write to stdin once our end is closed.
	cancel(nil)
	st.SetDeadline(time.Now())
	s.stdin.Close()
	wg.Wait()
	return err
}

// readInput writes the caller's stdin to the command and applies
// resizes, until the caller closes its end of the stream (nil) or a
// message cannot be applied.
func (s *execSession) readInput(st *rpc.Stream) error {
	for {
		var in structs.ExecStreamingInput
		if err := st.Recv(&in); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := in.Validate(); err != nil {
			return err
		}
		switch {
		case in.TTYSize != nil:
			if !s.tty {
				continue // Nomad ignores a resize without a terminal
			}
			if err := pty.Setsize(s.stdin, &pty.Winsize{Rows: uint16(in.TTYSize.Height), Cols: uint16(in.TTYSize.Width)}); err != nil {
				return nil // the terminal is gone: the command ended
			}
		case in.Stdin != nil && len(in.Stdin.Data) > 0:
			if _, err := s.stdin.Write(in.Stdin.Data); err != nil {
				return nil // the command closed its stdin or ended
			}
		case in.Stdin != nil && in.Stdin.Close:
			if s.tty {
				// A terminal's end of input is its EOF character.
				if _, err := s.stdin.Write([]byte{4}); err != nil {
					return nil
				}
				continue
			}
			s.stdin.Close()
		}
	}
}

// sendOutput sends what f yields as ExecStreamingOutput data on stream,
// one chunk per message, until f ends.
func sendOutput(st *rpc.Stream, stream string, f *os.File, tty bool) error {
	buf := make([]byte, structs.MaxExecOutputChunk)
	out := make([]byte, rpc.RawHeaderSize, rpc.RawHeaderSize+structs.MaxExecOutputChunk*4/3+64)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			out = structs.AppendExecDataJSON(out[:rpc.RawHeaderSize], stream, buf[:n])
			if serr := st.SendRawFrame(out); serr != nil {
				return serr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || tty && errors.Is(err, syscall.EIO) {
				return nil // EIO: a pty whose last holder of the terminal exited
			}
			return fmt.Errorf("reading %s: %w", stream, err)
		}
	}
}
