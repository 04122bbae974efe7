package agent

import (
	"context"
	"os"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// A Tether agent is mostly waiting: each forwarded call is a few tens of
// microseconds of work between a socket read and a socket write. With
// more Ps than that work needs, every goroutine the work readies (the
// HTTP connection, yamux's loops, a call's waiter) wakes another thread
// that spins looking for it, steals it, or sleeps again: on a machine
// shared with the workloads (a node agent always is) that is CPU taken
// from them for nothing. Measured on 2 shared vCPUs with a forwarded
// stats call at concurrency 8: 127 µs of server CPU and 67 µs of node CPU
// per call with GOMAXPROCS=2, 95 µs and 42 µs with 1, at higher
// throughput.
//
// ProcGovernor therefore keeps GOMAXPROCS at what the process's CPU use
// needs: it starts at the runtime's default, halves it while the process
// uses well under what the Ps could run, and doubles it (up to the
// default) as soon as the process keeps its Ps busy.

const (
	// governInterval is how often the governor samples the process's CPU
	// time.
	governInterval = 200 * time.Millisecond

	// busyShare is the share of its Ps' capacity the process must use in
	// busySamples samples in a row for GOMAXPROCS to double.
	busyShare   = 0.85
	busySamples = 2

	// idleShare is the share of its Ps' capacity under which the process
	// stays, on average over idleSamples samples, for GOMAXPROCS to
	// halve. At 2 Ps that is 0.8 of a core: the work then fits one P,
	// and busyShare keeps it from doubling straight back.
	idleShare   = 0.4
	idleSamples = 10
)

// ProcGovernor adapts the process's GOMAXPROCS to its CPU use. It is
// for the process's owner (the tether command), not for agents run
// in process beside other code. The zero value is not usable; use
// NewProcGovernor.
type ProcGovernor struct {
	logger hclog.Logger

	interval time.Duration
	max      int // the runtime's default at start: the ceiling
	cur      int

	busy int       // busy samples in a row
	idle []float64 // cores used, the last samples at cur

	// cpuTime returns the process's CPU time so far; setProcs sets
	// GOMAXPROCS. Tests replace them.
	cpuTime  func() (time.Duration, error)
	setProcs func(int)
}

// NewProcGovernor returns a governor for this process, or nil when the
// GOMAXPROCS environment variable is set (the operator chose) or the
// runtime's default is already 1.
func NewProcGovernor(logger hclog.Logger) *ProcGovernor {
	if os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
	n := runtime.GOMAXPROCS(0)
	if n <= 1 {
		return nil
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &ProcGovernor{
		logger:   logger,
		interval: governInterval,
		max:      n,
		cur:      n,
		cpuTime:  processCPUTime,
		setProcs: func(n int) { runtime.GOMAXPROCS(n) },
	}
}

// Run samples the process's CPU time every 200 ms and sets
// GOMAXPROCS until ctx ends; it then restores the runtime's default.
// Setting GOMAXPROCS stops the world for a moment, so it changes at most
// once a sample, and only on a sustained change of load.
func (g *ProcGovernor) Run(ctx context.Context) {
	defer func() {
		if g.cur != g.max {
			g.setProcs(g.max)
		}
	}()
	last, err := g.cpuTime()
	if err != nil {
		g.logger.Warn("cannot read the process's CPU time; GOMAXPROCS stays at its default", "error", err)
		return
	}
	lastAt := time.Now()
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu, err := g.cpuTime()
			if err != nil {
				continue
			}
			wall := now.Sub(lastAt)
			if wall <= 0 {
				continue
			}
			used := float64(cpu-last) / float64(wall)
			last, lastAt = cpu, now
			if n, changed := g.observe(used); changed {
				g.setProcs(n)
				g.logger.Debug("GOMAXPROCS changed", "procs", n, "cores_used", used)
			}
		}
	}
}

// observe takes the cores the process used over the last sample and
// returns the Ps for the next, and whether that is a change.
func (g *ProcGovernor) observe(used float64) (procs int, changed bool) {
	if used >= busyShare*float64(g.cur) {
		g.busy++
	} else {
		g.busy = 0
	}
	if len(g.idle) == idleSamples {
		copy(g.idle, g.idle[1:])
		g.idle = g.idle[:idleSamples-1]
	}
	g.idle = append(g.idle, used)
	next := g.cur
	switch {
	case g.busy >= busySamples && g.cur < g.max:
		next = min(g.max, 2*g.cur)
	case len(g.idle) == idleSamples && g.cur > 1 && mean(g.idle) <= idleShare*float64(g.cur):
		next = max(1, g.cur/2)
	}
	if next == g.cur {
		return g.cur, false
	}
	g.cur = next
	g.busy = 0
	g.idle = g.idle[:0]
	return next, true
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// processCPUTime returns the user and system CPU time of every thread of
// the process so far.
func processCPUTime() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
