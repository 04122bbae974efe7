package rpc

import (
	"os"
	"sync"
	"time"
)

// readProbe defers the one-byte read that net/http's server starts on a
// connection while a handler runs, to notice a client that goes away. The
// client sends nothing before it has the response, so on a quick call the
// read only ever fails with EAGAIN and parks in the poller, until the
// server aborts it by setting a read deadline in the past: a syscall and
// two scheduler hand-offs per request, a tenth of what a small forwarded
// call costs a server. Deferred, the read waits for the probe's delay
// (Config.ReadProbeDelay), an abort or Close; only a handler that runs
// longer than that makes it reach the socket, and a client that goes away
// is noticed that much later.
//
// Any other one-byte read is merely delayed by up to the delay; larger
// reads are untouched.
type readProbe struct {
	delay time.Duration // 0: defaultReadProbeDelay

	mu      sync.Mutex
	past    bool // the read deadline is in the past: reads fail at once
	closed  bool
	waiting bool
	wake    chan struct{} // one signal: past or closed changed while waiting
	timer   *time.Timer
}

// read runs a deferred one-byte read of p on rd.
func (pr *readProbe) read(p []byte, rd func([]byte) (int, error)) (int, error) {
	pr.mu.Lock()
	if pr.past {
		pr.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	if pr.closed {
		pr.mu.Unlock()
		return rd(p)
	}
	if pr.wake == nil {
		if pr.delay <= 0 {
			pr.delay = defaultReadProbeDelay
		}
		pr.wake = make(chan struct{}, 1)
		pr.timer = time.NewTimer(pr.delay)
	} else {
		select {
		case <-pr.wake: // stale: it came after the last read had ended
		default:
		}
		pr.timer.Reset(pr.delay)
	}
	pr.waiting = true
	pr.mu.Unlock()

	select {
	case <-pr.wake:
	case <-pr.timer.C:
	}
	pr.timer.Stop()

	pr.mu.Lock()
	pr.waiting = false
	past := pr.past
	pr.mu.Unlock()
	if past {
		return 0, os.ErrDeadlineExceeded
	}
	return rd(p)
}

// setDeadline records a new read deadline t and wakes a waiting read
// when t is in the past.
func (pr *readProbe) setDeadline(t time.Time) {
	pr.mu.Lock()
	pr.past = !t.IsZero() && !t.After(time.Now())
	if pr.past {
		pr.signalLocked()
	}
	pr.mu.Unlock()
}

// close wakes a waiting read, which then reads the closed connection.
func (pr *readProbe) close() {
	pr.mu.Lock()
	pr.closed = true
	pr.signalLocked()
	pr.mu.Unlock()
}

func (pr *readProbe) signalLocked() {
	if !pr.waiting {
		return
	}
	select {
	case pr.wake <- struct{}{}:
	default:
	}
}
