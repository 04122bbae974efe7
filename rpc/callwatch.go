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
// a goroutine looks at the calls in flight every Config.CallWatchTick and
// aborts those whose deadline passed or whose context ended. A call still
// in flight after Config.LongCallAfter (a blocking query, a slow handler)
// gets its own timer and context registration, and is no longer polled.
//
// Each Session has its own watch (Session.watch): the calls of one
// session share a lock and a goroutine, and nothing is shared between
// sessions, so on a server with thousands of sessions and many cores no
// lock is taken by every call of the process, and no tick walks every
// call of the process. The goroutine runs only while the session has a
// polled call in flight, and ends with the session. Where it stops being
// right: a process whose every session has a short call in flight at
// every moment runs one 10 ms ticker per session; a sharded watch would
// then wake less often.

const (
	// defaultCallWatchTick is Config.CallWatchTick's default: the most a
	// call outlives its deadline or its caller's context.
	defaultCallWatchTick = 10 * time.Millisecond

	// defaultLongCallAfter is Config.LongCallAfter's default: five ticks.
	defaultLongCallAfter = 50 * time.Millisecond
)

// callWatch watches the unary calls in flight on one session. The zero
// value is ready to use, with the default tick and promotion and no end;
// a Session sets them from its Config (newCallWatch).
type callWatch struct {
	tick      time.Duration   // 0: defaultCallWatchTick
	longTicks int             // ticks before a call gets its own timer; 0: the default
	closed    <-chan struct{} // closed when the owner ends; nil: never

	mu      sync.Mutex
	calls   map[*watchedCall]struct{}
	polled  int  // calls without their own timer
	running bool // the polling goroutine runs

	// wg counts the polling goroutine, so that its end can be waited for
	// (tests do).
	wg sync.WaitGroup
}

// newCallWatch returns the watch of a session configured by cfg (after
// normalize) that ends when closed is closed.
func newCallWatch(cfg *Config, closed <-chan struct{}) *callWatch {
	tick := cfg.CallWatchTick
	return &callWatch{
		tick:      tick,
		longTicks: max(1, int((cfg.LongCallAfter+tick-1)/tick)),
		closed:    closed,
	}
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

// add watches a call on conn that must end by dl or when ctx ends. The
// caller must call remove when the call is over, whatever its outcome.
// Once the owner has ended no goroutine is started: the calls of a closed
// session fail on their own, its streams being closed.
func (cw *callWatch) add(ctx context.Context, dl time.Time, conn net.Conn) *watchedCall {
	w := &watchedCall{conn: conn, ctx: ctx, dl: dl}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.calls == nil {
		cw.calls = make(map[*watchedCall]struct{})
	}
	cw.calls[w] = struct{}{}
	cw.polled++
	if !cw.running && !cw.ended() {
		cw.running = true
		cw.wg.Add(1)
		go cw.run()
	}
	return w
}

// ended reports whether the owner has ended.
func (cw *callWatch) ended() bool {
	select {
	case <-cw.closed:
		return true
	default:
		return false
	}
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

// run calls check every tick until it reports that nothing is left to
// look at, or the owner ends. add starts it with the first polled call,
// so an idle session has no ticker.
func (cw *callWatch) run() {
	defer cw.wg.Done()
	tick := cw.tick
	if tick <= 0 {
		tick = defaultCallWatchTick
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			if !cw.check(now) {
				return
			}
		case <-cw.closed:
			cw.mu.Lock()
			cw.running = false
			cw.mu.Unlock()
			return
		}
	}
}

// check aborts the polled calls that are due, hands the long ones their
// own timer, and reports whether any are left to poll.
func (cw *callWatch) check(now time.Time) bool {
	longTicks := cw.longTicks
	if longTicks <= 0 {
		longTicks = int(defaultLongCallAfter / defaultCallWatchTick)
	}
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
		if w.ticks++; w.ticks >= longTicks {
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
