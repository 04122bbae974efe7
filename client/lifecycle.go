package client

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"tether/rpc"
	"tether/structs"
)

// Restart and signal of an allocation's tasks (PUT
// /v1/client/allocation/:alloc_id/restart and /signal, issue #20), and
// the exec stream (exec.go).

// registerLifecycleEndpoints adds the methods that act on tasks.
func (c *Client) registerLifecycleEndpoints() {
	c.mux.HandleStream(structs.MethodClientExec, c.allocExec)
	rpc.HandleUnary(c.mux, structs.MethodClientAllocRestart, c.allocRestart)
	rpc.HandleUnary(c.mux, structs.MethodClientAllocSignal, c.allocSignal)
}

// errTaskNotRunning is Nomad's answer for a lifecycle call on a task that
// does not run.
var errTaskNotRunning = structs.BadRequest("Task not running")

// runningHandle returns the task's driver handle while it runs; a task
// that never started, or ended, is a 404 naming it, as Nomad answers exec.
func (tr *taskRunner) runningHandle() (driverTask, error) {
	st := tr.snapshot()
	if st.StartedAt.IsZero() {
		return nil, structs.NotFound("task %q not started yet.", tr.task.Name)
	}
	tr.mu.Lock()
	h := tr.handle
	tr.mu.Unlock()
	if h == nil || st.State != structs.TaskStateRunning {
		return nil, structs.NotFound("task %q is not running.", tr.task.Name)
	}
	select {
	case <-h.Done():
		return nil, structs.NotFound("task %q is not running.", tr.task.Name)
	default:
	}
	return h, nil
}

// restart stops the running task the normal way (kill signal, kill
// timeout) and starts it again, not counted by the restart policy. It
// returns once the task started again, or could not be.
func (tr *taskRunner) restart(ctx context.Context) error {
	h, err := tr.runningHandle()
	if err != nil {
		return errTaskNotRunning
	}
	done := make(chan error, 1)
	select {
	case tr.restartCh <- done:
	case <-h.Done():
		return errTaskNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// signal sends sig (named sigName) to the running task and records it.
func (tr *taskRunner) signal(sigName string) error {
	sig, err := parseSignal(sigName)
	if err != nil {
		return structs.BadRequest("invalid signal %q", sigName)
	}
	h, err := tr.runningHandle()
	if err != nil {
		return errTaskNotRunning
	}
	ev := structs.NewTaskEvent(structs.TaskSignaling, "Task being sent signal "+sigName)
	ev.Details["signal"] = sigName
	tr.event(ev, nil)
	if err := h.Signal(sig); err != nil {
		if errors.Is(err, ErrTaskNotRunning) {
			return errTaskNotRunning
		}
		return fmt.Errorf("failed to signal task %q: %w", tr.task.Name, err)
	}
	return nil
}

// lifecycleTasks returns the runners a lifecycle call acts on: the named
// one (it must exist), else every running one (at least one must). The
// allocation must not be terminal.
func (c *Client) lifecycleTasks(allocID, task string) (*allocRunner, []*taskRunner, error) {
	ar, err := c.runnerFor(allocID)
	if err != nil {
		return nil, nil, err
	}
	ar.mu.Lock()
	stopping := ar.stopping
	ar.mu.Unlock()
	if stopping || ar.terminal() || ar.isDestroyed() {
		return nil, nil, structs.BadRequest("Alloc %s is terminal", allocID)
	}
	if task != "" {
		tr := ar.tasks[task]
		if tr == nil {
			return nil, nil, structs.BadRequest("unknown task name %q", task)
		}
		return ar, []*taskRunner{tr}, nil
	}
	var out []*taskRunner
	for _, tr := range ar.tasks {
		if tr.snapshot().State == structs.TaskStateRunning {
			out = append(out, tr)
		}
	}
	if len(out) == 0 {
		return nil, nil, errTaskNotRunning
	}
	sort.Slice(out, func(i, j int) bool { return out[i].task.Name < out[j].task.Name })
	return ar, out, nil
}

// allocRestart serves ClientAllocations.Restart: one task, or every
// running one (AllTasks, or no task named), restarted side by side.
func (c *Client) allocRestart(ctx context.Context, req *structs.AllocRestartRequest, resp *structs.GenericResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodClientAllocRestart, req, req.AllocID); err != nil {
		return err
	}
	task := req.TaskName
	if req.AllTasks {
		if task != "" {
			return structs.BadRequest("Cannot specify both TaskName and AllTasks")
		}
	}
	_, trs, err := c.lifecycleTasks(req.AllocID, task)
	if err != nil {
		return err
	}
	errs := make([]error, len(trs))
	var wg sync.WaitGroup
	for i, tr := range trs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = tr.restart(ctx)
		}()
	}
	wg.Wait()
	return firstError(errs)
}

// allocSignal serves ClientAllocations.Signal: one task, or every running
// one when none is named.
func (c *Client) allocSignal(ctx context.Context, req *structs.AllocSignalRequest, resp *structs.GenericResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodClientAllocSignal, req, req.AllocID); err != nil {
		return err
	}
	if _, err := parseSignal(req.Signal); err != nil {
		return structs.BadRequest("invalid signal %q", req.Signal)
	}
	_, trs, err := c.lifecycleTasks(req.AllocID, req.Task)
	if err != nil {
		return err
	}
	errs := make([]error, len(trs))
	for i, tr := range trs {
		errs[i] = tr.signal(req.Signal)
	}
	return firstError(errs)
}

// firstError returns the first non-nil error of errs.
func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
