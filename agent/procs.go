package agent

import (
	"context"
	"os"
	"runtime"
	"sync"
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
// uses well under what the Ps could run, and goes straight back to the
// default as soon as the process keeps its Ps busy.
//
// Where it stops being right: it changes the whole process, so it is
// opt-in (gomaxprocs_governor in the agent file) and only for the process's
// owner. It never goes below minProcs: one P serialises the GC's
// background work, the network poller and every handler behind whichever
// goroutine runs, which on a big server costs more latency than the
// spinning saves. While it holds GOMAXPROCS below the default the runtime
// no longer follows the container's CPU limit by itself, so the governor
// re-reads the default every ceilingRefresh and whenever it ramps up, and
// hands tracking back to the runtime (runtime.SetDefaultGOMAXPROCS) when
// it stops.

const (
	// governInterval is how often the governor samples the process's CPU
	// time.
	governInterval = 200 * time.Millisecond

	// minProcs is the floor: the governor never sets fewer Ps, and does
	// nothing on a machine whose default is at most this.
	minProcs = 2

	// busyShare is the share of its Ps' capacity the process must use in
	// one sample for GOMAXPROCS to go back to the runtime's default.
	//
	// Ramping up is one step, on the first busy sample, because the two
	// mistakes are not alike: too few Ps queue every call in flight behind
	// the ones running (latency for all of them, and throughput capped
	// until the next step), too many only cost some spinning until the
	// slow halving below takes them away again. One step is also one
	// stop-the-world instead of log2(default/minProcs), and it re-reads
	// the default, so a changed CPU limit is picked up at once.
	busyShare = 0.85

	// idleShare is the share of its Ps' capacity under which the process
	// stays, on average over idleSamples samples, for GOMAXPROCS to
	// halve. busyShare at half the Ps is above idleShare at the current
	// ones, so a halving never triggers the ramp-up by itself.
	idleShare   = 0.4
	idleSamples = 10

	// ceilingRefresh is how often, while GOMAXPROCS is below the default,
	// the governor re-reads the default (a container's CPU limit may have
	// changed) and keeps under it.
	ceilingRefresh = 30 * time.Second
)

// ProcGovernor adapts the process's GOMAXPROCS to its CPU use, between
// minProcs and the runtime's default. It is for the process's owner (the
// tether command, when the configuration turns it on), not for agents run
// in process beside other code. The zero value is not usable; use
// NewProcGovernor.
type ProcGovernor struct {
	logger hclog.Logger

	interval time.Duration
	refresh  time.Duration // ceilingRefresh
	max      int           // the runtime's default, as last read: the ceiling
	cur      int

	idle []float64 // cores used, the last samples at cur

	// cpuTime returns the process's CPU time so far; setProcs sets
	// GOMAXPROCS; setDefault gives GOMAXPROCS back to the runtime's
	// default (and its tracking of CPU limits) and returns it. Tests
	// replace them.
	cpuTime    func() (time.Duration, error)
	setProcs   func(int)
	setDefault func() int
}

// NewProcGovernor returns a governor for this process, or nil when the
// GOMAXPROCS environment variable is set (the operator chose) or the
// runtime's default is already at most minProcs (there is nothing to
// take away).
func NewProcGovernor(logger hclog.Logger) *ProcGovernor {
	if os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
	n := runtime.GOMAXPROCS(0)
	if n <= minProcs {
		return nil
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &ProcGovernor{
		logger:     logger,
		interval:   governInterval,
		refresh:    ceilingRefresh,
		max:        n,
		cur:        n,
		cpuTime:    processCPUTime,
		setProcs:   func(n int) { runtime.GOMAXPROCS(n) },
		setDefault: runtimeDefaultProcs,
	}
}

// runtimeDefaultProcs restores the runtime's default GOMAXPROCS and
// returns it.
func runtimeDefaultProcs() int {
	runtime.SetDefaultGOMAXPROCS()
	return runtime.GOMAXPROCS(0)
}

// Run samples the process's CPU time every 200 ms and sets GOMAXPROCS
// until ctx ends; it then gives GOMAXPROCS back to the runtime's default,
// whatever happened, so the runtime tracks CPU limits again. Setting
// GOMAXPROCS stops the world for a moment, so it changes at most once a
// sample, and only on a sustained drop of load.
func (g *ProcGovernor) Run(ctx context.Context) {
	defer func() {
		n := g.setDefault()
		g.logger.Debug("GOMAXPROCS back to the runtime's default", "procs", n)
	}()
	last, err := g.cpuTime()
	if err != nil {
		g.logger.Warn("cannot read the process's CPU time; GOMAXPROCS stays at its default", "error", err)
		return
	}
	lastAt := time.Now()
	refreshAt := lastAt.Add(g.refresh)
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
			g.step(used)
			if !now.Before(refreshAt) {
				refreshAt = now.Add(g.refresh)
				if g.cur < g.max {
					g.refreshCeiling()
				}
			}
		}
	}
}

