package rpc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Data connections carry the bytes of one bulk transfer (a file a node
// sends through a server to an HTTP caller) outside the multiplexed
// session, where the kernel's flow control and splice(2) move them: the
// session's per-stream window and the hand-offs of a multiplexed stream
// cost more per byte than the second network hop itself.
//
// The server hands out a token with ExpectData and passes it to the node
// inside a streaming call. The node dials the address of its session with
// DialData: ByteData, the token, and the server answers dataAccepted if it
// expects that token (else it closes). The bytes follow; the streaming
// call still carries the header and the result. A node that cannot make a
// data connection (another server behind a load balancer, a firewall)
// sends the bytes on the stream as usual. A connection whose transfer
// ended exactly at its length then carries data calls (datacall.go).

// ByteData starts a data connection (see ExpectData).
const ByteData byte = 0x07

// DataTokenSize is the size of a data connection token.
const DataTokenSize = 16

// dataAccepted is the server's one-byte answer to a token it expects.
const dataAccepted byte = 0x01

// maxExpectedData bounds the data connections a server waits for at once.
const maxExpectedData = 4096

// ErrNoDataConn is returned by ExpectData when too many data connections
// are pending.
var ErrNoDataConn = errors.New("rpc: no data connection available")

// dataWaiters are the tokens a server expects, each with the channel its
// connection is delivered on.
type dataWaiters struct {
	mu       sync.Mutex
	m        map[[DataTokenSize]byte]chan net.Conn
	accepted atomic.Uint64
}

// DataConns returns how many data connections the server has accepted.
func (s *Server) DataConns() uint64 { return s.data.accepted.Load() }

// ExpectData registers a new token and returns it with the channel its
// connection will arrive on. cancel forgets the token; a connection that
// was delivered but not taken is closed. With TLS configured the data
// connection arrives inside TLS, like every other connection.
func (s *Server) ExpectData() (token []byte, conns <-chan net.Conn, cancel func(), err error) {
	var t [DataTokenSize]byte
	if _, err := rand.Read(t[:]); err != nil {
		return nil, nil, nil, err
	}
	ch := make(chan net.Conn, 1)
	w := &s.data
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[[DataTokenSize]byte]chan net.Conn)
	}
	if len(w.m) >= maxExpectedData {
		w.mu.Unlock()
		return nil, nil, nil, ErrNoDataConn
	}
	w.m[t] = ch
	w.mu.Unlock()
	cancel = func() {
		w.mu.Lock()
		delete(w.m, t)
		w.mu.Unlock()
		// Delivered (under the lock) before the delete, or never.
		select {
		case c := <-ch:
			c.Close()
		default:
		}
	}
	return t[:], ch, cancel, nil
}

// deliver hands conn to whoever expects token, atomically with respect to
// cancel: a connection is either delivered before the token is forgotten
// (and cancel closes it if nobody took it) or refused.
func (w *dataWaiters) deliver(token [DataTokenSize]byte, conn net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.m[token]
	if ch == nil {
		return false
	}
	delete(w.m, token)
	ch <- conn // buffered; each token is delivered once
	w.accepted.Add(1)
	return true
}

// serveData answers a ByteData connection: it reads the token (under the
// handshake deadline still set), hands the connection to whoever expects
// it and then tells the dialer so. It reports whether it handed the
// connection off; if not, the caller closes conn. The connection handed
// off holds its slot of MaxConnsPerIP until closed: release, if set,
// gives it back.
func (s *Server) serveData(conn net.Conn, release func()) bool {
	var t [DataTokenSize]byte
	if _, err := io.ReadFull(conn, t[:]); err != nil {
		return false
	}
	conn.SetDeadline(time.Time{})
	// The server reads the bulk bytes: read ahead here, and only here.
	if b := BatcherOf(conn); b != nil {
		b.ReadAhead()
	}
	if release != nil {
		conn = &slotConn{Conn: conn, release: release}
	}
	if !s.data.deliver(t, conn) {
		s.logger.Debug("data connection with an unknown token", "remote", conn.RemoteAddr().String())
		return false
	}
	// The receiver owns conn now; it only reads, and the dialer sends
	// nothing before this answer. A failed answer fails the dialer, who
	// then sends on the stream; the receiver's copy ends at once.
	conn.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if _, err := conn.Write([]byte{dataAccepted}); err != nil {
		conn.Close()
	}
	conn.SetWriteDeadline(time.Time{})
	return true
}

// slotConn is a data connection the server accepted: it outlives the
// accepting goroutine (a transfer, then the data pool), and holds its slot
// of Config.MaxConnsPerIP until closed.
type slotConn struct {
	net.Conn
	release func() // idempotent
}

// Close closes the connection and gives back its slot.
func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// NetConn returns the connection under c.
func (c *slotConn) NetConn() net.Conn { return c.Conn }

// DataNetConn returns the connection under a data connection the server
// accepted (a *net.TCPConn or a *tls.Conn), for a caller that looks at its
// type, such as a copy that splices from a plain socket. Close the data
// connection itself, not what this returns: closing it gives back its
// connection slot.
func DataNetConn(c net.Conn) net.Conn {
	if sc, ok := c.(*slotConn); ok {
		return sc.Conn
	}
	return c
}

// offerToken sends ByteData and the token and waits for the server's
// answer, within the handshake timeout.
func offerToken(ctx context.Context, conn net.Conn, token []byte, cfg *Config) error {
	conn.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(pastTime) })
	defer stop()
	msg := append([]byte{ByteData}, token...)
	var ans [1]byte
	_, err := conn.Write(msg)
	if err == nil {
		_, err = io.ReadFull(conn, ans[:])
	}
	if err == nil && ans[0] != dataAccepted {
		err = fmt.Errorf("unexpected answer 0x%02x", ans[0])
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Time{})
	return nil
}

