package rpc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// streamRole says which end of a streaming call a Stream is.
type streamRole int

const (
	// roleCaller is the end returned by OpenStream and OpenLocal.
	roleCaller streamRole = iota

	// roleHandler is the end a StreamHandler gets.
	roleHandler
)

// Stream is one streaming call: a bidirectional sequence of msgpack
// messages, each length-prefixed and limited to Config.MaxMessageSize.
// One goroutine may Send while another Recvs; Close may be called from any
// goroutine and unblocks both.
//
// Every Stream has a reader goroutine (the pump) that reads ahead by one
// message. That is what lets the handler's Context end as soon as the
// caller goes away, even while the handler only sends, and lets a blocked
// Send return once the peer has gone: the goroutine exits when the stream
// ends.
type Stream struct {
	conn   net.Conn
	br     *bufio.Reader
	cfg    *Config
	sess   *Session
	role   streamRole
	method string

	ctx    context.Context
	cancel context.CancelFunc

	// parent is the context given to OpenStream (caller role).
	parent context.Context

	// stopWatch stops the watch on the caller's context (caller role).
	// Guarded by mu: the watch may fire before it is stored.
	stopWatch func() bool

	sendMu sync.Mutex

	// mu guards the connection deadlines against an abort: once aborted,
	// a deadline is never moved out again.
	mu           sync.Mutex
	readAborted  bool
	writeAborted bool
	// lingering: the handler is done and waits, bounded, for the
	// caller's close; the pump leaves that read deadline alone.
	lingering bool

	frames    chan Msg      // pump → Recv, unbuffered
	pumpDone  chan struct{} // closed when the pump exits; recvErr is set
	recvErr   error
	peerEnded bool // caller role: the handler's trailer arrived

	finished chan struct{} // handler role: the handler returned

	closed    chan struct{} // closed by closeWith
	closeErr  error
	closeOnce sync.Once

	recvDL *deadline
}

// newStream wraps conn. br, if non-nil, is a reader over conn that may
// already hold buffered bytes.
func newStream(conn net.Conn, br *bufio.Reader, cfg *Config, role streamRole, ctx context.Context, cancel context.CancelFunc, method string) *Stream {
	if br == nil {
		br = bufio.NewReaderSize(conn, readBufferSize)
	}
	return &Stream{
		conn:     conn,
		br:       br,
		cfg:      cfg,
		role:     role,
		method:   method,
		ctx:      ctx,
		cancel:   cancel,
		frames:   make(chan Msg),
		pumpDone: make(chan struct{}),
		finished: make(chan struct{}),
		closed:   make(chan struct{}),
		recvDL:   newDeadline(),
	}
}

// Context returns the stream's context. On the handler side it is the
// handler's context: it carries the caller's deadline and is cancelled when
// the caller closes the stream or goes away, when the session closes, or
// when the server shuts down. On the caller side it is derived from the
// context given to OpenStream and is cancelled when the stream ends.
func (s *Stream) Context() context.Context { return s.ctx }

// Send encodes v and sends it as one message. Only one goroutine may send
// at a time. A message larger than Config.MaxMessageSize fails with
// ErrMessageTooLarge before anything is written, leaving the stream usable;
// any write error closes the stream. Send returns io.EOF when the peer has
// ended the stream (on the caller side, Recv then tells how), an error
// matching ErrSessionClosed when the session died, and ErrStreamClosed
// after Close.
func (s *Stream) Send(v any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.sendLocked(kindData, v)
}

func (s *Stream) sendLocked(kind byte, v any) error {
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	if err := e.appendFrame(kind, v, s.cfg.MaxMessageSize); err != nil {
		return err
	}
	return s.writeLocked(e.bytes())
}

// writeLocked writes one whole message; sendMu is held. Any write error
// closes the stream.
func (s *Stream) writeLocked(frame []byte) error {
	if err := s.sendState(); err != nil {
		return err
	}
	if _, err := writeMessage(s.conn, frame); err != nil {
		err = s.sendError(err)
		s.closeWith(err)
		return err
	}
	return nil
}

