package rpc

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamuxHeaderSize is the size of a yamux frame header (spec: version,
// type, flags, stream ID, length).
const yamuxHeaderSize = 12

// coalescingConn sits between yamux and the connection. yamux v0.1.2
// writes a data frame as two writes, the 12-byte header and then the body,
// which costs two syscalls (and two TLS records). coalescingConn holds a
// data-frame header back and sends it with the body that follows in one
// write. Other writes pass through. yamux's send loop is the only writer,
// so the held header is always followed by its body; the mutex only keeps
// Close and a late Write honest.
type coalescingConn struct {
	net.Conn
	mu   sync.Mutex
	held [yamuxHeaderSize]byte
	has  bool
	buf  []byte
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.has {
		// version 0, type data (0), non-zero length: a body follows.
		if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == 0 && binary.BigEndian.Uint32(p[8:12]) > 0 {
			copy(c.held[:], p)
			c.has = true
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.has = false
	c.buf = append(append(c.buf[:0], c.held[:]...), p...)
	n, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 1<<20 {
		c.buf = nil
	}
	n -= yamuxHeaderSize
	if n < 0 {
		n = 0
	}
	return n, err
}

var coalesceOff = false

func wrapYamuxConn(c net.Conn) net.Conn {
	if coalesceOff {
		return c
	}
	return &coalescingConn{Conn: c}
}
