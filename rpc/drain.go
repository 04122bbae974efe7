package rpc

// StreamsInUse returns how many streams of the session are in use: open
// streams less the idle unary streams this end keeps for reuse. Streams
// the remote end keeps idle for its own reuse count; the remote can close
// them (CloseIdle). A server draining a session a node released waits for
// it to reach zero.
func (s *Session) StreamsInUse() int { return s.streamsInUse() }

// CloseIdle closes the idle unary streams this end keeps for reuse, so
// that the remote end sees only the streams in use. The next call opens a
// fresh stream.
func (s *Session) CloseIdle() { s.closeIdle() }