// sendState returns why nothing can be sent any more, or nil.
func (s *Stream) sendState() error {
	select {
	case <-s.closed:
		return s.closeErr
	default:
	}
	select {
	case <-s.finished:
		return ErrStreamClosed
	default:
	}
	if s.role == roleCaller {
		select {
		case <-s.pumpDone:
			return s.pumpEndForSend()
		default:
		}
	}
	return nil
}

// pumpEndForSend is what Send reports once the pump has ended: io.EOF if
// the handler ended the stream (Recv tells how), else why it broke.
func (s *Stream) pumpEndForSend() error {
	if s.role == roleHandler || s.peerEnded {
		return io.EOF
	}
	return s.recvErr
}

// sendError classifies a write error.
func (s *Stream) sendError(err error) error {
	select {
	case <-s.closed:
		return s.closeErr
	default:
	}
	if s.sess != nil && s.sess.IsClosed() {
		return fmt.Errorf("rpc: %s: %w", s.method, ErrSessionClosed)
	}
	select {
	case <-s.pumpDone:
		// The peer ended the stream (or went away) first.
		return s.pumpEndForSend()
	default:
	}
	return fmt.Errorf("rpc: %s: send: %w", s.method, err)
}

// Recv receives one message and decodes it into v (nil discards it). Only
// one goroutine may receive at a time. Decode into a fresh value: fields
// missing from the message keep what v held. A raw message (SendRaw) is
// copied into v if v is a *[]byte, and is a protocol error otherwise.
//
// On the caller side Recv returns io.EOF once the handler returned nil, a
// *RemoteError carrying the handler's error, an error matching
// ErrSessionClosed if the session died, and io.ErrUnexpectedEOF (wrapped)
// if the stream ended without the handler's final message. On the handler
// side it returns io.EOF once the caller closed the stream. After Close it
// returns ErrStreamClosed, and ErrTimeout once a deadline set with
// SetDeadline has passed.
func (s *Stream) Recv(v any) error {
	m, err := s.RecvMsg()
	if err != nil {
		return err
	}
	err = m.Decode(v)
	m.Release() // decoding copied what v keeps
	return err
}

// RecvMsg receives one message without decoding it, with the same results
// as Recv. The caller reads it (Msg.Raw, Msg.Bytes, Msg.Decode) and then
// calls Msg.Release; a relay passes it on with SendMsg instead.
func (s *Stream) RecvMsg() (Msg, error) {
	// A terminal result the pump already has wins over local state.
	select {
	case <-s.pumpDone:
		return Msg{}, s.recvErr
	default:
	}
	select {
	case m := <-s.frames:
		return m, nil
	case <-s.pumpDone:
		return Msg{}, s.recvErr
	case <-s.closed:
		return Msg{}, s.closeErr
	case <-s.recvDL.wait():
		return Msg{}, ErrTimeout
	}
}

// Close ends the stream. It is idempotent and unblocks a pending Recv or
// Send. On the caller side it is how a call is ended early (the handler's
// context is cancelled); a handler need not call it.
func (s *Stream) Close() error {
	s.closeWith(ErrStreamClosed)
	return nil
}

// SetDeadline sets the deadline for Recv and Send; the zero time clears it.
// Past the deadline Recv returns ErrTimeout; a Send blocked past it fails
// and closes the stream.
func (s *Stream) SetDeadline(t time.Time) error {
	select {
	case <-s.closed:
		return s.closeErr
	default:
	}
	s.recvDL.set(t)
	s.setWriteDeadline(t)
	return nil
}

// closeWith closes the stream with err as the result of later calls.
func (s *Stream) closeWith(err error) {
	s.closeOnce.Do(func() {
		s.closeErr = err
		close(s.closed)
		s.stopCtxWatch()
		s.abortRead()
		s.abortWrite()
		s.conn.Close()
		s.cancel()
		s.recvDL.stop()
	})
}

// stopCtxWatch stops watching the caller's context.
func (s *Stream) stopCtxWatch() {
	s.mu.Lock()
	stop := s.stopWatch
	s.stopWatch = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// abortRead makes a blocked or future read fail at once.
func (s *Stream) abortRead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readAborted = true
	s.conn.SetReadDeadline(pastTime)
}

