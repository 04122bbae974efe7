package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// sessionIDs numbers sessions process-wide.
var sessionIDs atomic.Uint64

// Session wraps one yamux session, from either end. Both ends may Call and
// OpenStream, and both may Serve a Mux: a node agent dials a server, serves
// its own Mux on the session, and calls the server's methods on it, while
// the server calls the node's methods down the same session.
type Session struct {
	id     uint64
	ys     *yamux.Session
	conn   net.Conn
	fc     *frameCoalescer // between yamux and conn: it knows when the peer last spoke
	cfg    *Config
	logger hclog.Logger
	seq    atomic.Uint64

	// idle holds unary streams that finished a call cleanly, for reuse:
	// a reused stream costs one write per call instead of a stream open,
	// a mode byte and a close each way. At most Config.MaxIdleStreams,
	// newest last; a stream unused for Config.IdleStreamTimeout is closed
	// by reapTimer (armed only while idle is not empty), so that a burst
	// of concurrent calls does not leave its streams open for ever.
	idleMu    sync.Mutex
	idle      []idleStream
	reapTimer *time.Timer

	// watch watches this session's unary calls in flight
	// (callwatch.go); it ends with the session.
	watch *callWatch

	// closed is cancelled once the session is known to be closed (Close,
	// Serve or IsClosed saw it): AfterClose hangs callbacks on it.
	closed     context.Context
	markClosed context.CancelFunc

	// keepAlive pings the peer every Config's yamux KeepAliveInterval
	// (keepalive.go): a timer, not a goroutine per session. Under idleMu.
	keepAlive *time.Timer
}

// idleStream is a unary stream kept for reuse, when it was kept, and
// whether it gave back its receive buffer since.
type idleStream struct {
	ys     *yamux.Stream
	since  time.Time
	shrunk bool
}

// idleShrinkAfter is how long a stream stays idle before it gives back
// yamux's receive buffer (grown to about twice the largest message the
// stream received): a stream in steady use keeps it, rather than
// allocating it again for every reply.
const idleShrinkAfter = time.Second

// takeIdle returns an idle unary stream, or nil.
func (s *Session) takeIdle() *yamux.Stream {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	n := len(s.idle)
	if n == 0 {
		return nil
	}
	ys := s.idle[n-1].ys
	s.idle[n-1] = idleStream{}
	s.idle = s.idle[:n-1]
	return ys
}

// putIdle keeps a stream whose call ended cleanly, or closes it when the
// pool is full or the session is gone. Unary streams never have a
// deadline: a call that was aborted by one is not kept.
func (s *Session) putIdle(ys *yamux.Stream) {
	s.idleMu.Lock()
	if len(s.idle) < s.cfg.MaxIdleStreams && !s.ys.IsClosed() {
		s.idle = append(s.idle, idleStream{ys: ys, since: time.Now()})
		if s.reapTimer == nil {
			s.reapTimer = time.AfterFunc(s.firstReap(), s.reapIdle)
		} else if len(s.idle) == 1 {
			s.reapTimer.Reset(s.firstReap())
		}
		s.idleMu.Unlock()
		return
	}
	s.idleMu.Unlock()
	ys.Close()
}

// firstReap is when the reaper first looks at a newly kept stream.
func (s *Session) firstReap() time.Duration {
	return min(idleShrinkAfter, s.cfg.IdleStreamTimeout)
}

// reapIdle closes the idle streams unused for IdleStreamTimeout (the
// oldest are first), makes those idle for idleShrinkAfter give back their
// receive buffers, and re-arms for the next one due.
func (s *Session) reapIdle() {
	now := time.Now()
	ttl := s.cfg.IdleStreamTimeout
	s.idleMu.Lock()
	n := 0
	for n < len(s.idle) && now.Sub(s.idle[n].since) >= ttl {
		n++
	}
	var stale []*yamux.Stream
	for i := range n {
		stale = append(stale, s.idle[i].ys)
	}
	rest := copy(s.idle, s.idle[n:])
	clear(s.idle[rest:])
	s.idle = s.idle[:rest]
	next := time.Duration(0)
	for i := range s.idle {
		is := &s.idle[i]
		age := now.Sub(is.since)
		due := ttl - age
		if !is.shrunk {
			if age >= idleShrinkAfter {
				is.ys.Shrink()
				is.shrunk = true
			} else {
				due = idleShrinkAfter - age
			}
		}
		if next == 0 || due < next {
			next = due
		}
	}
	if next > 0 {
		s.reapTimer.Reset(next)
	}
	if cap(s.idle) > 2*rest && cap(s.idle) > 4 {
		s.idle = append([]idleStream(nil), s.idle...)
	}
	s.idleMu.Unlock()
	for _, ys := range stale {
		ys.Close()
	}
}

