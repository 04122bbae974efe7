package agent

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestProcGovernor_Observe(t *testing.T) {
	same := func(n int, used float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = used
		}
		return xs
	}
	cat := func(xss ...[]float64) []float64 {
		var out []float64
		for _, xs := range xss {
			out = append(out, xs...)
		}
		return out
	}
	tests := []struct {
		name      string
		max, cur  int
		samples   []float64 // cores used, one per interval
		want      int       // GOMAXPROCS after the last sample
		wantMoves int       // how many times it changed
	}{
		{"idle halves after the window", 8, 8, same(idleSamples, 0.1), 4, 1},
		{"idle halves down to the floor and stays", 8, 8, same(5*idleSamples, 0.1), minProcs, 2},
		{"an odd default halves to the floor", 3, 3, same(3*idleSamples, 0), minProcs, 1},
		{"a default at the floor never moves", 2, 2, same(3*idleSamples, 0), 2, 0},
		{"a default under the floor never moves", 1, 1, same(3*idleSamples, 0), 1, 0},
		{"one idle sample short of the window", 8, 8, same(idleSamples-1, 0.1), 8, 0},
		{"use that needs the Ps keeps them", 4, 4, same(3*idleSamples, 2.0), 4, 0},
		{"one busy sample goes straight to the default", 16, 2, []float64{1.8}, 16, 1},
		{"below the busy share stays", 16, 2, same(5*idleSamples, 1.6), 2, 0},
		{"never above the ceiling", 4, 4, same(10, 4.0), 4, 0},
		{"load after idle comes back", 8, 8, cat(same(idleSamples, 0.05), []float64{3.5}), 8, 2},
		{"a burst inside an idle window does not stop halving", 8, 8, cat(same(idleSamples-1, 0.1), []float64{1.0}), 4, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &ProcGovernor{max: tt.max, cur: tt.cur}
			floor := min(minProcs, tt.max)
			moves := 0
			got := tt.cur
			for _, used := range tt.samples {
				n, changed := g.observe(used)
				if changed {
					moves++
					if n == got {
						t.Fatalf("changed to the same value %d", n)
					}
				}
				if n < floor || n > tt.max {
					t.Fatalf("GOMAXPROCS %d outside [%d, %d]", n, floor, tt.max)
				}
				got = n
			}
			if got != tt.want || moves != tt.wantMoves {
				t.Fatalf("GOMAXPROCS %d after %d changes, want %d after %d", got, moves, tt.want, tt.wantMoves)
			}
		})
	}
}

// procsEvent is one change a governor made: set to n, or (toDefault)
// handed back to the runtime's default.
type procsEvent struct {
	n         int
	toDefault bool
}

// fakeRuntime stands in for the runtime in governor tests: a CPU clock
// that advances a second per read while busy, and a default of def Ps.
type fakeRuntime struct {
	mu     sync.Mutex
	cpu    time.Duration
	busy   bool
	def    int
	events chan procsEvent
}

func newFakeRuntime(def int) *fakeRuntime {
	return &fakeRuntime{def: def, events: make(chan procsEvent, 16)}
}

func (f *fakeRuntime) governor(max, cur int) *ProcGovernor {
	return &ProcGovernor{
		logger:   hclog.NewNullLogger(),
		interval: time.Millisecond,
		refresh:  time.Hour,
		max:      max,
		cur:      cur,
		cpuTime: func() (time.Duration, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.busy {
				f.cpu += time.Second // far more than any interval: busy
			}
			return f.cpu, nil
		},
		setProcs: func(n int) { f.events <- procsEvent{n: n} },
		setDefault: func() int {
			f.mu.Lock()
			def := f.def
			f.mu.Unlock()
			f.events <- procsEvent{n: def, toDefault: true}
			return def
		},
	}
}

func (f *fakeRuntime) set(busy bool, def int) {
	f.mu.Lock()
	f.busy, f.def = busy, def
	f.mu.Unlock()
}

