package rpc

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// yamuxHeaderSize is the size of a yamux frame header (spec: version,
// type, flags, stream ID, length).
const yamuxHeaderSize = 12

// errCoalescerClosed is what writes return after Close.
var errCoalescerClosed = errors.New("rpc: connection closed")

// frameCoalescer sits between yamux and the connection and cuts the
// number of socket writes, which on a loopback or virtualised host cost
// more than anything else a forwarded call does.
//
//   - yamux v0.1.2's send loop writes a data frame as two writes, the
//     12-byte header and then the body. The coalescer holds a data-frame
//     header back and sends it with the body that follows.
//   - Small frames (headers, window updates, unary calls and replies) are
//     queued and written by a flusher goroutine. While it is in a write,
//     the frames of other concurrent calls gather behind it and leave in
//     the next one: under load, one syscall carries many calls.
//   - A bulk frame (file data) is written at once from the caller's
//     buffer, once the queue ahead of it is written: one writev of header
//     and body on TCP, one batched write on TLS (RecordBatcher).
//
// yamux's send loop is the only writer. A write error is returned by the
// next Write and closes the connection, which ends the session.
type frameCoalescer struct {
	net.Conn

	// w is where writes go: Conn itself, or the connection under a
	// wrapper that only watches reads (see dialConn).
	w net.Conn

	// vectored is set when the connection writes net.Buffers with one
	// writev (a TCP connection; TLS would make two records of it).
	vectored bool

	// batch, on a TLS connection made over a RecordBatcher, gathers the
	// records of each write into one socket write.
	batch *RecordBatcher

	// bulkMin is the body size from which a frame is a bulk frame:
	// written at once, with no copy (writev on TCP; one batched write on
	// TLS), rather than queued. maxQueued bounds the small frames
	// waiting for the flusher; yamux's send loop blocks beyond it, as it
	// would on a full socket. keep is the largest queue buffer kept once
	// it is written. Config.CoalesceBulkMin, CoalesceMaxQueued and
	// CoalesceKeep set them.
	bulkMin, maxQueued, keep int

	// lastRead is when a Read last returned bytes (monoNow): the
	// keepalive pings only a peer that has been quiet (keepalive.go).
	lastRead atomic.Int64

	wmu  sync.Mutex // serialises writers (yamux has one; a late one waits)
	hdr  [yamuxHeaderSize]byte
	held bool // hdr is a data-frame header waiting for its body

	mu      sync.Mutex
	cond    sync.Cond // signals every change of queue, writing, err, closed
	queue   []byte    // small frames waiting for the flusher
	spare   []byte    // the flusher's previous buffer, for reuse
	holder  *[]byte   // a queuePool holder, to give a buffer back in
	writing bool      // a write (flusher or bulk) is in progress
	started bool      // the flusher goroutine runs
	err     error     // first write error; sticky
	closed  bool
}

// coalesceFrames wraps the connection handed to yamux, tuned by cfg (a
// normalized Config; nil means the defaults).
func coalesceFrames(c net.Conn, cfg *Config) *frameCoalescer {
	if cfg == nil {
		cfg, _ = DefaultConfig().normalize()
	}
	w := c
	if wt, ok := c.(interface{ writeConn() net.Conn }); ok {
		w = wt.writeConn()
	}
	_, tcp := w.(*net.TCPConn)
	fc := &frameCoalescer{
		Conn: c, w: w, vectored: tcp, batch: BatcherOf(w),
		bulkMin: cfg.CoalesceBulkMin, maxQueued: cfg.CoalesceMaxQueued, keep: cfg.CoalesceKeep,
	}
	fc.cond.L = &fc.mu
	fc.lastRead.Store(monoNow())
	return fc
}

// Read implements net.Conn for yamux's receive loop, noting when the peer
// was last heard from.
func (c *frameCoalescer) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(monoNow())
	}
	return n, err
}

// quietFor is how long the peer has sent nothing this end has read.
func (c *frameCoalescer) quietFor() time.Duration {
	return time.Duration(monoNow() - c.lastRead.Load())
}

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is the monotonic clock in nanoseconds since monoBase: a time
// that fits an atomic.Int64 and does not jump with the wall clock.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// Write implements net.Conn for yamux's send loop.
func (c *frameCoalescer) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var hdr []byte
	if c.held {
		c.held = false
		hdr = c.hdr[:]
	} else if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == 0 && binary.BigEndian.Uint32(p[8:12]) > 0 {
		// Version 0, type data (0), non-zero length: a body follows.
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	if len(p) >= c.bulkMin {
		return c.writeBulk(hdr, p)
	}
	return c.enqueue(hdr, p)
}

// enqueue queues hdr and p for the flusher and returns len(p).
func (c *frameCoalescer) enqueue(hdr, p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queue) >= c.maxQueued && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	if err := c.stateLocked(); err != nil {
		return 0, err
	}
	if c.queue == nil {
		c.takeQueueLocked()
	}
	c.queue = append(append(c.queue, hdr...), p...)
	if !c.started {
		c.started = true
		go c.flusher()
	}
	c.cond.Broadcast()
	return len(p), nil
}