// streamsInUse returns the session's open streams less the idle unary
// streams it keeps for reuse: an idle stream is not use. (A stream the
// remote keeps idle for its own reuse still counts, until the remote's
// IdleStreamTimeout closes it.)
func (s *Session) streamsInUse() int {
	s.idleMu.Lock()
	idle := len(s.idle)
	s.idleMu.Unlock()
	return s.ys.NumStreams() - idle
}

// closeIdle closes every idle stream.
func (s *Session) closeIdle() {
	s.idleMu.Lock()
	idle := s.idle
	s.idle = nil
	if s.reapTimer != nil {
		s.reapTimer.Stop()
	}
	if s.keepAlive != nil && s.ys.IsClosed() {
		s.keepAlive.Stop()
	}
	s.idleMu.Unlock()
	for _, is := range idle {
		is.ys.Close()
	}
}

// sessionKey is the context key of the session a request arrived on.
type sessionKey struct{}

// SessionFromContext returns the session a request arrived on, or nil for
// CallLocal, OpenLocal and raw (non-multiplexed) connections.
func SessionFromContext(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// Dial connects to a Server at addr: TCP (keepalive on, Nagle off), then
// ByteTLS and a TLS handshake if cfg.TLSConfig is set, then ByteMultiplex,
// and returns the client end of the yamux session once the server has
// answered a first ping (tls_dial.go): a server that refuses the session,
// for example the client's TLS certificate, makes Dial fail with an error
// matching ErrRefused. Dialing, the TLS handshake and the ping are bounded
// by cfg.DialTimeout and ctx. The session serves
// nothing until Serve is called; call it (with an empty Mux if there is
// nothing to serve), because yamux closes the whole session when a stream
// the peer opened stays unaccepted for its StreamOpenTimeout.
func Dial(ctx context.Context, addr string, cfg *Config) (*Session, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	conn, err := dialServer(dctx, addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial %s: %w", addr, err)
	}
	sess, err := dialSession(dctx, conn, cfg, cfg.TLSConfig != nil)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial %s: %w", addr, err)
	}
	return sess, nil
}

// dialServer opens a TCP connection to a server's RPC port, with TLS
// (ByteTLS and the handshake) when cfg has it; ctx bounds the dial.
func dialServer(ctx context.Context, addr string, cfg *Config) (net.Conn, error) {
	d := net.Dialer{KeepAlive: cfg.TCPKeepAlive}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	setTCPOptions(conn, cfg.TCPKeepAlive)
	if cfg.TLSConfig == nil {
		return conn, nil
	}
	tconn, err := clientTLS(ctx, conn, addr, cfg.TLSConfig)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return tconn, nil
}

// clientTLS writes ByteTLS and runs the client handshake.
func clientTLS(ctx context.Context, conn net.Conn, addr string, cfg *tls.Config) (*tls.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	if _, err := conn.Write([]byte{ByteTLS}); err != nil {
		return nil, err
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		} else {
			cfg.ServerName = addr
		}
	}
	tconn := tls.Client(NewRecordBatcher(conn), cfg)
	if err := handshakeApart(ctx, tconn); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tconn, nil
}

// NewClientSession starts the client end of a session over an existing
// connection: it writes ByteMultiplex (within cfg.HandshakeTimeout) and
// starts yamux. Tests use it over net.Pipe; the peer must be reading, for
// example Server.ServeConn. On error conn is closed.
func NewClientSession(conn net.Conn, cfg *Config) (*Session, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return newClientSession(conn, cfg, time.Now().Add(cfg.HandshakeTimeout))
}

func newClientSession(conn net.Conn, cfg *Config, deadline time.Time) (*Session, error) {
	conn.SetWriteDeadline(deadline)
	if _, err := conn.Write([]byte{ByteMultiplex}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rpc: write protocol byte: %w", err)
	}
	conn.SetWriteDeadline(time.Time{})
	fc := coalesceFrames(conn, cfg)
	ys, err := yamux.Client(fc, cfg.yamuxSession)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("rpc: start session: %w", err)
	}
	return wrapSession(ys, fc, cfg), nil
}

