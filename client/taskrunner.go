package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tether/structs"
)

// Defaults of a task's log rotation and restart policy, as Nomad's.
const (
	defaultLogMaxFiles    = 10
	defaultLogMaxFileSize = 10 // MB
)

// taskRunner runs one task of an allocation through its driver,
// restarting it as the group's restart policy allows.
type taskRunner struct {
	ar   *allocRunner
	task *structs.Task

	mu       sync.Mutex
	state    *structs.TaskState
	handle   driverTask
	stats    *structs.TaskResourceUsage
	killing  bool
	stdout   *RotatingWriter
	stderr   *RotatingWriter
	restarts []time.Time // restart times inside the policy interval

	// starts counts the times the task entered running (metrics:
	// nomad.client.allocs.running).
	starts atomic.Uint64

	// restartCh takes a user's restart (lifecycle.go) while the task
	// runs; run answers on the request's channel once the task started
	// again.
	restartCh chan chan error
}

func newTaskRunner(ar *allocRunner, task *structs.Task, state *structs.TaskState) *taskRunner {
	if state == nil {
		state = &structs.TaskState{State: structs.TaskStatePending, Events: []*structs.TaskEvent{}}
	}
	return &taskRunner{ar: ar, task: task, state: state, restartCh: make(chan chan error)}
}

// snapshot returns a copy of the task state.
func (tr *taskRunner) snapshot() *structs.TaskState {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	c := *tr.state
	c.Events = append([]*structs.TaskEvent(nil), tr.state.Events...)
	return &c
}

// event appends an event (keeping the last 10, as Nomad) and optionally
// moves the state.
func (tr *taskRunner) event(ev *structs.TaskEvent, update func(s *structs.TaskState)) {
	tr.mu.Lock()
	tr.state.Events = append(tr.state.Events, ev)
	if len(tr.state.Events) > 10 {
		tr.state.Events = tr.state.Events[len(tr.state.Events)-10:]
	}
	if update != nil {
		update(tr.state)
	}
	tr.mu.Unlock()
	tr.ar.changed()
}

// run starts the task and waits for it, restarting per policy, until the
// task is done for good or ctx (the alloc's stop) is cancelled.
func (tr *taskRunner) run(ctx context.Context) {
	tr.event(structs.NewTaskEvent(structs.TaskReceived, "Task received by client"), nil)
	policy := tr.ar.restartPolicy()
	// restarted is a user's restart in progress: it is answered once the
	// task started again, or did not.
	var restarted chan error
	answer := func(err error) {
		if restarted != nil {
			restarted <- err
			restarted = nil
		}
	}
	defer answer(structs.BadRequest("Task not running"))
	for {
		if ctx.Err() != nil {
			if tr.ar.c.ctx.Err() == nil {
				tr.markDead(false)
			}
			return
		}
		tr.event(structs.NewTaskEvent(structs.TaskSetup, "Building Task Directory"), nil)
		h, err := tr.start(ctx)
		if err != nil && ctx.Err() != nil {
			continue // stopped while starting (start_block_for): not a failure
		}
		if err != nil {
			answer(err)
			ev := structs.NewTaskEvent(structs.TaskDriverFailure, err.Error())
			ev.DriverError = err.Error()
			ev.FailsTask = true
			tr.event(ev, nil)
			if !isRecoverable(err) {
				nr := structs.NewTaskEvent(structs.TaskNotRestarting, "Error was unrecoverable")
				nr.FailsTask = true
				tr.event(nr, nil)
				tr.markDead(true)
				return
			}
			if !tr.shouldRestart(ctx, policy, false) {
				tr.markDead(true)
				return
			}
			continue
		}
		now := time.Now()
		ev := structs.NewTaskEvent(structs.TaskStarted, "Task started by client")
		tr.event(ev, func(s *structs.TaskState) {
			s.State = structs.TaskStateRunning
			if s.StartedAt.IsZero() {
				s.StartedAt = now
			}
			s.FinishedAt = time.Time{}
		})
		tr.starts.Add(1)
		tr.ar.persist()
		answer(nil)

		var res *ExitResult
		select {
		case <-h.Done():
			res = h.Result()
		case restarted = <-tr.restartCh:
			// A user's restart: the task's normal stop, then a start that
			// the restart policy does not count (as Nomad).
			tr.event(structs.NewTaskEvent(structs.TaskRestartSignal, "User requested task to restart"), nil)
			tr.killWith(false)
			tr.closeLogs()
			tr.terminated(h.Result())
			now := time.Now()
			ev := structs.NewTaskEvent(structs.TaskRestarting, "Task restarting in 0s")
			ev.RestartReason = "User requested restart"
			tr.event(ev, func(s *structs.TaskState) {
				s.State = structs.TaskStatePending
				s.Restarts++
				s.LastRestart = now
			})
			continue
		case <-ctx.Done():
			tr.kill()
			tr.closeLogs()
			if tr.ar.c.ctx.Err() != nil {
				// The agent is shutting down, not the allocation: keep the
				// state so a restarted agent runs the task again.
				return
			}
			tr.markDead(false)
			return
		}
		tr.closeLogs()
		tr.terminated(res)
		tr.mu.Lock()
		killing := tr.killing
		tr.mu.Unlock()
		if killing || ctx.Err() != nil {
			tr.markDead(false)
			return
		}
		success := res.Successful()
		if success && tr.ar.jobType() == structs.JobTypeBatch {
			tr.markDead(false)
			return
		}
		if !tr.shouldRestart(ctx, policy, success) {
			tr.markDead(!success)
			return
		}
	}
}

