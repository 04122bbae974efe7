package client

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"tether/structs"
)

// Names of the task drivers a node can run.
const (
	// DriverRawExec runs a task as a process group of the agent's user.
	DriverRawExec = "raw_exec"
	// DriverMock runs no process: it plays a task out of its config
	// (output, run time, exit code), like Nomad's mock_driver.
	DriverMock = "mock_driver"
)

// driverTask is a started task as the task runner sees it, whichever driver
// runs it. *TaskHandle (raw_exec) and *MockHandle implement it.
type driverTask interface {
	// Done is closed once the task ended and its output was written.
	Done() <-chan struct{}
	// Result is how the task ended, nil while it runs.
	Result() *ExitResult
	// Kill stops the task the driver's way and returns once it ended, or
	// with ctx.Err() when ctx ends first. It is safe to call twice.
	Kill(ctx context.Context) error
	// Pid is the task's main process, 0 when there is none. Non-zero pids
	// are persisted so a restarted agent can kill what is left.
	Pid() int
	// Stats is the task's resource usage now, ErrTaskNotRunning once done.
	Stats() (*structs.TaskResourceUsage, error)
	// Signal sends sig to the task (its process group), ErrTaskNotRunning
	// once done.
	Signal(sig syscall.Signal) error
}

// execDriverTask is a driverTask one can exec into (raw_exec): a command
// runs with the task's environment and working directory. A driver whose
// tasks are not one answers exec with errExecNotSupported.
type execDriverTask interface {
	execSpec() (env []string, dir string)
}

// driverStartFunc starts the task of tr. It opens the task's logs with
// tr.openLogs when its config is good enough to get that far; the task
// runner closes them when the start fails or the task ends. It blocks at
// most until ctx ends.
type driverStartFunc func(ctx context.Context, tr *taskRunner) (driverTask, error)

// taskDrivers are the drivers the task runner can start tasks with, by
// name. Which of them a node offers (and so gets tasks for) is
// Config.Drivers; the scheduler places tasks only there.
var taskDrivers = map[string]driverStartFunc{
	DriverRawExec: startRawExecTask,
	DriverMock:    startMockTask,
}

// lookupDriver returns the start function of driver name. An empty name is
// raw_exec: allocations persisted before tasks named their driver ran it.
func lookupDriver(name string) (driverStartFunc, error) {
	if name == "" {
		name = DriverRawExec
	}
	if f, ok := taskDrivers[name]; ok {
		return f, nil
	}
	return nil, &StartError{Err: fmt.Errorf("driver %q is not supported", name)}
}

// StartError is a failed task start that says whether retrying can help.
// A start error of another type is recoverable: the restart policy decides.
type StartError struct {
	// Err is the cause, shown in the task's Driver Failure event.
	Err error
	// Recoverable lets the restart policy restart the task; false makes
	// the task fail at once, as Nomad does for an unrecoverable error.
	Recoverable bool
}

// Error returns the cause's message.
func (e *StartError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *StartError) Unwrap() error { return e.Err }

// isRecoverable reports whether the task may be restarted after err.
func isRecoverable(err error) bool {
	var se *StartError
	if errors.As(err, &se) {
		return se.Recoverable
	}
	return true
}
