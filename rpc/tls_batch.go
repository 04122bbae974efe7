package rpc

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// RecordBatcher sits under a tls.Conn (or is an HTTP connection itself)
// and gathers the records of one large write into a single write to the
// socket. crypto/tls cuts every Write into
// records of at most 16 KiB and writes each record on its own: a 128 KiB
// message costs eight syscalls, which on bulk streams is most of what TLS
// costs beyond the cipher itself. Between Begin and End, records are
// appended to a buffer; End writes them in one go.
//
// Outside Begin and End a RecordBatcher passes every write through. Writes
// that happen during a batch from elsewhere (a close_notify alert, a TLS
// 1.3 key update) join the batch in the order crypto/tls wrote them.
type RecordBatcher struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte

	// ra, if set, reads ahead so that crypto/tls, which asks for one
	// record at a time, gets several per syscall (ReadAhead). Only Read
	// uses it.
	ra *readAhead

	// probe, on a plain HTTP connection, defers net/http's one-byte
	// background reads (read_probe.go).
	probe *readProbe
}

// readAheadSize is the read-ahead of a bulk connection: a few records.
const readAheadSize = 64 << 10

// readAheadPool holds the read-ahead buffers of bulk connections between
// reads: a connection borrows one while bytes are buffered in it and gives
// it back once they are consumed, so an idle connection (a pooled data
// connection) holds none.
var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// readAhead is a RecordBatcher's read-ahead: bytes read from the socket
// and not yet consumed. Only the one goroutine reading uses it.
type readAhead struct {
	buf  *[]byte // nil when nothing is buffered
	r, w int
	err  error // the read error behind the buffered bytes
}

// read fills p from the buffered bytes, or reads ahead from c.
func (ra *readAhead) read(p []byte, c net.Conn) (int, error) {
	if ra.buf == nil {
		if err := ra.err; err != nil {
			ra.err = nil
			return 0, err
		}
		if len(p) >= readAheadSize {
			return c.Read(p)
		}
		ra.buf = readAheadPool.Get().(*[]byte)
		n, err := c.Read(*ra.buf)
		if n == 0 {
			readAheadPool.Put(ra.buf)
			ra.buf = nil
			return 0, err
		}
		ra.r, ra.w, ra.err = 0, n, err
	}
	n := copy(p, (*ra.buf)[ra.r:ra.w])
	ra.r += n
	if ra.r == ra.w {
		readAheadPool.Put(ra.buf)
		ra.buf = nil
	}
	return n, nil
}

// ReadAhead makes b read ahead, for a connection that carries bulk data
// (a data connection): crypto/tls then gets several records per read
// syscall. It must be called by the goroutine that reads b, before or
// between reads. RPC sessions do not read ahead: a buffer per connection
// would multiply by the fleet (64 KiB at 10,000 sessions is 640 MiB),
// while a data connection borrows its buffer only while bytes are in it.
func (b *RecordBatcher) ReadAhead() {
	if b.ra == nil {
		b.ra = &readAhead{}
	}
}

// Read implements net.Conn.
func (b *RecordBatcher) Read(p []byte) (int, error) {
	if b.ra != nil {
		return b.ra.read(p, b.Conn)
	}
	if b.probe != nil && len(p) == 1 {
		return b.probe.read(p, b.Conn.Read)
	}
	return b.Conn.Read(p)
}

