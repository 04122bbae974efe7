package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestProcGovernor_Observe(t *testing.T) {
	idle := func(n int, used float64) []float64 {
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
		{"idle halves after the window", 4, 4, idle(idleSamples, 0.1), 2, 1},
		{"idle keeps halving down to one", 4, 4, idle(3*idleSamples, 0.1), 1, 2},
		{"one idle sample short of the window", 4, 4, idle(idleSamples-1, 0.1), 4, 0},
		{"use that needs the Ps keeps them", 2, 2, idle(3*idleSamples, 1.2), 2, 0},
		{"work that fits one P moves to one", 2, 2, idle(idleSamples, 0.75), 1, 1},
		{"and stays there below the busy share", 2, 1, idle(5*idleSamples, 0.8), 1, 0},
		{"busy twice doubles", 8, 1, idle(busySamples, 0.95), 2, 1},
		{"busy once does not", 8, 1, []float64{0.95, 0.5, 0.95, 0.5}, 1, 0},
		{"sustained load climbs to the ceiling", 8, 1, idle(4*busySamples, 8.5), 8, 3},
		{"never above the ceiling", 2, 2, idle(10, 2.0), 2, 0},
		{"load after idle comes back", 2, 2, cat(idle(idleSamples, 0.05), idle(busySamples, 0.9)), 2, 2},
		{"a burst inside an idle window does not stop halving", 4, 4, cat(idle(idleSamples-1, 0.1), []float64{1.0}), 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &ProcGovernor{max: tt.max, cur: tt.cur}
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
				if n < 1 || n > tt.max {
					t.Fatalf("GOMAXPROCS %d outside [1, %d]", n, tt.max)
				}
				got = n
			}
			if got != tt.want || moves != tt.wantMoves {
				t.Fatalf("GOMAXPROCS %d after %d changes, want %d after %d", got, moves, tt.want, tt.wantMoves)
			}
		})
	}
}

// TestProcGovernor_Run drives Run with a fake CPU clock: an idle process
// goes down to one P, a busy one back up, and the default comes back when
// Run ends.
func TestProcGovernor_Run(t *testing.T) {
	var mu sync.Mutex
	var cpu time.Duration
	busy := false
	sets := make(chan int, 8)
	g := &ProcGovernor{
		logger:   hclog.NewNullLogger(),
		interval: time.Millisecond,
		max:      2,
		cur:      2,
		cpuTime: func() (time.Duration, error) {
			mu.Lock()
			defer mu.Unlock()
			if busy {
				cpu += time.Second // far more than any interval: busy
			}
			return cpu, nil
		},
		setProcs: func(n int) { sets <- n },
	}
	setBusy := func(b bool) {
		mu.Lock()
		busy = b
		mu.Unlock()
	}
	next := func(what string, want int) {
		t.Helper()
		select {
		case n := <-sets:
			if n != want {
				t.Fatalf("%s: GOMAXPROCS set to %d, want %d", what, n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	next("one P while idle", 1)
	setBusy(true)
	next("two Ps while busy", 2)
	setBusy(false)
	next("one P again", 1)
	cancel()
	<-done
	next("the default restored at the end", 2)
}

func TestNewProcGovernor_RespectsEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "3")
	if g := NewProcGovernor(nil); g != nil {
		t.Fatal("a governor while GOMAXPROCS is set in the environment")
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
