package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// callDeadline is when a call on ctx must be done: ctx's deadline, or
// the default call timeout from now.
func callDeadline(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}

// callEnded reports whether a call on ctx with deadline dl must stop.
func callEnded(ctx context.Context, dl time.Time) bool {
	return ctxEnded(ctx) || !time.Now().Before(dl)
}

// callError classifies the error a call ended with: the context's error
// or the call's expiry first (its abort is what usually broke the read),
// then a dead session.
func callError(ctx context.Context, dl time.Time, sess *Session, method string, err error) error {
	if ctxEnded(ctx) {
		return fmt.Errorf("rpc: %s: %w", method, ctxError(ctx))
	}
	if !time.Now().Before(dl) {
		return fmt.Errorf("rpc: %s: %w", method, ErrTimeout)
	}
	if sess != nil && sess.IsClosed() {
		return fmt.Errorf("rpc: %s: %w", method, ErrSessionClosed)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("rpc: %s: %w", method, err)
}

// unaryCall runs one request/response exchange on conn. The caller owns
// conn and bounds the exchange: it has the call watched (callwatch.go),
// which aborts conn's I/O once dl (callDeadline) passes or ctx ends.
// modeByte prefixes the request with ByteRPC, for a fresh stream.
func unaryCall(ctx context.Context, dl time.Time, conn net.Conn, sess *Session, cfg *Config, method string, seq uint64, args, reply any, modeByte bool) error {
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	if modeByte {
		e.out = append(e.out, ByteRPC)
	}
	if err := appendRequest(e, cfg, method, seq, dl, args, wantsJSON(reply)); err != nil {
		return err
	}
	if _, err := writeMessage(conn, e.bytes()); err != nil {
		return callError(ctx, dl, sess, method, err)
	}
	br := getReader(conn)
	defer putReader(br)
	_, err := readResponse(ctx, dl, br, sess, cfg, method, seq, reply)
	return err
}

// appendRequest appends a request, its header and args, to e: what a
// unary call and a data call send. asJSON asks for the reply's JSON form.
func appendRequest(e *encoder, cfg *Config, method string, seq uint64, dl time.Time, args any, asJSON bool) error {
	hdr := requestHeader{Method: method, Seq: seq, Timeout: encodeTimeout(dl, true), JSON: asJSON}
	if err := e.appendFrame(kindData, &hdr, cfg.MaxMessageSize); err != nil {
		return fmt.Errorf("rpc: %s: %w", method, err)
	}
	if err := e.appendFrame(kindData, args, cfg.MaxMessageSize); err != nil {
		return fmt.Errorf("rpc: %s: %w", method, err)
	}
	return nil
}

// readResponse reads the response to request seq from br: its header and,
// on success, the reply, decoded into reply. header reports whether the
// response header came (the callee answered, well or not): a call that
// fails before that was not served.
func readResponse(ctx context.Context, dl time.Time, br *bufio.Reader, sess *Session, cfg *Config, method string, seq uint64, reply any) (header bool, err error) {
	var rh responseHeader
	if err := readDataFrame(br, cfg.MaxMessageSize, &rh); err != nil {
		return false, callError(ctx, dl, sess, method, err)
	}
	if rerr := remoteFromWire(rh.Error, rh.Code); rerr != nil {
		if callEnded(ctx, dl) {
			// The handler most likely reports our own deadline or
			// cancellation; say so the way a local expiry would.
			return true, callError(ctx, dl, sess, method, rerr)
		}
		// Seq 0 is what a callee answers before it could read the
		// request header.
		if rh.Seq != seq && rh.Seq != 0 {
			return true, fmt.Errorf("rpc: %s: %w: response for request %d, want %d", method, ErrProtocol, rh.Seq, seq)
		}
		return true, rerr
	}
	if rh.Seq != seq {
		return true, fmt.Errorf("rpc: %s: %w: response for request %d, want %d", method, ErrProtocol, rh.Seq, seq)
	}
	kind, body, err := readFrame(br, cfg.MaxMessageSize)
	if err != nil {
		return true, callError(ctx, dl, sess, method, err)
	}
	if kind != kindData {
		return true, fmt.Errorf("rpc: %s: %w: unexpected frame kind 0x%02x", method, ErrProtocol, kind)
	}
	if err := decode(body, reply); err != nil {
		return true, fmt.Errorf("rpc: %s: %w", method, err)
	}
	return true, nil
}

// handlerContext builds a handler's context: parent (the serving side's
// lifetime), the session, and the caller's deadline.
func handlerContext(parent context.Context, sess *Session, timeout int64) (context.Context, context.CancelFunc) {
	ctx := parent
	if sess != nil {
		ctx = context.WithValue(ctx, sessionKey{}, sess)
	}
	if timeout > 0 {
		return context.WithTimeout(ctx, time.Duration(timeout))
	}
	return context.WithCancel(ctx)
}

// serveUnary serves the requests of a ByteRPC stream or connection, one
// after the other, until the caller closes it or something breaks. The
// mode byte was read under the handshake deadline, which still applies to
// the first request header. The caller closes conn.
//
// The stream holds no read buffer between requests nor while a handler
// runs (reqReader): a caller keeps its streams idle for reuse
// (Session.putIdle) and a node keeps a blocking query in flight, and a
// 4 KiB bufio.Reader for each would be a good part of what an idle node
// session costs a server.
func serveUnary(ctx context.Context, conn net.Conn, mux *Mux, sess *Session, cfg *Config, logger hclog.Logger) {
	rd := &reqReader{conn: conn, pooled: true}
	rd.fb.r = conn
	defer rd.close()
	for first := true; ; first = false {
		if !first && rd.br == nil && !rd.fb.pending {
			// Between requests the connection may idle (its read
			// deadline is clear since the request's body was read);
			// session keepalive (or TCP keepalive) notices a dead peer.
			if _, err := io.ReadFull(conn, rd.fb.b[:]); err != nil {
				return
			}
			rd.fb.pending = true
		}
		if !serveRequest(ctx, conn, rd, mux, sess, cfg, logger, 0, first) {
			return
		}
	}
}

// reqReader reads the requests of a unary connection. A pooled one takes
// its bufio.Reader from the pool for the length of reading a request and
// gives it back (release) once the request is read, when nothing more is
// buffered; firstByte holds a byte read without it, by the wait for the
// next request or by the caller watch.
type reqReader struct {
	conn   net.Conn
	br     *bufio.Reader // nil while released
	fb     firstByte
	pooled bool
}

// reader returns the bufio.Reader, taking one from the pool if needed.
func (r *reqReader) reader() *bufio.Reader {
	if r.br == nil {
		r.br = getReader(&r.fb)
	}
	return r.br
}

// release gives the reader back to the pool when it holds nothing.
func (r *reqReader) release() {
	if r.pooled && r.br != nil && r.br.Buffered() == 0 {
		putReader(r.br)
		r.br = nil
	}
}

// close gives the reader back, whatever it holds.
func (r *reqReader) close() {
	if r.pooled && r.br != nil {
		putReader(r.br)
		r.br = nil
	}
}

// peek waits for a byte without consuming it: it stays buffered for the
// next request.
func (r *reqReader) peek() error {
	if r.br != nil {
		_, err := r.br.Peek(1)
		return err
	}
	if r.fb.pending {
		return nil
	}
	n, err := r.conn.Read(r.fb.b[:])
	if n == 1 {
		r.fb.pending = true
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// recvShrinkMin is the request size from which a stream serving unary
// calls gives back yamux's receive buffer once the request is read: yamux
// keeps it, grown to about twice the largest message the stream
// received, for the stream's life, and a caller keeps its streams idle
// for reuse. Below it the buffer is kept: reallocating it for every small
// request costs more than the few kilobytes it holds. (The caller's end
// of an idle stream gives its buffer back after idleShrinkAfter.)
const recvShrinkMin = 2 << 10

// shrinkAfterLarge gives back conn's receive buffer when conn is a yamux
// stream that just delivered a message of size bytes, at least
// recvShrinkMin, and br holds nothing more of it.
func shrinkAfterLarge(conn net.Conn, size int, br *bufio.Reader) {
	if size < recvShrinkMin || br.Buffered() > 0 {
		return
	}
	if ys, ok := conn.(*yamux.Stream); ok {
		ys.Shrink()
	}
}

// firstByte reads a byte read ahead, then from r.
type firstByte struct {
	b       [1]byte
	pending bool
	r       io.Reader
}

func (f *firstByte) Read(p []byte) (int, error) {
	if f.pending && len(p) > 0 {
		p[0] = f.b[0]
		f.pending = false
		return 1, nil
	}
	return f.r.Read(p)
}

// serveCalls serves requests on conn one after the other: bulk methods on
// a data connection (ServeDataCalls), which may idle for at most idle
// before a request header, first one included. br stays the caller's.
func serveCalls(ctx context.Context, conn net.Conn, br *bufio.Reader, mux *Mux, sess *Session, cfg *Config, logger hclog.Logger, idle time.Duration) {
	rd := &reqReader{conn: conn, br: br}
	for first := true; serveRequest(ctx, conn, rd, mux, sess, cfg, logger, idle, first); first = false {
	}
}

// serveRequest reads and serves one request from rd: a unary method when
// idle is 0, a bulk method otherwise (then waiting at most idle for the
// request header). It reports whether conn can serve another.
func serveRequest(ctx context.Context, conn net.Conn, rd *reqReader, mux *Mux, sess *Session, cfg *Config, logger hclog.Logger, idle time.Duration, first bool) bool {
	br := rd.reader()
	switch {
	case idle > 0:
		conn.SetReadDeadline(time.Now().Add(idle))
	case !first:
		// Between requests the connection may idle; session keepalive
		// (or TCP keepalive) is what notices a dead peer.
		conn.SetReadDeadline(time.Time{})
	}
	var hdr requestHeader
	if err := readDataFrame(br, cfg.MaxMessageSize, &hdr); err != nil {
		var fe *frameError
		if errors.As(err, &fe) {
			// Answer, so the caller sees 413 rather than a hang; the
			// header was garbage anyway, so do not wait for its body.
			writeResponse(conn, cfg, 0, tooLargeError(fe.size, fe.limit), nil)
			return false
		}
		if !errors.Is(err, io.EOF) && !(idle > 0 && (timedOut(err) || ctx.Err() != nil)) {
			logger.Debug("reading request header failed", "error", err)
		}
		return false
	}

	// The arguments must follow within the caller's own timeout.
	bodyTimeout := cfg.CallTimeout
	if hdr.Timeout > 0 {
		bodyTimeout = time.Duration(hdr.Timeout)
	}
	conn.SetReadDeadline(time.Now().Add(bodyTimeout))
	kind, body, err := readFrame(br, cfg.MaxMessageSize)
	if err != nil {
		var fe *frameError
		if errors.As(err, &fe) {
			cfg.Counters.frameOverLimit()
			discardFrame(br, fe, func(t time.Time) { conn.SetReadDeadline(t) }, cfg.HandshakeTimeout)
			writeResponse(conn, cfg, hdr.Seq, tooLargeError(fe.size, fe.limit), nil)
			return false
		}
		logger.Debug("reading request body failed", "method", hdr.Method, "error", err)
		return false
	}
	conn.SetReadDeadline(time.Time{})
	if kind != kindData {
		logger.Debug("bad request frame", "method", hdr.Method, "kind", kind)
		return false
	}
	shrinkAfterLarge(conn, len(body), br)
	rd.release()
	if idle > 0 {
		return serveBulk(ctx, conn, rd, mux, sess, cfg, logger, &hdr, body)
	}
	return serveOne(ctx, conn, rd, mux, sess, cfg, logger, &hdr, body)
}

// serveOne runs one decoded request and writes the response. It reports
// whether the connection can serve another request.
func serveOne(ctx context.Context, conn net.Conn, rd *reqReader, mux *Mux, sess *Session, cfg *Config, logger hclog.Logger, hdr *requestHeader, body []byte) bool {
	u := mux.lookupUnary(hdr.Method)
	if u == nil {
		return writeResponse(conn, cfg, hdr.Seq, unknownMethodError(hdr.Method), nil) == nil
	}
	req := u.newReq()
	if err := decode(body, req); err != nil {
		return writeResponse(conn, cfg, hdr.Seq, &RemoteError{Code: 400, Message: err.Error()}, nil) == nil
	}
	hctx, cancel := handlerContext(ctx, sess, hdr.Timeout)
	defer cancel()
	// Past the caller's deadline nobody reads the response.
	if dl, ok := hctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	var w *callerWatch
	if u.endWithSession && sess != nil {
		defer sess.AfterClose(cancel)()
	} else {
		w = watchCaller(conn, rd, cancel, cfg.HandlerWatchDelay)
	}
	var resp any
	var herr error
	if hdr.JSON {
		out := &JSON{}
		resp, herr = out, mux.callJSON(hctx, hdr.Method, u, req, out)
	} else {
		resp = u.newResp()
		herr = callUnary(hctx, logger, hdr.Method, u, req, resp)
	}
	werr := writeResponse(conn, cfg, hdr.Seq, herr, resp)
	if (w != nil && w.stop()) || werr != nil {
		if werr != nil {
			logger.Debug("writing response failed", "method", hdr.Method, "error", werr)
		}
		return false
	}
	conn.SetWriteDeadline(time.Time{})
	return true
}

// writeResponse writes a response header and, when herr is nil, the reply.
// A reply that cannot be encoded or is too large is answered with an error
// instead, so the caller never waits for a reply that will not come.
func writeResponse(conn net.Conn, cfg *Config, seq uint64, herr error, reply any) error {
	e := getEncoder()
	defer putEncoder(e)
	if herr == nil {
		e.reset()
		err := e.appendFrame(kindData, &responseHeader{Seq: seq}, cfg.MaxMessageSize)
		if err == nil {
			err = e.appendFrame(kindData, reply, cfg.MaxMessageSize)
		}
		if err == nil {
			_, err = WriteData(conn, e.bytes())
			return err
		}
		herr = err
		if errors.Is(err, ErrMessageTooLarge) {
			herr = &RemoteError{Code: codeRequestTooLarge, Message: err.Error()}
		}
	}
	e.reset()
	rh := responseHeader{Seq: seq, Error: truncateMessage(herr.Error(), cfg.MaxMessageSize), Code: errorCode(herr)}
	if err := e.appendFrame(kindData, &rh, cfg.MaxMessageSize); err != nil {
		return err
	}
	_, err := writeMessage(conn, e.bytes())
	return err
}

// callerWatch watches a unary connection while its handler runs: the
// caller sends nothing until it has the response, so a read that ends
// means the caller went away (it closed the stream, its context ended, or
// the session died), and the handler's context is cancelled and the
// response write aborted.
type callerWatch struct {
	conn     net.Conn
	rd       *reqReader
	cancel   context.CancelFunc
	timer    *time.Timer
	done     chan struct{}
	stopping atomic.Bool
	gone     atomic.Bool
}

// watchCaller starts watching conn after delay (Config.HandlerWatchDelay):
// most handlers finish sooner, and skipping the watch saves a goroutine
// and two deadline changes per call.
func watchCaller(conn net.Conn, rd *reqReader, cancel context.CancelFunc, delay time.Duration) *callerWatch {
	w := &callerWatch{conn: conn, rd: rd, cancel: cancel, done: make(chan struct{})}
	w.timer = time.AfterFunc(delay, w.watch)
	return w
}

// watch runs in the timer's goroutine until the caller sends something,
// goes away, or stop aborts the read.
func (w *callerWatch) watch() {
	defer close(w.done)
	// Peek consumes nothing: bytes of a next request stay buffered.
	if err := w.rd.peek(); err == nil || w.stopping.Load() {
		return
	}
	w.gone.Store(true)
	w.cancel()
	w.conn.SetWriteDeadline(pastTime)
}

// stop ends the watch and reports whether the caller went away.
func (w *callerWatch) stop() (gone bool) {
	if w.timer.Stop() {
		return false // never started
	}
	w.stopping.Store(true)
	w.conn.SetReadDeadline(pastTime)
	<-w.done
	w.conn.SetReadDeadline(time.Time{})
	return w.gone.Load()
}
