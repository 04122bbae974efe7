package rpc

import (
	"errors"
	"time"

	"github.com/hashicorp/yamux"
)

// yamux's keepalive is a goroutine per session that sleeps for
// KeepAliveInterval and pings: 2-8 KiB of stack per node session on a
// server that holds thousands. A Session turns yamux's off
// (Config.yamuxSession) and runs the same ping from a timer instead: no
// goroutine while it waits, one for the length of a ping when it fires.
// Runtime timers live in per-P heaps, so 10,000 sessions share no lock.

// startKeepAlive arms the keepalive timer when the config asks for one.
func (s *Session) startKeepAlive() {
	if d := s.cfg.keepAliveInterval; d > 0 {
		s.idleMu.Lock()
		s.keepAlive = time.AfterFunc(d, s.keepAlivePing)
		s.idleMu.Unlock()
	}
}

// keepAlivePing pings the peer and re-arms, or closes the session when
// the ping fails (yamux's keepalive does the same, with
// ErrKeepAliveTimeout).
func (s *Session) keepAlivePing() {
	if s.IsClosed() {
		return
	}
	if _, err := s.ys.Ping(); err != nil {
		if !errors.Is(err, yamux.ErrSessionShutdown) {
			s.logger.Error("keepalive failed; closing session", "error", err)
		}
		s.Close()
		return
	}
	s.idleMu.Lock()
	if !s.ys.IsClosed() {
		s.keepAlive.Reset(s.cfg.keepAliveInterval)
	}
	s.idleMu.Unlock()
}