// SetDeadline implements net.Conn.
func (b *RecordBatcher) SetDeadline(t time.Time) error {
	if b.probe != nil {
		b.probe.setDeadline(t)
	}
	return b.Conn.SetDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (b *RecordBatcher) SetReadDeadline(t time.Time) error {
	if b.probe != nil {
		b.probe.setDeadline(t)
	}
	return b.Conn.SetReadDeadline(t)
}

// Close implements net.Conn.
func (b *RecordBatcher) Close() error {
	if b.probe != nil {
		b.probe.close()
	}
	return b.Conn.Close()
}

// maxBatchKeep is the largest batch buffer kept between batches, in
// batchPool: a connection holds its batch buffer only while a batch is
// open, so that 10,000 idle sessions hold none.
const maxBatchKeep = 512 << 10

var batchPool sync.Pool

// NewRecordBatcher wraps c, the connection a tls.Conn is made over.
func NewRecordBatcher(c net.Conn) *RecordBatcher { return &RecordBatcher{Conn: c} }

// NetConn returns the connection under the batcher.
func (b *RecordBatcher) NetConn() net.Conn { return b.Conn }

// Write implements net.Conn: it appends to the batch if one is open, else
// writes through.
func (b *RecordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		if b.buf == nil {
			if v, ok := batchPool.Get().([]byte); ok {
				b.buf = v
			}
		}
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// Begin opens a batch. Only one goroutine may batch at a time: the one
// that owns writing to the tls.Conn.
func (b *RecordBatcher) Begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// End closes the batch and writes what it gathered in one write. Its error
// is the socket's; the TLS connection is unusable after one.
func (b *RecordBatcher) End() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	if cap(b.buf) <= maxBatchKeep {
		batchPool.Put(b.buf[:0])
	}
	b.buf = nil
	return err
}

// ReadFrom lets an HTTP response copy from a data connection with the
// connection's own ReadFrom (splice or sendfile between sockets) when no
// batch is open; it implements io.ReaderFrom.
func (b *RecordBatcher) ReadFrom(r io.Reader) (int64, error) {
	b.mu.Lock()
	batching := b.batching
	b.mu.Unlock()
	if rf, ok := b.Conn.(io.ReaderFrom); ok && !batching && b.ra == nil {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{b}, r)
}

// CloseWrite half-closes the connection where it can.
func (b *RecordBatcher) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Gather runs write with a batch open, then closes the batch: what write
// sends leaves in one socket write. write's error wins over the flush's.
func (b *RecordBatcher) Gather(write func() error) error {
	b.Begin()
	err := write()
	if ferr := b.End(); err == nil {
		err = ferr
	}
	return err
}

// BatcherOf returns the RecordBatcher c is, or the one under c, a
// *tls.Conn made over one (either possibly a data connection the server
// accepted); else nil.
func BatcherOf(c net.Conn) *RecordBatcher {
	switch c := DataNetConn(c).(type) {
	case *RecordBatcher:
		return c
	case *tls.Conn:
		b, _ := c.NetConn().(*RecordBatcher)
		return b
	}
	return nil
}

// BatchingListener returns a listener whose plain connections are
// RecordBatchers, so that WithBatch can gather what an HTTP handler writes
// (a chunk header, a chunk and its flush) into one socket write, and which
// defer net/http's one-byte background reads (read_probe.go) by
// cfg.ReadProbeDelay; nil means DefaultConfig.
func BatchingListener(inner net.Listener, cfg *Config) net.Listener {
	l := &batchingListener{Listener: inner, probeDelay: defaultReadProbeDelay}
	if cfg != nil && cfg.ReadProbeDelay > 0 {
		l.probeDelay = cfg.ReadProbeDelay
	}
	return l
}

// BatchingTLSListener returns a listener whose connections are TLS servers
// over RecordBatchers (BatcherOf finds them; BatcherContext carries them
// into an HTTP request).
func BatchingTLSListener(inner net.Listener, cfg *tls.Config) net.Listener {
	return &batchingListener{Listener: inner, cfg: cfg}
}

type batchingListener struct {
	net.Listener
	cfg        *tls.Config   // nil: plain connections
	probeDelay time.Duration // plain connections' read probe
}

func (l *batchingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.cfg == nil {
		return &RecordBatcher{Conn: c, probe: &readProbe{delay: l.probeDelay}}, nil
	}
	return tls.Server(NewRecordBatcher(c), l.cfg), nil
}

type batcherKey struct{}

// BatcherContext is an http.Server ConnContext: it records the connection's
// RecordBatcher, if any, for WithBatch.
func BatcherContext(ctx context.Context, c net.Conn) context.Context {
	if b := BatcherOf(c); b != nil {
		return context.WithValue(ctx, batcherKey{}, b)
	}
	return ctx
}

// WithBatch runs write with the records it produces on the connection of
// ctx (see BatcherContext) gathered into one socket write. Without a
// batcher it just runs write. write's error wins over the flush's.
func WithBatch(ctx context.Context, write func() error) error {
	b, _ := ctx.Value(batcherKey{}).(*RecordBatcher)
	if b == nil {
		return write()
	}
	return b.Gather(write)
}