// abortWrite makes a blocked or future write fail at once.
func (s *Stream) abortWrite() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeAborted = true
	s.conn.SetWriteDeadline(pastTime)
}

// setReadDeadline moves the read deadline unless reads were aborted.
func (s *Stream) setReadDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.readAborted {
		s.conn.SetReadDeadline(t)
	}
}

// setWriteDeadline moves the write deadline unless writes were aborted.
func (s *Stream) setWriteDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.writeAborted {
		s.conn.SetWriteDeadline(t)
	}
}

// pump reads messages and hands them to Recv, one at a time, until the
// stream ends. It is the only reader of the connection.
func (s *Stream) pump() {
	defer close(s.pumpDone)
	awaitArgs := s.role == roleHandler
	if awaitArgs {
		// The arguments follow the ack at once; a caller that sends
		// nothing must not hold the handler forever.
		s.setReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	}
	for {
		bounded := false
		if !awaitArgs {
			var err error
			if bounded, err = s.awaitMessage(); err != nil {
				s.recvErr = s.pumpError(err)
				return
			}
		}
		kind, body, err := readFrame(s.br, s.cfg.MaxMessageSize)
		if err != nil {
			s.recvErr = s.pumpError(err)
			return
		}
		if bounded {
			s.messageDeadline(0)
		}
		if awaitArgs {
			awaitArgs = false
			s.setReadDeadline(time.Time{})
		}
		if kind == kindEnd {
			s.recvErr = s.trailer(body)
			return
		}
		select {
		case s.frames <- Msg{kind: kind, body: body}:
		case <-s.finished:
			// The handler returned: discard until the caller closes.
			putBody(body)
		case <-s.closed:
			putBody(body)
			s.recvErr = s.closeErr
			return
		}
	}
}

// slowestMessageRate is the least rate at which the rest of a message
// must come once it has begun, beyond HandshakeTimeout: a 4 MiB message
// may take 5 s + 64 s on a crawling link, half a message never ends.
const slowestMessageRate = 64 << 10 // bytes per second

// awaitMessage waits, with no deadline (a follow may be quiet for
// hours), for the first byte of the next message. Once it has come, the
// rest must come within HandshakeTimeout plus its size at
// slowestMessageRate: a peer that sends a message's header and then
// nothing would otherwise hold the stream, and whatever waits on it, for
// ever, while the session looks healthy. A message already whole in the
// read buffer, the common case for small frames, arms nothing; bounded
// says whether a deadline was armed.
func (s *Stream) awaitMessage() (bounded bool, err error) {
	if _, err := s.br.Peek(1); err != nil {
		return false, err
	}
	d := s.cfg.HandshakeTimeout
	if n := s.br.Buffered(); n >= frameHeaderSize {
		hdr, _ := s.br.Peek(frameHeaderSize)
		size := uint64(binary.BigEndian.Uint32(hdr))
		if uint64(n) >= frameHeaderSize+size {
			return false, nil
		}
		d += time.Duration(min(size, uint64(s.cfg.MaxMessageSize))) * time.Second / slowestMessageRate
	}
	s.messageDeadline(d)
	return true, nil
}

// messageDeadline arms the bound on the rest of a message, or clears it
// (d 0), unless reads were aborted or the stream lingers for the
// caller's close (its own bound).
func (s *Stream) messageDeadline(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readAborted || s.lingering {
		return
	}
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	s.conn.SetReadDeadline(t)
}

// trailer handles the final message of a handler (caller role).
func (s *Stream) trailer(body []byte) error {
	if s.role != roleCaller {
		err := fmt.Errorf("%w: end frame from caller", ErrProtocol)
		s.closeWith(err)
		return err
	}
	var tr streamTrailer
	if err := decode(body, &tr); err != nil {
		s.closeWith(err)
		return err
	}
	// The call is over: let the handler's side finish at once, and make a
	// Send racing with this return io.EOF.
	s.peerEnded = true
	s.release()
	if err := remoteFromWire(tr.Error, tr.Code); err != nil {
		if s.parent != nil && ctxEnded(s.parent) {
			// The handler most likely reports our own deadline or
			// cancellation; say so the way a local expiry would.
			return fmt.Errorf("rpc: %s: %w", s.method, ctxError(s.parent))
		}
		return err
	}
	return io.EOF
}

