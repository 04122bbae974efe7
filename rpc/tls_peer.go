package rpc

import (
	"crypto/tls"
	"net"
)

// verifyRaftPeer applies Config.VerifyRaftPeer to a raft connection; conn
// is a *tls.Conn when the connection arrived inside TLS.
func (s *Server) verifyRaftPeer(conn net.Conn) error {
	tc, ok := conn.(*tls.Conn)
	if !ok || s.cfg.VerifyRaftPeer == nil {
		return nil
	}
	return s.cfg.VerifyRaftPeer(tc.ConnectionState())
}

// ConnectionState returns the TLS state of the connection under the
// session (the peer's verified certificates among it), and false for a
// plaintext session. Server code uses it to check the role a peer's
// certificate names before serving calls only servers may make.
func (s *Session) ConnectionState() (tls.ConnectionState, bool) {
	conn := s.conn
	if dc, ok := conn.(*dialConn); ok {
		conn = dc.Conn
	}
	if tc, ok := conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}