// DialData makes the data connection token was issued for, to addr (the
// server of the session the token came on). It returns once the server
// has accepted the token; the caller writes the bytes, and then closes
// the connection or, if exactly the announced bytes went, serves data
// calls on it (ServeDataCalls).
func DialData(ctx context.Context, addr string, token []byte, cfg *Config) (net.Conn, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if len(token) != DataTokenSize {
		return nil, fmt.Errorf("rpc: data token of %d bytes", len(token))
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	conn, err := dialServer(dctx, addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("rpc: data connection to %s: %w", addr, err)
	}
	if err := offerToken(ctx, conn, token, cfg); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rpc: data connection to %s refused: %w", addr, err)
	}
	return conn, nil
}

// ErrDataDialSkipped is what DataDialer.Dial returns, without dialing,
// while a failed dial to the address is remembered.
var ErrDataDialSkipped = errors.New("rpc: data connection skipped: an earlier one to this address failed")

// maxDataDialFailures bounds the addresses a DataDialer remembers.
const maxDataDialFailures = 256

// DataDialer makes a node's data connections (DialData) and remembers, per
// server address, a dial that failed, for Config.DataRedialDelay: until
// then Dial fails at once and the bytes go on the stream. Behind a load
// balancer most dials land on a server that did not offer the token, and
// each would cost a connect and a TLS handshake on that server. It is safe
// for concurrent use.
type DataDialer struct {
	cfg    *Config
	cfgErr error
	now    func() time.Time // tests move the clock

	mu     sync.Mutex
	failed map[string]time.Time // address: when its last dial failed
}

// NewDataDialer returns a DataDialer; a nil cfg means DefaultConfig(), an
// invalid one makes Dial fail.
func NewDataDialer(cfg *Config) *DataDialer {
	n, err := cfg.normalize()
	return &DataDialer{cfg: n, cfgErr: err, now: time.Now}
}

// Dial makes the data connection token was issued for, to addr, like
// DialData, unless a dial to addr failed within the redial delay: then it
// returns an error matching ErrDataDialSkipped. A failure is remembered
// unless ctx ended (the read itself went away).
func (d *DataDialer) Dial(ctx context.Context, addr string, token []byte) (net.Conn, error) {
	if d.cfgErr != nil {
		return nil, d.cfgErr
	}
	delay := d.cfg.DataRedialDelay
	if delay > 0 && d.skip(addr, delay) {
		return nil, fmt.Errorf("%w (%s)", ErrDataDialSkipped, addr)
	}
	conn, err := DialData(ctx, addr, token, d.cfg)
	if delay > 0 && len(token) == DataTokenSize {
		switch {
		case err == nil:
			d.forget(addr)
		case ctx.Err() == nil:
			d.remember(addr)
		}
	}
	return conn, err
}

// skip reports whether a dial to addr failed less than delay ago.
func (d *DataDialer) skip(addr string, delay time.Duration) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.failed[addr]
	if !ok {
		return false
	}
	if d.now().Sub(at) < delay {
		return true
	}
	delete(d.failed, addr)
	return false
}

// remember records a failed dial to addr, dropping the oldest record when
// the table is full.
func (d *DataDialer) remember(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed == nil {
		d.failed = make(map[string]time.Time)
	}
	if _, ok := d.failed[addr]; !ok && len(d.failed) >= maxDataDialFailures {
		var oldest string
		for a, at := range d.failed {
			if oldest == "" || at.Before(d.failed[oldest]) {
				oldest = a
			}
		}
		delete(d.failed, oldest)
	}
	d.failed[addr] = d.now()
}

// forget drops the record of a failed dial to addr.
func (d *DataDialer) forget(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.failed, addr)
}

// maxRecordPayload is a TLS record's most plaintext: a write no larger is
// one record, with nothing to gather.
const maxRecordPayload = 16 << 10

// WriteData writes p to dc in one socket write where dc is TLS over a
// RecordBatcher (rather than one write per 16 KiB record).
func WriteData(dc net.Conn, p []byte) (int, error) {
	b := BatcherOf(dc)
	if b == nil || len(p) <= maxRecordPayload {
		return dc.Write(p)
	}
	var n int
	if err := b.Gather(func() (err error) { n, err = dc.Write(p); return err }); err != nil {
		return 0, err
	}
	return n, nil
}

// dataCopyBuffer is the chunk CopyData moves per write when the kernel
// cannot move the bytes itself.
const dataCopyBuffer = 256 << 10

var dataBufPool = sync.Pool{New: func() any { b := make([]byte, dataCopyBuffer); return &b }}

// CopyData copies src to dst, one end of a data connection, until src's
// EOF: with the kernel's own copy (sendfile, splice) between plain sockets
// and files, else in large chunks, each one socket write (write, if not
// nil, writes a chunk, for a destination that batches its own way).
func CopyData(dst io.Writer, src io.Reader, write func([]byte) error) (int64, error) {
	if write == nil {
		_, dstTCP := dst.(*net.TCPConn)
		if dstTCP {
			return io.Copy(dst, src)
		}
		if dc, ok := dst.(net.Conn); ok {
			write = func(p []byte) error { _, err := WriteData(dc, p); return err }
		} else {
			write = func(p []byte) error { _, err := dst.Write(p); return err }
		}
	}
	bp := dataBufPool.Get().(*[]byte)
	defer dataBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := io.ReadFull(src, buf)
		if m > 0 {
			if err := write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
