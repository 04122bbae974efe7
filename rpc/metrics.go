package rpc

import "sync/atomic"

// Counters count a server's odd paths of the transport, for the agent's
// metrics. A Server makes its own unless Config.Counters names one; every
// method is safe on a nil *Counters (it does nothing).
type Counters struct {
	connsOverLimit    atomic.Uint64 // connections refused over MaxConnsPerIP
	handshakesRefused atomic.Uint64 // connections refused before a protocol was served
	framesOverLimit   atomic.Uint64 // frames refused over MaxMessageSize
	keepAlivePings    atomic.Uint64 // pings sent to a peer that had been quiet for the keepalive interval
	keepAlivesFailed  atomic.Uint64 // sessions closed because a ping went unanswered
	keepAlivesLonger  atomic.Uint64 // ping waits extended: the peer's bytes sat unread here
}

func (c *Counters) connOverLimit() {
	if c != nil {
		c.connsOverLimit.Add(1)
	}
}

func (c *Counters) handshakeRefused() {
	if c != nil {
		c.handshakesRefused.Add(1)
	}
}

func (c *Counters) frameOverLimit() {
	if c != nil {
		c.framesOverLimit.Add(1)
	}
}

func (c *Counters) keepAlivePing() {
	if c != nil {
		c.keepAlivePings.Add(1)
	}
}

func (c *Counters) keepAliveTimeout() {
	if c != nil {
		c.keepAlivesFailed.Add(1)
	}
}

func (c *Counters) keepAliveExtended() {
	if c != nil {
		c.keepAlivesLonger.Add(1)
	}
}

// Stats returns the totals: "rpc_conns_over_limit" (connections refused
// over the per-IP limit), "rpc_handshakes_refused" (no protocol byte in
// time, an unknown one, TLS refused or required, a raft peer refused)
// "rpc_frames_over_limit" (requests and stream messages over the
// message size limit), "rpc_keepalive_pings" (pings sent to peers
// quiet for the keepalive interval), "rpc_keepalive_timeouts" (sessions closed
// because the peer stopped answering pings) and "rpc_keepalive_extended"
// (ping waits extended because the peer's bytes sat unread in this
// process's socket: this process was behind).
func (c *Counters) Stats() map[string]uint64 {
	if c == nil {
		return map[string]uint64{}
	}
	return map[string]uint64{
		"rpc_conns_over_limit":   c.connsOverLimit.Load(),
		"rpc_handshakes_refused": c.handshakesRefused.Load(),
		"rpc_frames_over_limit":  c.framesOverLimit.Load(),
		"rpc_keepalive_pings":    c.keepAlivePings.Load(),
		"rpc_keepalive_timeouts": c.keepAlivesFailed.Load(),
		"rpc_keepalive_extended": c.keepAlivesLonger.Load(),
	}
}

// Counters returns the server's transport counters.
func (s *Server) Counters() *Counters { return s.cfg.Counters }
