package integration

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// faultBridge is a TCP proxy for fault injection (toxiproxy-style, after
// etcd's test bridge): it listens on a loopback port, dials target for
// every connection it accepts, and copies bytes both ways under the
// faults a test sets, per direction. Faults apply at once to the links
// open and to those opened later. Its goroutines end with Close, which
// the test's cleanup calls.
//
// Up is what the dialer (a node, a peer server) sends to target; down is
// what target answers.
type faultBridge struct {
	t      testing.TB
	ln     net.Listener
	target string

	dirs [2]*faultDir // up, down

	mu     sync.Mutex
	links  map[*bridgeLink]struct{}
	refuse bool // close new connections at once
	closed bool
	wg     sync.WaitGroup
}

// Directions of a bridge.
const (
	dirUp   = 0 // dialer → target
	dirDown = 1 // target → dialer
)

// faultDir is the state of one direction: paused (bytes held, sockets
// open: the sender's buffers fill and it blocks), blackholed (bytes read
// and dropped: no packets, no reset), delayed, throttled. changed is
// closed and replaced on every change, to wake copiers that wait.
type faultDir struct {
	mu        sync.Mutex
	paused    bool
	blackhole bool
	delay     time.Duration
	limit     *rate.Limiter // nil: no throttle
	changed   chan struct{}
}

// newFaultBridge starts a bridge to target.
func newFaultBridge(t testing.TB, target string) *faultBridge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("bridge listen: %v", err)
	}
	b := &faultBridge{t: t, ln: ln, target: target, links: map[*bridgeLink]struct{}{}}
	for i := range b.dirs {
		b.dirs[i] = &faultDir{changed: make(chan struct{})}
	}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.Close)
	return b
}

// Addr is the bridge's address, for the dialer.
func (b *faultBridge) Addr() string { return b.ln.Addr().String() }

// Close stops the bridge and every link.
func (b *faultBridge) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	b.ln.Close()
	b.Drop()
	b.wg.Wait()
}

// set changes one direction (or both, dir < 0) under its lock and wakes
// its copiers.
func (b *faultBridge) set(dir int, f func(d *faultDir)) {
	for i, d := range b.dirs {
		if dir >= 0 && i != dir {
			continue
		}
		d.mu.Lock()
		f(d)
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// Pause stops forwarding bytes in dir (-1: both) and holds them, sockets
// open, until Resume.
func (b *faultBridge) Pause(dir int) { b.set(dir, func(d *faultDir) { d.paused = true }) }

// Blackhole drops every byte sent in dir (-1: both), with no reset, until
// Resume: the link passes no packets.
func (b *faultBridge) Blackhole(dir int) { b.set(dir, func(d *faultDir) { d.blackhole = true }) }

// Delay holds every chunk in dir for d before forwarding it (latency).
func (b *faultBridge) Delay(dir int, delay time.Duration) {
	b.set(dir, func(d *faultDir) { d.delay = delay })
}

// Throttle limits dir to bytesPerSec (0: no limit).
func (b *faultBridge) Throttle(dir int, bytesPerSec int) {
	b.set(dir, func(d *faultDir) {
		d.limit = nil
		if bytesPerSec > 0 {
			d.limit = rate.NewLimiter(rate.Limit(bytesPerSec), max(bytesPerSec/10, 1))
		}
	})
}

// Resume lifts every fault of dir (-1: both): pause, blackhole, delay,
// throttle.
func (b *faultBridge) Resume(dir int) {
	b.set(dir, func(d *faultDir) { d.paused, d.blackhole, d.delay, d.limit = false, false, 0, nil })
}

// Refuse makes the bridge close new connections as soon as it accepts
// them (on: a server that is down), or accept them again.
func (b *faultBridge) Refuse(on bool) {
	b.mu.Lock()
	b.refuse = on
	b.mu.Unlock()
}

// Drop closes every open link cleanly (FIN both ways).
func (b *faultBridge) Drop() { b.each(func(l *bridgeLink) { l.close(false) }) }

// Reset closes every open link with a reset (RST both ways).
func (b *faultBridge) Reset() { b.each(func(l *bridgeLink) { l.close(true) }) }

// HalfClose ends dir on every open link: the receiving side of dir reads
// EOF, the other direction goes on.
func (b *faultBridge) HalfClose(dir int) {
	b.each(func(l *bridgeLink) { l.halfClose(dir) })
}

// Links returns how many links are open.
func (b *faultBridge) Links() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.links)
}