// step applies one sample of used cores.
func (g *ProcGovernor) step(used float64) {
	n, changed := g.observe(used)
	if !changed {
		return
	}
	if n == g.max {
		// Ramp up: the runtime's default, read again now.
		g.max = g.setDefault()
		g.cur = g.max
	} else {
		g.setProcs(n)
	}
	g.logger.Debug("GOMAXPROCS changed", "procs", g.cur, "cores_used", used)
}

// refreshCeiling re-reads the runtime's default while GOMAXPROCS is below
// it, and keeps GOMAXPROCS at most that.
func (g *ProcGovernor) refreshCeiling() {
	g.max = g.setDefault()
	if g.cur >= g.max || g.max <= minProcs {
		g.cur = g.max // left at the default
		g.idle = g.idle[:0]
		return
	}
	g.setProcs(g.cur)
}

// observe takes the cores the process used over the last sample and
// returns the Ps for the next, and whether that is a change. It never
// returns fewer than minProcs (unless the ceiling is lower) nor more than
// the ceiling.
func (g *ProcGovernor) observe(used float64) (procs int, changed bool) {
	if len(g.idle) == idleSamples {
		copy(g.idle, g.idle[1:])
		g.idle = g.idle[:idleSamples-1]
	}
	g.idle = append(g.idle, used)
	floor := min(minProcs, g.max)
	next := g.cur
	switch {
	case used >= busyShare*float64(g.cur) && g.cur < g.max:
		next = g.max
	case len(g.idle) == idleSamples && g.cur > floor && mean(g.idle) <= idleShare*float64(g.cur):
		next = max(floor, g.cur/2)
	}
	if next == g.cur {
		return g.cur, false
	}
	g.cur = next
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

// ProcGovernorSwitch runs the process's governor while the configuration
// has it on: the tether command calls Set at start and after every reload,
// and Stop on exit. Turning it off waits for the governor to hand
// GOMAXPROCS back to the runtime's default. The zero value is not usable;
// use NewProcGovernorSwitch.
type ProcGovernorSwitch struct {
	logger hclog.Logger

	// newGovernor makes the governor Set(true) starts (NewProcGovernor);
	// nil means there is nothing to govern. Tests replace it.
	newGovernor func(hclog.Logger) *ProcGovernor

	mu     sync.Mutex
	cancel context.CancelFunc // nil while off
	done   chan struct{}      // closed when the running governor has stopped
}

// NewProcGovernorSwitch returns a switch, off.
func NewProcGovernorSwitch(logger hclog.Logger) *ProcGovernorSwitch {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &ProcGovernorSwitch{logger: logger, newGovernor: NewProcGovernor}
}

// Set turns the governor on or off. Turning on a switch that is on, or
// off one that is off, does nothing. It reports whether a governor runs.
func (s *ProcGovernorSwitch) Set(on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on == (s.cancel != nil) {
		return on
	}
	if !on {
		s.cancel()
		<-s.done
		s.cancel, s.done = nil, nil
		s.logger.Info("GOMAXPROCS governor stopped")
		return false
	}
	g := s.newGovernor(s.logger)
	if g == nil {
		s.logger.Info("GOMAXPROCS governor not started: the GOMAXPROCS environment variable is set or there are too few CPUs",
			"procs", runtime.GOMAXPROCS(0), "floor", minProcs)
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	s.cancel, s.done = cancel, done
	s.logger.Info("GOMAXPROCS governor started", "procs", g.max, "floor", minProcs)
	return true
}

// Stop turns the governor off, if it runs.
func (s *ProcGovernorSwitch) Stop() { s.Set(false) }
