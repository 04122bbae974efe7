package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
	"golang.org/x/term"
)

// allocExecCommands are the commands that act on an allocation's tasks:
// exec, restart and signal (issue #20), with Nomad's flags.
func allocExecCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"alloc exec": &command{m: m, synopsis: "Run a command in a running allocation's task",
			help: `
Usage: tether alloc exec [options] <allocation> <command> [args...]

  Runs a command in the environment and working directory of a running
  task of the allocation, through any server. The exit code is the
  command's.

Options:
  -task <name>  The task (needed when the allocation has more than one).
  -i            Pass stdin to the command (default true).
  -t            Run the command on a terminal (default: when stdin is a
                terminal).
`,
			flags: complete.Flags{"-task": complete.PredictAnything, "-i": complete.PredictNothing, "-t": complete.PredictNothing},
			args:  predictIDs(m, "allocs"),
			run:   runAllocExec,
		},
		"alloc restart": &command{m: m, synopsis: "Restart a running allocation's tasks",
			help: `
Usage: tether alloc restart [options] <allocation> [task]

  Restarts a task of the allocation (its normal stop, then a start that
  the restart policy does not count), or every running task.

Options:
  -task <name>  The task to restart (or give it as the second argument).
  -all-tasks    Restart every task.
`,
			flags: complete.Flags{"-task": complete.PredictAnything, "-all-tasks": complete.PredictNothing},
			args:  predictIDs(m, "allocs"),
			run:   runAllocRestart,
		},
		"alloc signal": &command{m: m, synopsis: "Send a signal to a running allocation's tasks",
			help: `
Usage: tether alloc signal [options] <allocation> [task]

  Sends a signal to a task's process group, or to every running task.

Options:
  -s <signal>   The signal (default SIGKILL, as Nomad's).
  -task <name>  The task (or give it as the second argument).
`,
			flags: complete.Flags{"-s": complete.PredictAnything, "-task": complete.PredictAnything},
			args:  predictIDs(m, "allocs"),
			run:   runAllocSignal,
		},
	}
}

// execTask picks the task of an exec: the one named, else the
// allocation's only task.
func execTask(a *nomad.Allocation, task string) (string, error) {
	if task != "" {
		return task, nil
	}
	if a.Job != nil {
		for _, tg := range a.Job.TaskGroups {
			if tg.Name != nil && *tg.Name == a.TaskGroup && len(tg.Tasks) == 1 {
				return tg.Tasks[0].Name, nil
			}
		}
	}
	if len(a.TaskStates) == 1 {
		for name := range a.TaskStates {
			return name, nil
		}
	}
	return "", fmt.Errorf("Please specify the task: the allocation has more than one (-task)")
}

func runAllocExec(m *meta, args []string) int {
	var task string
	stdinOn := true
	tty := isTerminal(m.stdin)
	c, rest, code := m.start("alloc exec", args, argsRule{2, 1 << 20, "This command takes an allocation and a command"}, func(fs *flagSetT) {
		fs.StringVar(&task, "task", "", "")
		fs.BoolVar(&stdinOn, "i", true, "")
		fs.BoolVar(&tty, "t", tty, "")
	})
	if c == nil {
		return code
	}
	a, ok := m.resolveAlloc(c, rest[0])
	if !ok {
		return 1
	}
	task, err := execTask(a, task)
	if err != nil {
		m.ui.Error(err.Error())
		return 1
	}
	var stdin io.Reader = strings.NewReader("")
	if stdinOn {
		stdin = m.stdin
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sizes <-chan nomad.TerminalSize
	if tty {
		restore, ch, err := rawTerminal(ctx, m.stdin)
		if err != nil {
			m.ui.Error(err.Error())
			return 1
		}
		defer restore()
		sizes = ch
	}
	exit, err := c.Allocations().Exec(ctx, a, task, tty, rest[1:], stdin, m.stdout, m.stderr, sizes, nil)
	if err != nil {
		m.apiError("exec'ing into task", err)
		return 1
	}
	return exit
}

// rawTerminal puts stdin's terminal (if it is one) in raw mode and
// reports its size now and on every SIGWINCH until ctx ends; restore
// gives the terminal back.
func rawTerminal(ctx context.Context, stdin io.Reader) (restore func(), sizes <-chan nomad.TerminalSize, err error) {
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}, nil, nil // -t without a terminal: the remote side still gets one
	}
	fd := int(f.Fd())
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("making the terminal raw: %w", err)
	}
	ch := make(chan nomad.TerminalSize, 1)
	send := func() {
		if w, h, err := term.GetSize(fd); err == nil {
			select {
			case ch <- nomad.TerminalSize{Height: h, Width: w}:
			default: // a size not yet sent is replaced by the next
			}
		}
	}
	send()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-winch:
				send()
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(stop)
		<-done
		term.Restore(fd, old)
	}, ch, nil
}

// lifecycleTarget resolves the allocation and the task of restart and
// signal: -task or the second argument.
func (m *meta) lifecycleTarget(c *nomad.Client, rest []string, task string) (*nomad.Allocation, string, bool) {
	a, ok := m.resolveAlloc(c, rest[0])
	if !ok {
		return nil, "", false
	}
	if len(rest) == 2 {
		if task != "" && task != rest[1] {
			m.ui.Error("Task given twice: -task and the second argument differ")
			return nil, "", false
		}
		task = rest[1]
	}
	return a, task, true
}

func runAllocRestart(m *meta, args []string) int {
	var task string
	var all bool
	c, rest, code := m.start("alloc restart", args, argsRule{1, 2, "This command takes an allocation and optionally a task"}, func(fs *flagSetT) {
		fs.StringVar(&task, "task", "", "")
		fs.BoolVar(&all, "all-tasks", false, "")
	})
	if c == nil {
		return code
	}
	a, task, ok := m.lifecycleTarget(c, rest, task)
	if !ok {
		return 1
	}
	if all && task != "" {
		m.ui.Error("The -all-tasks option is not allowed when a task is given")
		return 1
	}
	var err error
	if all {
		err = c.Allocations().RestartAllTasks(a, nil)
	} else {
		err = c.Allocations().Restart(a, task, nil)
	}
	if err != nil {
		m.apiError("restarting allocation", err)
		return 1
	}
	return 0
}

func runAllocSignal(m *meta, args []string) int {
	var task, sig string
	c, rest, code := m.start("alloc signal", args, argsRule{1, 2, "This command takes an allocation and optionally a task"}, func(fs *flagSetT) {
		fs.StringVar(&task, "task", "", "")
		fs.StringVar(&sig, "s", "SIGKILL", "")
	})
	if c == nil {
		return code
	}
	a, task, ok := m.lifecycleTarget(c, rest, task)
	if !ok {
		return 1
	}
	if err := c.Allocations().Signal(a, nil, task, sig); err != nil {
		m.apiError("signalling allocation", err)
		return 1
	}
	return 0
}
