package rpc

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// yamux's keepalive is a goroutine per session that sleeps for
// KeepAliveInterval and pings: 2-8 KiB of stack per node session on a
// server that holds thousands. A Session turns yamux's off
// (Config.yamuxSession) and runs its own from a timer instead: no
// goroutine while it waits, one for the length of a ping when it fires.
// Runtime timers live in per-P heaps, so 10,000 sessions share no lock.
//
// A session pings only a peer it has not heard from for
// KeepAliveInterval: any frame read proves the peer alive as well as a
// ping answer does. The timer is due one interval (less up to a quarter,
// at random) after the peer last spoke; when it fires early because the
// peer spoke since, it is armed again. On an idle session the two ends'
// timers race, and whichever fires first pings; the ping and its answer
// are what the other end hears, so it does not ping too. An idle session
// thus costs one ping per interval, not one from each end, and a busy
// one none; a peer whose pings are off is pinged by this end alone.
//
// A ping that goes unanswered for Config.KeepAliveTimeout closes the
// session, which fails the calls in flight on it: a peer that stopped
// answering without a reset (a blackholed link, a frozen process) is
// noticed within interval + timeout of its last frame. yamux's own ping
// waits for ConnectionWriteTimeout, the bound it also puts on a
// congested socket, so the session arms a timer of its own for the ping
// it sends.

// startKeepAlive arms the keepalive timer when the config asks for one.
func (s *Session) startKeepAlive() {
	if s.cfg.keepAliveInterval > 0 {
		s.idleMu.Lock()
		s.keepAlive = time.AfterFunc(s.nextKeepAlive(0), s.keepAlivePing)
		s.idleMu.Unlock()
	}
}

// nextKeepAlive is the wait before the keepalive is next due, when the
// peer has been quiet for quiet: the interval less up to a quarter of it
// at random (so that sessions opened together do not ping together),
// counted from when the peer last spoke.
func (s *Session) nextKeepAlive(quiet time.Duration) time.Duration {
	d := s.minKeepAlive() + rand.N(s.cfg.keepAliveInterval/4+1)
	if quiet >= d {
		return 0
	}
	return d - quiet
}

// minKeepAlive is the shortest quiet that earns the peer a ping: the
// interval less a quarter.
func (s *Session) minKeepAlive() time.Duration {
	d := s.cfg.keepAliveInterval
	return d - d/4
}

// keepAlivePing pings the peer if it has been quiet for the interval and
// re-arms, or closes the session when the ping fails or goes unanswered
// for KeepAliveTimeout (yamux's keepalive does the same, with
// ErrKeepAliveTimeout).
func (s *Session) keepAlivePing() {
	if s.IsClosed() {
		return
	}
	if quiet := s.fc.quietFor(); quiet < s.minKeepAlive() {
		s.rearmKeepAlive(quiet) // heard from since the timer was armed
		return
	}
	s.cfg.Counters.keepAlivePing()
	w := &pingWait{s: s, timeout: s.cfg.KeepAliveTimeout}
	w.mu.Lock()
	w.timer = time.AfterFunc(w.timeout, w.expire)
	w.mu.Unlock()
	_, err := s.ys.Ping()
	if !w.answered() {
		return // closed by the timeout
	}
	if err != nil {
		if !errors.Is(err, yamux.ErrSessionShutdown) {
			s.cfg.Counters.keepAliveTimeout()
			s.logger.Warn("keepalive failed; closing session", "remote", s.RemoteAddr(), "error", err)
		}
		s.Close()
		return
	}
	s.rearmKeepAlive(s.fc.quietFor())
}

// rearmKeepAlive arms the timer for when the keepalive is next due.
func (s *Session) rearmKeepAlive(quiet time.Duration) {
	s.idleMu.Lock()
	if !s.ys.IsClosed() {
		s.keepAlive.Reset(s.nextKeepAlive(quiet))
	}
	s.idleMu.Unlock()
}

// pingWait is one ping's wait for its answer. When KeepAliveTimeout
// passes with bytes from the peer still unread in the socket, the answer
// may be among them: this process is behind (a CPU-starved host: a
// reconnect storm of thousands of TLS handshakes on two cores), not the
// peer silent, and closing would feed the storm. The wait is then
// extended, up to yamux's ConnectionWriteTimeout (10 s), after which
// Ping itself gives up. A frozen or blackholed peer sends nothing, so it
// is still noticed at KeepAliveTimeout.
type pingWait struct {
	s       *Session
	timeout time.Duration

	mu       sync.Mutex
	timer    *time.Timer
	done     bool // the ping returned
	closed   bool // expire closed the session
	extended int
}

func (w *pingWait) expire() {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	if n := unreadBytes(w.s.conn); n > 0 {
		w.extended++
		times := w.extended
		w.timer.Reset(w.timeout)
		w.mu.Unlock()
		w.s.cfg.Counters.keepAliveExtended()
		w.s.logger.Debug("keepalive answer may be unread; waiting longer", "unread_bytes", n, "times", times)
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.s.cfg.Counters.keepAliveTimeout()
	w.s.logger.Warn("keepalive unanswered; closing session", "remote", w.s.RemoteAddr(), "timeout", w.timeout)
	w.s.Close()
}

// answered records that the ping returned and reports whether the
// session is still open as far as the wait is concerned.
func (w *pingWait) answered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.timer.Stop()
	return !w.closed
}