// stateLocked returns why nothing can be written, or nil.
func (c *frameCoalescer) stateLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return errCoalescerClosed
	}
	return nil
}

// flusher writes the queue until it finds it empty, or until Close or a
// write error. enqueue starts it with the first frame of a burst, so an
// idle session has no flusher goroutine; when it ends it gives both queue
// buffers back to queuePool, so an idle session holds none either.
func (c *frameCoalescer) flusher() {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.releaseLocked()
	for {
		for c.writing && len(c.queue) > 0 && c.err == nil && !c.closed {
			c.cond.Wait() // a bulk write is out: the queue goes after it
		}
		if c.stateLocked() != nil || len(c.queue) == 0 {
			c.started = false
			return
		}
		buf := c.queue
		c.queue = c.spare[:0]
		c.spare = nil
		c.writing = true
		c.cond.Broadcast() // the queue has room again
		c.mu.Unlock()
		_, err := c.write(buf)
		c.closeOnError(err)
		c.mu.Lock()
		c.writing = false
		if cap(buf) <= c.keep {
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		c.failLocked(err)
		c.cond.Broadcast()
	}
}

// queuePool holds queue buffers of coalescers whose flusher is not
// running, in holders (*[]byte) that circulate with them, so that neither
// taking nor giving back a buffer allocates.
var queuePool = sync.Pool{New: func() any { return new([]byte) }}

// takeQueueLocked gives an empty queue a pooled buffer.
func (c *frameCoalescer) takeQueueLocked() {
	h := queuePool.Get().(*[]byte)
	c.queue = (*h)[:0]
	*h = nil
	if c.holder == nil {
		c.holder = h
	}
}

// releaseLocked gives one queue buffer back to queuePool when nothing is
// queued, and drops the other.
func (c *frameCoalescer) releaseLocked() {
	if len(c.queue) > 0 {
		return
	}
	b := c.spare
	if b == nil {
		b = c.queue
	}
	c.queue, c.spare = nil, nil
	if b == nil || cap(b) > c.keep {
		return
	}
	h := c.holder
	if h == nil {
		h = new([]byte)
	}
	c.holder = nil
	*h = b[:0]
	queuePool.Put(h)
}

// closeOnError closes the connection after a failed write, so the
// session's reader fails too and the session ends. It is called without
// the lock: closing a TLS connection writes an alert.
func (c *frameCoalescer) closeOnError(err error) {
	if err != nil {
		c.Conn.Close()
	}
}

// failLocked records the first write error; later writes return it.
func (c *frameCoalescer) failLocked(err error) {
	if err != nil && c.err == nil {
		c.err = err
	}
}

// writeBulk writes a bulk frame, hdr (nil or a held header) and body p,
// once everything queued before it is written, with no copy. It returns
// the body bytes written.
func (c *frameCoalescer) writeBulk(hdr, p []byte) (int, error) {
	c.mu.Lock()
	for (len(c.queue) > 0 || c.writing) && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	if err := c.stateLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.writing = true
	c.mu.Unlock()

	n, err := c.writeFrame(hdr, p)
	c.closeOnError(err)

	c.mu.Lock()
	c.writing = false
	c.failLocked(err)
	c.cond.Broadcast()
	c.mu.Unlock()
	return n, err
}

// writeFrame writes hdr and p: one writev on TCP, two TLS records in one
// batched socket write on TLS, else one copied write. It returns the bytes of p
// written.
func (c *frameCoalescer) writeFrame(hdr, p []byte) (int, error) {
	if len(hdr) == 0 {
		return c.write(p)
	}
	switch {
	case c.vectored:
		bufs := net.Buffers{hdr, p}
		n, err := bufs.WriteTo(c.w)
		return int(max(n-int64(len(hdr)), 0)), err
	case c.batch != nil:
		var n int
		err := c.batch.Gather(func() error {
			if _, err := c.w.Write(hdr); err != nil {
				return err
			}
			var err error
			n, err = c.w.Write(p)
			return err
		})
		if err != nil {
			return 0, err
		}
		return n, nil
	default:
		buf := getBody(len(hdr) + len(p))
		defer putBody(buf)
		copy(buf[copy(buf, hdr):], p)
		n, err := c.w.Write(buf)
		return max(n-len(hdr), 0), err
	}
}

// write writes p to the connection, as one socket write where a
// RecordBatcher allows it; on TLS a write of at most smallMessage is cut
// into small records (frame_size.go).
func (c *frameCoalescer) write(p []byte) (int, error) {
	if c.batch != nil && len(p) > smallRecord && len(p) <= smallMessage {
		return writeRecords(c.w, c.batch, p)
	}
	return WriteData(c.w, p)
}

// Close closes the connection and stops the flusher; frames still queued
// are dropped (yamux closes a session only when it is done with it).
func (c *frameCoalescer) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}
