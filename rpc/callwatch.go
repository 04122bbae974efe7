package rpc

import (
	"context"
	"net"
	"sync"
	"time"
)

// A unary call must end at its deadline, and as soon as its caller's
// context ends (an HTTP client that went away). Bounding each call with
// its own stream deadline and context.AfterFunc costs a timer per blocked
// read, two boxed deadline stores and a context registration: a few
// microseconds out of the tens a forwarded call costs a server. Almost
// every call is over within a millisecond, so calls are watched instead:
// one goroutine looks at the calls in flight every watchTick and aborts
// those whose deadline passed or whose context ended. A call still in
// flight after longCallTicks ticks (a blocking query, a slow handler)
// gets its own timer and context registration, and is no longer polled;
// with nothing left to poll the goroutine ends, so an idle process has no
// ticker.

const (
	// watchTick is how often calls in flight are looked at: the most a
	// call outlives its deadline or its caller's context.
	watchTick = 10 * time.Millisecond

	// longCallTicks is how many ticks a call is polled before it gets
	// its own timer.
	longCallTicks = 5
)

// callWatch watches unary calls in flight. The zero value is ready to
// use; the package has one, watchedCalls.
type callWatch struct {
	mu      sync.Mutex
	calls   map[*watchedCall]struct{}
	polled  int  // calls without their own timer
	running bool // the polling goroutine runs
}

// watchedCall is one call in flight on conn: it is aborted by setting a
// deadline in the past on conn, once, while it is watched.
type watchedCall struct {
	conn    net.Conn
	ctx     context.Context
	dl      time.Time
	ticks   int
	aborted bool

	// Once the call is long: its own timer and context registration.
	timer    *time.Timer
	stopCtx  func() bool
	longCall bool
}

var watchedCalls callWatch

// add watches a call on conn that must end by dl or when ctx ends. The
// caller must call remove when the call is over, whatever its outcome.
func (cw *callWatch) add(ctx context.Context, dl time.Time, conn net.Conn) *watchedCall {
	w := &watchedCall{conn: conn, ctx: ctx, dl: dl}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.calls == nil {
		cw.calls = make(map[*watchedCall]struct{})
	}
	cw.calls[w] = struct{}{}
	cw.polled++
	if !cw.running {
		cw.running = true
		go pollEvery(watchTick, cw.check)
	}
	return w
}

// remove ends the watch of w and reports whether it was aborted: its
// conn then has a deadline in the past and must not be reused. No abort
// happens once remove has returned.
func (cw *callWatch) remove(w *watchedCall) (aborted bool) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	delete(cw.calls, w)
	if w.longCall {
		w.timer.Stop()
		w.stopCtx()
	} else {
		cw.polled--
	}
	return w.aborted
}

// abortLocked aborts w if it is still watched.
func (cw *callWatch) abortLocked(w *watchedCall) {
	if _, ok := cw.calls[w]; !ok || w.aborted {
		return
	}
	w.aborted = true
	w.conn.SetDeadline(pastTime)
}

func (cw *callWatch) abort(w *watchedCall) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.abortLocked(w)
}

// pollEvery calls check every period until it reports that nothing is
// left to look at. A watch starts it with its first entry, and it runs no
// longer than the watch has entries, so an idle process has no ticker.
func pollEvery(period time.Duration, check func(now time.Time) bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for now := range t.C {
		if !check(now) {
			return
		}
	}
}

// check aborts the polled calls that are due, hands the long ones their
// own timer, and reports whether any are left to poll.
func (cw *callWatch) check(now time.Time) bool {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	for w := range cw.calls {
		if w.longCall || w.aborted {
			continue
		}
		if ctxEnded(w.ctx) || !now.Before(w.dl) {
			cw.abortLocked(w)
			continue
		}
		if w.ticks++; w.ticks >= longCallTicks {
			w.longCall = true
			cw.polled--
			w.timer = time.AfterFunc(w.dl.Sub(now), func() { cw.abort(w) })
			w.stopCtx = context.AfterFunc(w.ctx, func() { cw.abort(w) })
		}
	}
	if cw.polled == 0 {
		cw.running = false
		return false
	}
	return true
}
