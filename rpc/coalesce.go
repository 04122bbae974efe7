package rpc

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamuxHeaderSize is the size of a yamux frame header (spec: version,
// type, flags, stream ID, length).
const yamuxHeaderSize = 12

// frameCoalescer sits between yamux and the connection. yamux v0.1.2's
// send loop writes a data frame as two writes, the 12-byte header and then
// the body: two syscalls (and two TLS records) per frame. frameCoalescer
// holds a data-frame header back and writes it with the body that follows,
// in one write. Every other write passes through. yamux's send loop is the
// only writer; the mutex keeps a late Close or Write honest.
type frameCoalescer struct {
	net.Conn
	mu   sync.Mutex
	hdr  [yamuxHeaderSize]byte
	held bool
	buf  []byte

	// vectored is set when the connection writes net.Buffers with one
	// writev (a TCP connection; TLS would make two records of it).
	vectored bool
}

// vectoredWriteMin is the body size from which a header and body go out
// with writev rather than copied into one buffer.
const vectoredWriteMin = 16 << 10

// coalesceFrames wraps the connection handed to yamux.
func coalesceFrames(c net.Conn) net.Conn {
	_, tcp := c.(*net.TCPConn)
	return &frameCoalescer{Conn: c, vectored: tcp}
}

// Write implements net.Conn.
func (c *frameCoalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.held = false
		if c.vectored && len(p) >= vectoredWriteMin {
			// A bulk body: one writev of header and body, no copy.
			bufs := net.Buffers{c.hdr[:], p}
			n, err := bufs.WriteTo(c.Conn)
			n -= yamuxHeaderSize
			if n < 0 {
				n = 0
			}
			return int(n), err
		}
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err := c.Conn.Write(c.buf)
		if cap(c.buf) > 512<<10 {
			c.buf = nil // do not pin a large buffer after a bulk frame
		}
		n -= yamuxHeaderSize
		if n < 0 {
			n = 0
		}
		return n, err
	}
	// Version 0, type data (0), non-zero length: a body follows.
	if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == 0 && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}
