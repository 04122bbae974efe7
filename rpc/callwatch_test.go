package rpc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	mu   sync.Mutex
	set  []time.Time
	hits chan struct{}
}

func newDeadlineConn() *deadlineConn { return &deadlineConn{hits: make(chan struct{}, 8)} }

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.set = append(c.set, t)
	c.mu.Unlock()
	c.hits <- struct{}{}
	return nil
}

func (c *deadlineConn) deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.set...)
}

func TestCallWatch_Aborts(t *testing.T) {
	tests := []struct {
		name   string
		dl     time.Duration // from now
		cancel time.Duration // cancel the context after this; 0: never
	}{
		{"deadline of a short call", 20 * time.Millisecond, 0},
		{"deadline of a long call", defaultLongCallAfter + 3*defaultCallWatchTick, 0},
		{"context of a short call", time.Minute, 15 * time.Millisecond},
		{"context of a long call", time.Minute, defaultLongCallAfter + 3*defaultCallWatchTick},
		{"context ended before the call", time.Minute, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cw callWatch
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel < 0 {
				cancel()
			} else if tt.cancel > 0 {
				time.AfterFunc(tt.cancel, cancel)
			}
			c := newDeadlineConn()
			start := time.Now()
			w := cw.add(ctx, start.Add(tt.dl), c)
			select {
			case <-c.hits:
			case <-time.After(10 * time.Second):
				t.Fatal("call never aborted")
			}
			if !cw.remove(w) {
				t.Fatal("remove does not report the abort")
			}
			if d := c.deadlines(); len(d) != 1 || !d[0].Equal(pastTime) {
				t.Fatalf("deadlines set %v, want one in the past", d)
			}
			if tt.cancel == 0 && time.Since(start) < tt.dl {
				t.Fatalf("aborted after %v, before its deadline %v", time.Since(start), tt.dl)
			}
		})
	}
}

// TestCallWatch_RemovedCallsAreLeftAlone checks that a call over in time
// is never aborted afterwards, on either path (a tick, a late timer or
// context callback), and that the polling goroutine ends with the last
// call.
func TestCallWatch_RemovedCallsAreLeftAlone(t *testing.T) {
	var cw callWatch
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	short := newDeadlineConn()
	long := newDeadlineConn()
	ws := cw.add(ctx, time.Now().Add(time.Minute), short)
	wl := cw.add(ctx, time.Now().Add(time.Minute), long)
	if cw.remove(ws) {
		t.Fatal("short call reported aborted")
	}
	// Wait until the long call has its own timer, then remove it.
	waitFor(t, 10*time.Second, "long call promoted", func() bool {
		cw.mu.Lock()
		defer cw.mu.Unlock()
		return wl.longCall
	})
	if cw.remove(wl) {
		t.Fatal("long call reported aborted")
	}
	waitFor(t, 10*time.Second, "polling goroutine gone", func() bool {
		cw.mu.Lock()
		defer cw.mu.Unlock()
		return !cw.running
	})
	// What fires late finds nothing to abort: a tick past both deadlines,
	// the timer or the context callback of the long call.
	cw.check(time.Now().Add(time.Hour))
	cw.abort(wl)
	cw.abort(ws)
	cancel()
	if d := append(short.deadlines(), long.deadlines()...); len(d) != 0 {
		t.Fatalf("deadlines set after remove: %v", d)
	}
}

// TestCallWatch_Concurrent runs many calls at once under -race: each
// either ends in time and is left alone, or is aborted exactly once.
func TestCallWatch_Concurrent(t *testing.T) {
	var cw callWatch
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := newDeadlineConn()
			c.hits = make(chan struct{}, 2)
			w := cw.add(context.Background(), time.Now().Add(time.Duration(i%4)*defaultCallWatchTick), c)
			if i%2 == 0 {
				<-c.hits
			}
			aborted := cw.remove(w)
			if n := len(c.deadlines()); (n == 1) != aborted || n > 1 {
				t.Errorf("call %d: %d deadlines set, aborted %v", i, n, aborted)
			}
		}(i)
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "polling goroutine gone", func() bool {
		cw.mu.Lock()
		defer cw.mu.Unlock()
		return !cw.running && len(cw.calls) == 0 && cw.polled == 0
	})
}

// watchEnded returns a channel closed once cw's polling goroutine, if
// any, has returned.
func watchEnded(cw *callWatch) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		cw.wg.Wait()
		close(ch)
	}()
	return ch
}

// TestCallWatch_EndsWithItsSession checks the watch's ownership: each
// session has its own, whose goroutine runs while a call is in flight and
// ends when the session closes even with calls still watched, and a
// closed session starts none.
func TestCallWatch_EndsWithItsSession(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		if p.node.watch == p.server.watch {
			t.Fatal("the two sessions share a watch")
		}
		cw := p.node.watch
		c := newDeadlineConn()
		w := cw.add(context.Background(), time.Now().Add(time.Hour), c)
		cw.mu.Lock()
		running := cw.running
		cw.mu.Unlock()
		if !running {
			t.Fatal("no watch goroutine with a call in flight")
		}
		select {
		case <-watchEnded(cw):
			t.Fatal("the watch goroutine ended with a call in flight")
		default:
		}
		p.node.Close()
		recvWithin(t, watchEnded(cw), 10*time.Second, "the watch goroutine to end with its session")
		w2 := cw.add(context.Background(), time.Now().Add(time.Hour), c)
		cw.mu.Lock()
		running = cw.running
		cw.mu.Unlock()
		if running {
			t.Fatal("a closed session started a watch goroutine")
		}
		if cw.remove(w) || cw.remove(w2) {
			t.Fatal("calls aborted by the end of their session's watch")
		}
		if d := c.deadlines(); len(d) != 0 {
			t.Fatalf("deadlines set: %v", d)
		}
	})
}
