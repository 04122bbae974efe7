package rpc

import (
	"sync"
	"time"
)

// pastTime is a deadline that has always passed; setting it aborts blocked
// reads and writes on every net.Conn implementation we use (TCP, TLS,
// net.Pipe, yamux streams).
var pastTime = time.Unix(1, 0)

// deadline is a resettable deadline for operations that wait on channels
// (Stream.Recv), in the spirit of net.Pipe's: wait returns a channel that
// is closed once the deadline has passed.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	expire chan struct{} // closed when the deadline passes
}

func newDeadline() *deadline {
	return &deadline{expire: make(chan struct{})}
}

// set sets the deadline; the zero time clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expire // the timer fired: wait for its close
	}
	d.timer = nil

	closed := isClosedChan(d.expire)
	if t.IsZero() {
		if closed {
			d.expire = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.expire = make(chan struct{})
		}
		ch := d.expire
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.expire)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expire
}

// stop releases the timer.
func (d *deadline) stop() { d.set(time.Time{}) }

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
