package rpc

import (
	"net"
	"syscall"
)

// unreadBytes is how many bytes have come from the peer into c's socket
// and wait there for this process to read them: a sign that this process
// is behind (starved of CPU), not that the peer is silent. It looks
// through the wrappers that expose the connection under them (NetConn,
// as crypto/tls does) and answers 0 for a connection that is not a
// socket.
func unreadBytes(c net.Conn) int {
	for range 8 {
		switch v := c.(type) {
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		case syscall.Conn:
			return socketUnread(v)
		default:
			return 0
		}
	}
	return 0
}