func (b *faultBridge) each(f func(*bridgeLink)) {
	b.mu.Lock()
	ls := make([]*bridgeLink, 0, len(b.links))
	for l := range b.links {
		ls = append(ls, l)
	}
	b.mu.Unlock()
	for _, l := range ls {
		f(l)
	}
}

func (b *faultBridge) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		refuse, closed := b.refuse, b.closed
		b.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		b.wg.Add(1)
		go b.serve(c.(*net.TCPConn))
	}
}

// serve dials the target for one accepted connection and copies both
// ways until both directions end or the link is closed.
func (b *faultBridge) serve(in *net.TCPConn) {
	defer b.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var d net.Dialer
	oc, err := d.DialContext(ctx, "tcp", b.target)
	if err != nil {
		in.Close()
		return
	}
	l := &bridgeLink{conns: [2]*net.TCPConn{in, oc.(*net.TCPConn)}, ctx: ctx, cancel: cancel}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		l.close(false)
		return
	}
	b.links[l] = struct{}{}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for dir := range b.dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.copy(b.dirs[dir], dir)
		}()
	}
	wg.Wait()
	l.close(false)
	b.mu.Lock()
	delete(b.links, l)
	b.mu.Unlock()
}

// bridgeLink is one proxied connection: conns[0] the dialer's side,
// conns[1] the target's. Direction up reads conns[0] and writes
// conns[1]; down the reverse.
type bridgeLink struct {
	conns  [2]*net.TCPConn
	ctx    context.Context // ends when the link is closed
	cancel context.CancelFunc
	once   sync.Once
}

func (l *bridgeLink) close(reset bool) {
	l.once.Do(func() {
		l.cancel()
		for _, c := range l.conns {
			if reset {
				_ = c.SetLinger(0)
			}
			c.Close()
		}
	})
}

func (l *bridgeLink) halfClose(dir int) {
	_ = l.conns[dir].CloseRead()
	_ = l.conns[1-dir].CloseWrite()
}

// copy forwards direction dir under d's faults until the source ends or
// the link is closed; a source that ends passes its FIN on.
func (l *bridgeLink) copy(d *faultDir, dir int) {
	src, dst := l.conns[dir], l.conns[1-dir]
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.forward(d, dst, buf[:n], time.Now()) {
			return
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				_ = dst.CloseWrite()
			}
			return
		}
	}
}

// forward writes p to dst once d lets it: it waits while d is paused,
// drops p while d is blackholed, holds it until readAt+delay and paces
// it to the throttle. It reports false when the link is gone.
func (l *bridgeLink) forward(d *faultDir, dst io.Writer, p []byte, readAt time.Time) bool {
	for len(p) > 0 {
		d.mu.Lock()
		paused, hole, delay, limit, changed := d.paused, d.blackhole, d.delay, d.limit, d.changed
		d.mu.Unlock()
		switch {
		case hole:
			return true
		case paused:
			if !l.wait(changed, nil) {
				return false
			}
			continue
		case time.Until(readAt.Add(delay)) > 0:
			t := time.NewTimer(time.Until(readAt.Add(delay)))
			ok := l.wait(changed, t.C)
			t.Stop()
			if !ok {
				return false
			}
			continue
		}
		chunk := p
		if limit != nil {
			chunk = p[:min(len(p), limit.Burst())]
			if limit.WaitN(l.ctx, len(chunk)) != nil {
				return false
			}
		}
		if _, err := dst.Write(chunk); err != nil {
			return false
		}
		p = p[len(chunk):]
	}
	return true
}

// wait waits for a change of the faults or for ch; false when the link
// was closed first.
func (l *bridgeLink) wait(changed <-chan struct{}, ch <-chan time.Time) bool {
	select {
	case <-l.ctx.Done():
		return false
	case <-changed:
	case <-ch:
	}
	return true
}