// release frees the connection of a stream whose result is known, without
// recording a local close: Recv keeps returning the result.
func (s *Stream) release() {
	s.stopCtxWatch()
	s.abortWrite()
	s.conn.Close()
	s.cancel()
}

// pumpError classifies the error that ended the pump and reacts to it.
func (s *Stream) pumpError(err error) error {
	select {
	case <-s.closed:
		return s.closeErr
	default:
	}
	var fe *frameError
	if s.role == roleHandler {
		if errors.As(err, &fe) {
			s.cfg.Counters.frameOverLimit()
			// Throw the oversized frame away so that the caller's Send
			// completes and it can read the handler's answer.
			discardFrame(s.br, fe, s.setReadDeadline, s.cfg.HandshakeTimeout)
			return err
		}
		// The caller closed the stream (io.EOF), reset it, never sent its
		// arguments, or the session went away: nobody will read what
		// the handler sends.
		s.cancel()
		s.abortWrite()
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("rpc: %s: %w", s.method, err)
	}

	// Caller role: the stream ended without the handler's trailer.
	switch {
	case s.sess != nil && s.sess.IsClosed():
		err = fmt.Errorf("rpc: %s: %w", s.method, ErrSessionClosed)
	case errors.As(err, &fe):
		err = fmt.Errorf("rpc: %s: %w", s.method, err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, yamux.ErrConnectionReset):
		err = fmt.Errorf("rpc: %s: stream ended without a result: %w", s.method, io.ErrUnexpectedEOF)
	default:
		err = fmt.Errorf("rpc: %s: %w", s.method, err)
	}
	s.release()
	return err
}

// finish ends a handler's stream: it sends the trailer carrying the
// handler's result, half-closes, waits (bounded by HandshakeTimeout) for the
// caller to close its end, and closes.
func (s *Stream) finish(herr error) {
	close(s.finished)
	s.sendMu.Lock()
	if !isClosedChan(s.closed) {
		tr := streamTrailer{}
		if herr != nil {
			tr.Error = truncateMessage(herr.Error(), s.cfg.MaxMessageSize)
			tr.Code = errorCode(herr)
		}
		// A slow but live caller still gets the trailer; a stuck one
		// does not hold us past CallTimeout.
		s.setWriteDeadline(time.Now().Add(s.cfg.CallTimeout))
		e := getEncoder()
		e.reset()
		if err := e.appendFrame(kindEnd, &tr, s.cfg.MaxMessageSize); err == nil {
			if _, err := writeMessage(s.conn, e.bytes()); err != nil {
				s.closeWith(s.sendError(err))
			}
		}
		putEncoder(e)
	}
	s.sendMu.Unlock()

	select {
	case <-s.closed:
	default:
		closeWrite(s.conn)
		s.mu.Lock()
		s.lingering = true
		s.mu.Unlock()
		s.setReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		select {
		case <-s.pumpDone:
		case <-s.closed:
		}
	}
	s.closeWith(ErrStreamClosed)
}

// truncateMessage keeps an error message well within the message limit.
func truncateMessage(msg string, max int) string {
	limit := max / 2
	if limit > 64<<10 {
		limit = 64 << 10
	}
	if len(msg) > limit {
		return msg[:limit]
	}
	return msg
}

// closeWrite half-closes conn where the transport allows it, so the peer
// reads the end of the stream while we may still read its last bytes.
func closeWrite(conn net.Conn) {
	switch c := conn.(type) {
	case *yamux.Stream:
		// A yamux Close is a half-close (FIN); reads stay allowed.
		c.Close()
	case interface{ CloseWrite() error }:
		c.CloseWrite()
	}
}