// wrapSession wraps a yamux session started over fc.
func wrapSession(ys *yamux.Session, fc *frameCoalescer, cfg *Config) *Session {
	id := sessionIDs.Add(1)
	conn := fc.Conn
	s := &Session{
		id:     id,
		ys:     ys,
		conn:   conn,
		fc:     fc,
		cfg:    cfg,
		logger: cfg.Logger.With("session", id, "remote", conn.RemoteAddr().String()),
		watch:  newCallWatch(cfg, ys.CloseChan()),
	}
	s.closed, s.markClosed = context.WithCancel(context.Background())
	s.startKeepAlive()
	return s
}

// ID returns the session's process-unique identifier. Key maps of sessions
// by it (or by the pointer), never by address text: a new session can reuse
// the address pair of one that is still being torn down.
func (s *Session) ID() uint64 { return s.id }

// Close closes the session and every stream on it.
func (s *Session) Close() error {
	err := s.ys.Close()
	s.noteClosed()
	return err
}

// noteClosed runs what a closed session owes: AfterClose callbacks, the
// end of its timers. Idempotent.
func (s *Session) noteClosed() {
	if s.closed.Err() != nil {
		return
	}
	s.markClosed()
	s.closeIdle() // and stops the keepalive

}

// AfterClose arranges for f to run in its own goroutine once the session
// is closed, like context.AfterFunc: when Close is called, when Serve
// returns because the session closed, or when IsClosed or the keepalive
// finds it closed, whichever comes first. (A session a Server accepted
// always gets there: the Server serves it until it closes, then closes
// it.) stop unregisters f and reports whether it did so before f started.
// It costs no goroutine while the session lives.
func (s *Session) AfterClose(f func()) (stop func() bool) {
	return context.AfterFunc(s.closed, f)
}

// CloseChan returns a channel that is closed when the session closes.
func (s *Session) CloseChan() <-chan struct{} { return s.ys.CloseChan() }

// IsClosed reports whether the session is closed.
func (s *Session) IsClosed() bool {
	if !s.ys.IsClosed() {
		return false
	}
	s.noteClosed()
	return true
}

// RemoteAddr returns the peer's address of the underlying connection.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// LocalAddr returns the local address of the underlying connection.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// NumStreams returns the number of open streams, in both directions.
func (s *Session) NumStreams() int { return s.ys.NumStreams() }

// openYamux opens a raw stream, mapping a dead session to ErrSessionClosed.
func (s *Session) openYamux() (*yamux.Stream, error) {
	ys, err := s.ys.OpenStream()
	if err != nil {
		if s.ys.IsClosed() || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrRemoteGoAway) {
			return nil, fmt.Errorf("%w: %w", ErrSessionClosed, err)
		}
		return nil, err
	}
	return ys, nil
}

// Call calls method on the peer: it sends one request on a unary stream
// and reads one response. The stream is one the session kept idle from an
// earlier call, or a new one (ByteRPC first); a stream whose call ended
// cleanly goes back on the idle list, any other is closed (spec.md,
// section 5). reply must be a pointer (nil discards the reply). ctx
// bounds the whole call, and Config.CallTimeout applies when ctx has no
// deadline; the handler's context gets the same deadline. When ctx ends
// first, Call closes the stream (cancelling the handler) and returns an
// error matching ctx's error. A handler error comes back as a
// *RemoteError; a session that dies mid-call gives an error matching
// ErrSessionClosed.
func (s *Session) Call(ctx context.Context, method string, args, reply any) error {
	_, err := s.call(ctx, method, args, reply)
	return err
}

// call is Call, also reporting whether a stream could be opened at all
// (the pool retries on a fresh session only when it could not).
func (s *Session) call(ctx context.Context, method string, args, reply any) (opened bool, err error) {
	if ctx.Err() != nil {
		return false, fmt.Errorf("rpc: %s: %w", method, ctxError(ctx))
	}
	dl := callDeadline(ctx, s.cfg.CallTimeout)
	if ys := s.takeIdle(); ys != nil {
		w := s.watch.add(ctx, dl, ys)
		err := unaryCall(ctx, dl, ys, s, s.cfg, method, s.seq.Add(1), args, reply, false)
		if !s.watch.remove(w) && reusable(ctx, dl, err) {
			s.putIdle(ys)
			return true, err
		}
		ys.Close()
		var re *RemoteError
		if err == nil || errors.As(err, &re) || callEnded(ctx, dl) {
			return true, err
		}
		// The idle stream had died (the peer reaped it, or the session
		// is going away): the request was not served; use a fresh stream.
	}
	ys, err := s.openYamux()
	if err != nil {
		return false, fmt.Errorf("rpc: %s: %w", method, err)
	}
	w := s.watch.add(ctx, dl, ys)
	err = unaryCall(ctx, dl, ys, s, s.cfg, method, s.seq.Add(1), args, reply, true)
	if !s.watch.remove(w) && reusable(ctx, dl, err) {
		s.putIdle(ys)
	} else {
		ys.Close()
	}
	return true, err
}