// TestFaultBridge checks each fault on a plain echo server: bytes pass,
// a pause holds them and a resume lets them through, a blackhole drops
// them with the connection kept open, a delay holds them, a half-close
// passes EOF one way, a reset resets, a refusing bridge closes new
// connections.
func TestFaultBridge(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ewg sync.WaitGroup
	t.Cleanup(func() { echo.Close(); ewg.Wait() })
	ewg.Add(1)
	go func() {
		defer ewg.Done()
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			ewg.Add(1)
			go func() {
				defer ewg.Done()
				_, _ = io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	b := newFaultBridge(t, echo.Addr().String())
	dial := func(t *testing.T) *net.TCPConn {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.TCPConn)
	}
	// roundTrip sends msg and reads it back within d; it reports what came.
	roundTrip := func(c net.Conn, msg string, d time.Duration) (string, error) {
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(d))
		defer c.SetReadDeadline(time.Time{})
		got := make([]byte, len(msg))
		n, err := io.ReadFull(c, got)
		return string(got[:n]), err
	}
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}

	t.Run("pass", func(t *testing.T) {
		c := dial(t)
		if got, err := roundTrip(c, "hello", 5*time.Second); got != "hello" {
			t.Fatalf("got %q (%v); want hello", got, err)
		}
	})
	t.Run("pause and resume", func(t *testing.T) {
		c := dial(t)
		b.Pause(dirDown)
		if got, err := roundTrip(c, "held", 200*time.Millisecond); !isTimeout(err) {
			t.Fatalf("paused: got %q, %v; want a timeout", got, err)
		}
		b.Resume(-1)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
			t.Fatalf("after resume: got %q, %v; want held", got, err)
		}
	})
	t.Run("blackhole", func(t *testing.T) {
		c := dial(t)
		b.Blackhole(dirUp)
		if got, err := roundTrip(c, "lost", 200*time.Millisecond); !isTimeout(err) {
			t.Fatalf("blackholed: got %q, %v; want a timeout", got, err)
		}
		b.Resume(-1)
		if got, err := roundTrip(c, "back", 5*time.Second); got != "back" {
			t.Fatalf("after resume: got %q, %v; want back (the lost bytes dropped)", got, err)
		}
	})
	t.Run("delay", func(t *testing.T) {
		c := dial(t)
		b.Delay(dirUp, 300*time.Millisecond)
		defer b.Resume(-1)
		start := time.Now()
		if got, err := roundTrip(c, "late", 5*time.Second); got != "late" {
			t.Fatalf("got %q, %v", got, err)
		}
		if el := time.Since(start); el < 300*time.Millisecond {
			t.Fatalf("delayed round trip took %v; want at least 300ms", el)
		}
	})
	t.Run("half-close", func(t *testing.T) {
		c := dial(t)
		if got, err := roundTrip(c, "x", 5*time.Second); got != "x" {
			t.Fatalf("got %q, %v", got, err)
		}
		b.HalfClose(dirUp) // the echo server reads EOF and closes its side
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after half-close: %d, %v; want EOF", n, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c := dial(t)
		if got, err := roundTrip(c, "x", 5*time.Second); got != "x" {
			t.Fatalf("got %q, %v", got, err)
		}
		b.Reset()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("after reset: %v; want a connection error", err)
		}
	})
	t.Run("refuse", func(t *testing.T) {
		b.Refuse(true)
		defer b.Refuse(false)
		c := dial(t)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("refused: %v; want the connection closed", err)
		}
	})
	t.Run("throttle", func(t *testing.T) {
		c := dial(t)
		b.Throttle(dirDown, 20<<10) // 20 KiB/s, bursts of 2 KiB
		defer b.Resume(-1)
		msg := string(make([]byte, 8<<10))
		start := time.Now()
		if got, err := roundTrip(c, msg, 10*time.Second); len(got) != len(msg) {
			t.Fatalf("got %d bytes, %v", len(got), err)
		}
		// 8 KiB at 20 KiB/s after a 2 KiB burst: about 300 ms.
		if el := time.Since(start); el < 200*time.Millisecond {
			t.Fatalf("throttled 8 KiB took %v; want at least 200ms", el)
		}
	})
}