// terminated records how the task's process ended (nil: unknown).
func (tr *taskRunner) terminated(res *ExitResult) {
	if res == nil {
		res = &ExitResult{ExitCode: -1, Err: errors.New("task did not end")}
	}
	msg := fmt.Sprintf("Exit Code: %d", res.ExitCode)
	if res.Signal != 0 {
		msg += fmt.Sprintf(", Signal: %d", res.Signal)
	}
	if res.Err != nil {
		msg += fmt.Sprintf(", Exit Message: %q", res.Err.Error())
	}
	tev := structs.NewTaskEvent(structs.TaskTerminated, msg)
	tev.ExitCode, tev.Signal = res.ExitCode, res.Signal
	tev.Details["exit_code"] = strconv.Itoa(res.ExitCode)
	if res.Signal != 0 {
		tev.Details["signal"] = strconv.Itoa(res.Signal)
	}
	if res.Err != nil {
		tev.Details["exit_message"] = res.Err.Error()
	}
	tr.event(tev, nil)
}

// shouldRestart applies the restart policy: up to Attempts restarts within
// Interval, each after Delay; mode "delay" waits out the interval instead
// of failing.
func (tr *taskRunner) shouldRestart(ctx context.Context, p *structs.RestartPolicy, success bool) bool {
	now := time.Now()
	tr.mu.Lock()
	kept := tr.restarts[:0]
	for _, t := range tr.restarts {
		if p.Interval <= 0 || now.Sub(t) < p.Interval {
			kept = append(kept, t)
		}
	}
	tr.restarts = kept
	exhausted := len(tr.restarts) >= p.Attempts
	tr.mu.Unlock()
	delay := p.Delay
	if exhausted {
		if p.Mode != "delay" || p.Interval <= 0 {
			ev := structs.NewTaskEvent(structs.TaskNotRestarting, "Exceeded allowed attempts, applying a delay - Interval: "+p.Interval.String())
			if !success {
				ev.Message = fmt.Sprintf("Error was unrecoverable or exceeded %d restart attempts", p.Attempts)
				ev.DisplayMessage = ev.Message
			}
			ev.FailsTask = !success
			tr.event(ev, nil)
			return false
		}
		tr.mu.Lock()
		oldest := tr.restarts[0]
		tr.mu.Unlock()
		delay = p.Interval - now.Sub(oldest)
	}
	reason := "Restart within policy"
	ev := structs.NewTaskEvent(structs.TaskRestarting, fmt.Sprintf("Task restarting in %v", delay))
	ev.RestartReason = reason
	tr.event(ev, func(s *structs.TaskState) {
		s.State = structs.TaskStatePending
		s.Restarts++
		s.LastRestart = now
	})
	tr.mu.Lock()
	tr.restarts = append(tr.restarts, now)
	tr.mu.Unlock()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// markDead moves the task to dead.
func (tr *taskRunner) markDead(failed bool) {
	now := time.Now()
	tr.mu.Lock()
	if tr.state.State == structs.TaskStateDead {
		tr.mu.Unlock()
		return
	}
	tr.state.State = structs.TaskStateDead
	tr.state.Failed = tr.state.Failed || failed
	tr.state.FinishedAt = now
	tr.handle = nil
	tr.mu.Unlock()
	tr.ar.changed()
	tr.ar.taskDone(tr, failed)
}

// start starts the task with its driver; the driver opens the logs.
func (tr *taskRunner) start(ctx context.Context) (driverTask, error) {
	start, err := lookupDriver(tr.task.Driver)
	if err != nil {
		return nil, err
	}
	h, err := start(ctx, tr)
	if err != nil {
		tr.closeLogs()
		return nil, err
	}
	tr.mu.Lock()
	tr.handle = h
	tr.mu.Unlock()
	return h, nil
}

// openLogs opens the task's rotating stdout and stderr logs
// (alloc/logs/<task>.stdout.N) as its log config says, and returns them as
// writers; both are nil when logging is disabled.
func (tr *taskRunner) openLogs() (stdout, stderr io.Writer, err error) {
	t := tr.task
	lc := t.LogConfig
	if lc == nil {
		lc = &structs.LogConfig{}
	}
	if lc.Disabled {
		return nil, nil, nil
	}
	files, size := lc.MaxFiles, lc.MaxFileSizeMB
	if files <= 0 {
		files = defaultLogMaxFiles
	}
	if size <= 0 {
		size = defaultLogMaxFileSize
	}
	dir := tr.ar.dir.LogDir()
	o, err := NewRotatingWriter(dir, t.Name+".stdout", files, int64(size)<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("opening stdout log: %w", err)
	}
	e, err := NewRotatingWriter(dir, t.Name+".stderr", files, int64(size)<<20)
	if err != nil {
		o.Close()
		return nil, nil, fmt.Errorf("opening stderr log: %w", err)
	}
	o.rotations, e.rotations = &tr.ar.c.counters.logRotations, &tr.ar.c.counters.logRotations
	tr.mu.Lock()
	tr.stdout, tr.stderr = o, e
	tr.mu.Unlock()
	return o, e, nil
}

// startRawExecTask is raw_exec's driverStartFunc: the task's command and
// args, its env, its task dir as working directory, and its logs.
func startRawExecTask(_ context.Context, tr *taskRunner) (driverTask, error) {
	t := tr.task
	command, _ := t.Config["command"].(string)
	if command == "" {
		return nil, fmt.Errorf("missing command for raw_exec task %q", t.Name)
	}
	var args []string
	if raw, ok := t.Config["args"].([]any); ok {
		for _, a := range raw {
			args = append(args, fmt.Sprint(a))
		}
	}
	stdout, stderr, err := tr.openLogs()
	if err != nil {
		return nil, err
	}
	cfg := &TaskConfig{
		Name:        t.Name,
		Command:     command,
		Args:        args,
		Env:         tr.env(),
		Dir:         tr.ar.dir.TaskDir(t.Name),
		KillSignal:  t.KillSignal,
		KillTimeout: tr.killTimeout(),
		Stdout:      stdout,
		Stderr:      stderr,
	}
	h, err := StartRawExec(cfg)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (tr *taskRunner) closeLogs() {
	tr.mu.Lock()
	o, e := tr.stdout, tr.stderr
	tr.stdout, tr.stderr = nil, nil
	tr.mu.Unlock()
	if o != nil {
		o.Close()
	}
	if e != nil {
		e.Close()
	}
}

// kill stops the running process with its kill signal and timeout, for
// good.
func (tr *taskRunner) kill() { tr.killWith(true) }

// killWith stops the running process with its kill signal and timeout;
// final marks the task as killed, so that it is not restarted.
func (tr *taskRunner) killWith(final bool) {
	tr.mu.Lock()
	h := tr.handle
	if final {
		tr.killing = true
	}
	tr.mu.Unlock()
	if h == nil {
		return
	}
	ev := structs.NewTaskEvent(structs.TaskKilling, "Sent interrupt. Waiting "+tr.killTimeout().String()+" before force killing")
	ev.KillTimeout = tr.killTimeout()
	tr.event(ev, nil)
	ctx, cancel := context.WithTimeout(context.Background(), tr.killTimeout()+10*time.Second)
	defer cancel()
	if err := h.Kill(ctx); err != nil {
		ev := structs.NewTaskEvent(structs.TaskKilled, "Task failed to be killed")
		ev.KillError = err.Error()
		tr.event(ev, nil)
		return
	}
	tr.event(structs.NewTaskEvent(structs.TaskKilled, "Task successfully killed"), nil)
}

func (tr *taskRunner) killTimeout() time.Duration {
	if tr.task.KillTimeout > 0 {
		return tr.task.KillTimeout
	}
	return defaultKillTimeout
}

// pid returns the running process's pid, or 0.
func (tr *taskRunner) pid() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.handle == nil {
		return 0
	}
	return tr.handle.Pid()
}

// sampleStats refreshes the task's resource usage if it runs.
func (tr *taskRunner) sampleStats() {
	tr.mu.Lock()
	h := tr.handle
	tr.mu.Unlock()
	if h == nil {
		return
	}
	u, err := h.Stats()
	if err != nil {
		return
	}
	tr.mu.Lock()
	tr.stats = u
	tr.mu.Unlock()
}

func (tr *taskRunner) lastStats() *structs.TaskResourceUsage {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.stats
}

// env builds the task's environment: Nomad's NOMAD_* variables, the
// task's Env, and PATH from the agent.
func (tr *taskRunner) env() map[string]string {
	a := tr.ar.alloc()
	t := tr.task
	ad := tr.ar.dir
	taskDir := ad.TaskDir(t.Name)
	env := map[string]string{
		"NOMAD_ALLOC_DIR":      ad.SharedDir(),
		"NOMAD_TASK_DIR":       filepath.Join(taskDir, "local"),
		"NOMAD_SECRETS_DIR":    filepath.Join(taskDir, "secrets"),
		"NOMAD_ALLOC_ID":       a.ID,
		"NOMAD_ALLOC_NAME":     a.Name,
		"NOMAD_ALLOC_INDEX":    strconv.Itoa(a.Index()),
		"NOMAD_GROUP_NAME":     a.TaskGroup,
		"NOMAD_JOB_ID":         a.JobID,
		"NOMAD_TASK_NAME":      t.Name,
		"NOMAD_NAMESPACE":      a.Namespace,
		"NOMAD_REGION":         tr.ar.c.cfg.Region,
		"NOMAD_DC":             tr.ar.c.cfg.Datacenter,
		"NOMAD_SHORT_ALLOC_ID": a.ID[:8],
	}
	if a.Job != nil {
		env["NOMAD_JOB_NAME"] = a.Job.Name
	}
	if t.Resources != nil {
		env["NOMAD_CPU_LIMIT"] = strconv.Itoa(t.Resources.CPU)
		env["NOMAD_MEMORY_LIMIT"] = strconv.Itoa(t.Resources.MemoryMB)
	}
	for k, v := range t.Meta {
		env["NOMAD_META_"+strings.ReplaceAll(k, ".", "_")] = v
	}
	if p := os.Getenv("PATH"); p != "" {
		env["PATH"] = p
	}
	for k, v := range t.Env {
		env[k] = v
	}
	return env
}