// reusable reports whether a stream is in a clean state after a call: the
// exchange completed (a handler error included) and the call did not end
// early (ctx or its deadline dl).
func reusable(ctx context.Context, dl time.Time, err error) bool {
	if callEnded(ctx, dl) {
		return false
	}
	if err == nil {
		return true
	}
	var re *RemoteError
	return errors.As(err, &re) && re.Code != codeRequestTooLarge
}

// OpenStream starts a streaming call of method on the peer: it opens a
// stream, writes ByteStreaming and the header, waits for the peer's ack
// (within Config.HandshakeTimeout) and sends args as the first message,
// which the handler gets from its first Recv. An unknown method returns an
// error matching ErrUnknownMethod. ctx bounds the whole stream: when it
// ends the stream is closed and the handler cancelled. The caller must Close
// the stream when done with it.
func (s *Session) OpenStream(ctx context.Context, method string, args any) (*Stream, error) {
	st, _, err := s.openStream(ctx, method, args)
	return st, err
}

// openStream is OpenStream, also reporting whether a stream was opened.
func (s *Session) openStream(ctx context.Context, method string, args any) (st *Stream, opened bool, err error) {
	if ctx.Err() != nil {
		return nil, false, fmt.Errorf("rpc: %s: %w", method, ctxError(ctx))
	}
	ys, err := s.openYamux()
	if err != nil {
		return nil, false, fmt.Errorf("rpc: %s: %w", method, err)
	}
	br, err := streamHandshake(ctx, ys, s, s.cfg, method, args)
	if err != nil {
		ys.Close()
		return nil, true, err
	}
	st, err = startCallerStream(ctx, ys, br, s, s.cfg, method, args, true)
	return st, true, err
}

// Serve accepts the streams the peer opens and serves mux on them, each in
// its own goroutine. The mode byte and header of a stream are read in that
// goroutine under Config.HandshakeTimeout, so a stalled or garbage stream
// never blocks the accept loop. Handlers' contexts derive from ctx and
// carry the session (SessionFromContext). Serve returns when the session
// closes (an error matching ErrSessionClosed) or ctx ends (ctx's error),
// after the handlers it started have returned; it does not close the
// session.
func (s *Session) Serve(ctx context.Context, mux *Mux) error {
	if mux == nil {
		return errors.New("rpc: Serve needs a Mux")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		ys, err := s.ys.AcceptStreamWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.IsClosed() {
				return ErrSessionClosed
			}
			// The ack of one stream could not be sent; the session
			// itself is still up.
			s.logger.Debug("accepting stream failed", "error", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveStream(ctx, ys, mux)
		}()
	}
}

// serveStream reads the mode byte of an accepted stream and serves it.
func (s *Session) serveStream(ctx context.Context, ys *yamux.Stream, mux *Mux) {
	defer ys.Close()
	ys.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var b [1]byte
	if _, err := io.ReadFull(ys, b[:]); err != nil {
		s.logger.Debug("stream sent no mode byte", "error", err)
		return
	}
	switch mode := b[0]; mode {
	case ByteRPC:
		serveUnary(ctx, ys, mux, s, s.cfg, s.logger)
	case ByteStreaming:
		br := bufio.NewReaderSize(ys, readBufferSize)
		serveStreaming(ctx, ys, br, mux, s, s.cfg, s.logger)
	default:
		s.logger.Warn("closing stream", "error", ErrUnknownProtocol, "byte", fmt.Sprintf("0x%02x", mode))
	}
}

// setTCPOptions turns on TCP keepalive, every keepAlive, and turns off
// Nagle.
func setTCPOptions(conn net.Conn, keepAlive time.Duration) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(keepAlive)
	}
}
