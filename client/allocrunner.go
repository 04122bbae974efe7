package client

import (
	"context"
	"sync"
	"time"

	"tether/structs"
)

// allocRunner runs one allocation on this node: its dir, its tasks, and
// the client status it reports.
type allocRunner struct {
	c   *Client
	id  string // the allocation ID; never changes
	dir *AllocDir

	mu        sync.Mutex
	a         *structs.Allocation // latest from the servers
	tasks     map[string]*taskRunner
	started   bool
	stopping  bool
	failed    bool
	destroyed bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newAllocRunner(c *Client, a *structs.Allocation, states map[string]*structs.TaskState) *allocRunner {
	ctx, cancel := context.WithCancel(c.ctx)
	ar := &allocRunner{
		c:      c,
		id:     a.ID,
		dir:    NewAllocDir(c.cfg.AllocDir, a.ID),
		a:      a,
		tasks:  map[string]*taskRunner{},
		ctx:    ctx,
		cancel: cancel,
	}
	if tg := ar.group(); tg != nil {
		for _, t := range tg.Tasks {
			ar.tasks[t.Name] = newTaskRunner(ar, t, states[t.Name])
		}
	}
	return ar
}

func (ar *allocRunner) alloc() *structs.Allocation {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	return ar.a
}

func (ar *allocRunner) group() *structs.TaskGroup {
	if ar.a.Job == nil {
		return nil
	}
	return ar.a.Job.LookupTaskGroup(ar.a.TaskGroup)
}

func (ar *allocRunner) jobType() string {
	a := ar.alloc()
	if a.Job == nil {
		return structs.JobTypeService
	}
	return a.Job.Type
}

func (ar *allocRunner) restartPolicy() *structs.RestartPolicy {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	if tg := ar.group(); tg != nil && tg.RestartPolicy != nil {
		return tg.RestartPolicy
	}
	if ar.a.Job != nil && ar.a.Job.Type == structs.JobTypeBatch {
		return &structs.RestartPolicy{Attempts: 3, Interval: 24 * time.Hour, Delay: 15 * time.Second, Mode: "fail"}
	}
	return &structs.RestartPolicy{Attempts: 2, Interval: 30 * time.Minute, Delay: 15 * time.Second, Mode: "fail"}
}

// run builds the alloc dir and starts every task.
func (ar *allocRunner) run() {
	ar.mu.Lock()
	if ar.started || ar.stopping || ar.destroyed {
		ar.mu.Unlock()
		return
	}
	ar.started = true
	names := make([]string, 0, len(ar.tasks))
	for n := range ar.tasks {
		names = append(names, n)
	}
	ar.mu.Unlock()
	if err := ar.dir.Build(names); err != nil {
		ar.c.logger.Error("building alloc dir", "alloc_id", ar.id, "error", err)
		for _, tr := range ar.tasks {
			ev := structs.NewTaskEvent(structs.TaskSetup, "failed to build task directory")
			ev.SetupError = err.Error()
			ev.FailsTask = true
			tr.event(ev, nil)
			tr.markDead(true)
		}
		return
	}
	for _, tr := range ar.tasks {
		ar.wg.Add(1)
		go func(tr *taskRunner) {
			defer ar.wg.Done()
			tr.run(ar.ctx)
		}(tr)
	}
	ar.changed()
}

// update takes the servers' latest view of the allocation.
func (ar *allocRunner) update(a *structs.Allocation) {
	ar.mu.Lock()
	ar.a = a
	stop := a.DesiredStatus != structs.AllocDesiredStatusRun
	ar.mu.Unlock()
	if stop {
		ar.stop()
	}
}

// stop kills every task (each with its kill signal and timeout); it
// returns at once, the tasks stop in the background.
func (ar *allocRunner) stop() {
	ar.mu.Lock()
	if ar.stopping {
		ar.mu.Unlock()
		return
	}
	ar.stopping = true
	started := ar.started
	ar.mu.Unlock()
	ar.cancel()
	if !started {
		for _, tr := range ar.tasks {
			tr.markDead(false)
		}
	}
}

// wait waits for every task goroutine.
func (ar *allocRunner) wait() { ar.wg.Wait() }

// taskDone is called when a task reaches dead; a failed task kills its
// siblings, as Nomad's.
func (ar *allocRunner) taskDone(tr *taskRunner, failed bool) {
	if failed {
		ar.mu.Lock()
		first := !ar.failed
		ar.failed = true
		ar.mu.Unlock()
		if first {
			for _, other := range ar.tasks {
				if other != tr && other.snapshot().State != structs.TaskStateDead {
					other.event(structs.NewTaskEvent(structs.TaskSiblingFailed, "Task's sibling \""+tr.task.Name+"\" failed"), nil)
				}
			}
			ar.cancel()
		}
	}
	ar.changed()
	ar.persist()
}

// changed tells the updater that a task's state changed. The client
// status is worked out when the report is made, from the task states it
// carries: a status worked out here could be stored after a newer one by
// a slower caller (two tasks starting at once) and sent as the last word.
func (ar *allocRunner) changed() {
	ar.c.allocs.markDirty(ar.id)
}

// clientStatusOf derives the alloc's client status from its tasks.
func clientStatusOf(states map[string]*structs.TaskState) (string, string) {
	if len(states) == 0 {
		return structs.AllocClientStatusPending, "No tasks"
	}
	running, dead, failed := 0, 0, 0
	for _, s := range states {
		switch s.State {
		case structs.TaskStateRunning:
			running++
		case structs.TaskStateDead:
			dead++
			if s.Failed {
				failed++
			}
		}
	}
	switch {
	case dead == len(states) && failed > 0:
		return structs.AllocClientStatusFailed, "Failed tasks"
	case dead == len(states):
		return structs.AllocClientStatusComplete, "All tasks have completed"
	case running > 0:
		return structs.AllocClientStatusRunning, "Tasks are running"
	}
	return structs.AllocClientStatusPending, "No tasks have started"
}

func (ar *allocRunner) taskStates() map[string]*structs.TaskState {
	out := make(map[string]*structs.TaskState, len(ar.tasks))
	for name, tr := range ar.tasks {
		out[name] = tr.snapshot()
	}
	return out
}

// report is the update sent to the servers.
func (ar *allocRunner) report() *structs.Allocation {
	states := ar.taskStates()
	status, desc := clientStatusOf(states)
	return &structs.Allocation{ID: ar.id, ClientStatus: status, ClientDescription: desc, TaskStates: states}
}

// terminal reports whether every task is dead.
func (ar *allocRunner) terminal() bool {
	st, _ := clientStatusOf(ar.taskStates())
	return st == structs.AllocClientStatusComplete || st == structs.AllocClientStatusFailed
}

// persist saves the runner's state so a restarted agent finds it.
func (ar *allocRunner) persist() {
	ar.c.allocs.persist(ar)
}

// stats returns the allocation's last resource usage sample.
func (ar *allocRunner) stats() *structs.AllocResourceUsage {
	out := &structs.AllocResourceUsage{Tasks: map[string]*structs.TaskResourceUsage{}}
	for name, tr := range ar.tasks {
		if u := tr.lastStats(); u != nil {
			out.Tasks[name] = u
			if u.Timestamp > out.Timestamp {
				out.Timestamp = u.Timestamp
			}
		} else {
			out.Tasks[name] = emptyTaskUsage()
		}
	}
	out.ResourceUsage = SumResourceUsage(out.Tasks)
	return out
}

func emptyTaskUsage() *structs.TaskResourceUsage {
	return &structs.TaskResourceUsage{ResourceUsage: &structs.ResourceUsage{
		MemoryStats: &structs.MemoryStats{Measured: []string{}},
		CpuStats:    &structs.CpuStats{Measured: []string{}},
	}}
}

// destroy removes the allocation's directory (GC). The runner stays known
// as destroyed so later file calls answer a clear 404.
func (ar *allocRunner) destroy() error {
	ar.mu.Lock()
	ar.destroyed = true
	ar.mu.Unlock()
	return ar.dir.Destroy()
}

func (ar *allocRunner) isDestroyed() bool {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	return ar.destroyed
}
