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

	// w is where writes go: Conn itself, or the connection under a
	// wrapper that only watches reads (see dialConn).
	w net.Conn

	// vectored is set when the connection writes net.Buffers with one
	// writev (a TCP connection; TLS would make two records of it).
	vectored bool

	// batch, on a TLS connection made over a RecordBatcher, gathers the
	// records of each write into one socket write.
	batch *RecordBatcher
}

// vectoredWriteMin is the body size from which a header and body go out
// with writev rather than copied into one buffer.
const vectoredWriteMin = 16 << 10

// coalesceFrames wraps the connection handed to yamux.
func coalesceFrames(c net.Conn) net.Conn {
	w := c
	if wt, ok := c.(interface{ writeConn() net.Conn }); ok {
		w = wt.writeConn()
	}
	_, tcp := w.(*net.TCPConn)
	return &frameCoalescer{Conn: c, w: w, vectored: tcp, batch: BatcherOf(w)}
}

// write writes p to the connection, as one socket write where a
// RecordBatcher allows it.
func (c *frameCoalescer) write(p []byte) (int, error) {
	if c.batch == nil || len(p) <= 16<<10 {
		return c.w.Write(p) // one TLS record at most: nothing to gather
	}
	c.batch.Begin()
	n, err := c.w.Write(p)
	if ferr := c.batch.End(); err == nil && ferr != nil {
		n, err = 0, ferr
	}
	return n, err
}

// writeBulk writes the held header and a bulk body p with no copy: one
// writev on TCP; on TLS two writes (records) gathered into one socket
// write by the RecordBatcher.
func (c *frameCoalescer) writeBulk(p []byte) (int, error) {
	var n int64
	var err error
	if c.vectored {
		bufs := net.Buffers{c.hdr[:], p}
		n, err = bufs.WriteTo(c.w)
		n -= yamuxHeaderSize
	} else {
		c.batch.Begin()
		var m int
		if _, err = c.w.Write(c.hdr[:]); err == nil {
			m, err = c.w.Write(p)
			n = int64(m)
		}
		if ferr := c.batch.End(); err == nil && ferr != nil {
			n, err = 0, ferr
		}
	}
	return int(max(n, 0)), err
}

// Write implements net.Conn.
func (c *frameCoalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.held = false
		if len(p) >= vectoredWriteMin && (c.vectored || c.batch != nil) {
			return c.writeBulk(p)
		}
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err := c.write(c.buf)
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
	return c.write(p)
}