// next waits for the governor's next change and checks it.
func (f *fakeRuntime) next(t *testing.T, what string, want procsEvent) {
	t.Helper()
	select {
	case ev := <-f.events:
		if ev != want {
			t.Fatalf("%s: %+v, want %+v", what, ev, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestProcGovernor_Run drives Run with a fake CPU clock: an idle process
// goes down to the floor and no further, a busy one straight back to the
// default (read again: here the CPU limit grew meanwhile), and the
// default is handed back to the runtime when Run ends.
func TestProcGovernor_Run(t *testing.T) {
	f := newFakeRuntime(8)
	g := f.governor(8, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	f.next(t, "halved while idle", procsEvent{n: 4})
	f.next(t, "the floor while idle", procsEvent{n: minProcs})
	f.set(true, 12)
	f.next(t, "the default while busy", procsEvent{n: 12, toDefault: true})
	f.set(false, 12)
	f.next(t, "halved again", procsEvent{n: 6})
	cancel()
	<-done
	f.next(t, "the default handed back at the end", procsEvent{n: 12, toDefault: true})
	select {
	case ev := <-f.events:
		t.Fatalf("a change after Run returned: %+v", ev)
	default:
	}
}

// TestProcGovernor_RefreshCeiling checks that a governor holding
// GOMAXPROCS below the default follows a changed default without going
// above it.
func TestProcGovernor_RefreshCeiling(t *testing.T) {
	tests := []struct {
		name     string
		max, cur int
		newDef   int
		want     []procsEvent
		wantCur  int
	}{
		{"same default: back to where it was", 8, 4, 8, []procsEvent{{8, true}, {4, false}}, 4},
		{"a larger default: back to where it was", 8, 4, 16, []procsEvent{{16, true}, {4, false}}, 4},
		{"the default fell below: left at the default", 8, 4, 3, []procsEvent{{3, true}}, 3},
		{"the default fell to the floor: left there", 8, 4, 2, []procsEvent{{2, true}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRuntime(tt.newDef)
			g := f.governor(tt.max, tt.cur)
			g.refreshCeiling()
			close(f.events)
			var got []procsEvent
			for ev := range f.events {
				got = append(got, ev)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("events %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("events %+v, want %+v", got, tt.want)
				}
			}
			if g.cur != tt.wantCur || g.max != tt.newDef {
				t.Fatalf("cur %d max %d, want %d and %d", g.cur, g.max, tt.wantCur, tt.newDef)
			}
		})
	}
}

// keepProcs restores the test process's GOMAXPROCS when the test ends.
func keepProcs(t *testing.T) (def int) {
	t.Helper()
	prev := runtime.GOMAXPROCS(0)
	runtime.SetDefaultGOMAXPROCS()
	def = runtime.GOMAXPROCS(0)
	if prev != def {
		runtime.GOMAXPROCS(prev) // GOMAXPROCS is set for the test binary
	}
	t.Cleanup(func() {
		if prev == def {
			runtime.SetDefaultGOMAXPROCS()
		} else {
			runtime.GOMAXPROCS(prev)
		}
	})
	return def
}

// TestProcGovernor_RestoresRuntimeDefault runs a governor on the real
// runtime: it sets GOMAXPROCS away from the default (its ceiling is made
// up, so that happens on any machine), and once it stops GOMAXPROCS is
// the runtime's default again.
func TestProcGovernor_RestoresRuntimeDefault(t *testing.T) {
	def := keepProcs(t)
	f := newFakeRuntime(0) // only its CPU clock: idle
	g := f.governor(4*def, 4*def)
	set := make(chan int, 4)
	g.setProcs = func(n int) {
		runtime.GOMAXPROCS(n)
		set <- n
	}
	g.setDefault = runtimeDefaultProcs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	select {
	case n := <-set:
		if n != 2*def || runtime.GOMAXPROCS(0) != n {
			t.Fatalf("set %d, GOMAXPROCS %d; want both %d", n, runtime.GOMAXPROCS(0), 2*def)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the governor never lowered GOMAXPROCS")
	}
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("GOMAXPROCS %d after the governor stopped, want the runtime's default %d", got, def)
	}
}

func TestNewProcGovernor(t *testing.T) {
	tests := []struct {
		name  string
		env   string
		procs int // GOMAXPROCS when it is made
		want  bool
	}{
		{"GOMAXPROCS in the environment", "3", 3, false},
		{"one CPU", "", 1, false},
		{"at the floor", "", minProcs, false},
		{"above the floor", "", minProcs + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keepProcs(t)
			t.Setenv("GOMAXPROCS", tt.env)
			runtime.GOMAXPROCS(tt.procs)
			g := NewProcGovernor(nil)
			if (g != nil) != tt.want {
				t.Fatalf("governor %v, want one: %v", g != nil, tt.want)
			}
			if g != nil && (g.max != tt.procs || g.cur != tt.procs) {
				t.Fatalf("governor between %d and %d, want %d", g.cur, g.max, tt.procs)
			}
		})
	}
}

// TestProcGovernorSwitch turns the governor on and off as a reload would:
// turning it off waits for the default to be handed back.
func TestProcGovernorSwitch(t *testing.T) {
	f := newFakeRuntime(4)
	s := NewProcGovernorSwitch(nil)
	made := 0
	s.newGovernor = func(hclog.Logger) *ProcGovernor {
		made++
		g := f.governor(4, 4)
		g.interval = time.Hour // no samples: only start and stop
		return g
	}
	steps := []struct {
		on, want  bool
		wantMade  int
		toDefault bool // the default was handed back by this step
	}{
		{false, false, 0, false},
		{true, true, 1, false},
		{true, true, 1, false},
		{false, false, 1, true},
		{false, false, 1, false},
		{true, true, 2, false},
	}
	for i, st := range steps {
		if got := s.Set(st.on); got != st.want || made != st.wantMade {
			t.Fatalf("step %d: Set(%v) = %v with %d governors made, want %v and %d", i, st.on, got, made, st.want, st.wantMade)
		}
		select {
		case ev := <-f.events:
			if !st.toDefault || ev != (procsEvent{n: 4, toDefault: true}) {
				t.Fatalf("step %d: unexpected %+v", i, ev)
			}
		default:
			if st.toDefault {
				t.Fatalf("step %d: the default was not handed back", i)
			}
		}
	}
	s.Stop()
	f.next(t, "the default handed back by Stop", procsEvent{n: 4, toDefault: true})

	s.newGovernor = func(hclog.Logger) *ProcGovernor { return nil }
	if s.Set(true) {
		t.Fatal("Set(true) reports a governor when there is none to run")
	}
}

func TestProcessCPUTime(t *testing.T) {
	a, err := processCPUTime()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		b, err := processCPUTime()
		if err != nil {
			t.Fatal(err)
		}
		if b > a {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process CPU time did not grow while spinning (%d)", x)
		}
	}
}
