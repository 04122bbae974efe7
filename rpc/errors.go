package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors returned by this package. Compare with errors.Is: most are wrapped
// with the method name or the cause.
var (
	// ErrSessionClosed is returned when the session a call or stream runs
	// on is closed, either before the stream could be opened or while the
	// call was in flight (the peer went away, keepalive failed, or Close
	// was called).
	ErrSessionClosed = errors.New("rpc: session closed")

	// ErrStreamClosed is returned by Stream methods after Close, and by
	// calls whose stream was closed locally.
	ErrStreamClosed = errors.New("rpc: stream closed")

	// ErrRefused is returned by Dial when the server ends the session
	// before answering its first ping: it refused the TLS certificate (the
	// error carries the server's alert), requires TLS, or is over its
	// connection limit.
	ErrRefused = errors.New("rpc: server refused the session")

	// ErrPoolClosed is returned by Pool methods after Close.
	ErrPoolClosed = errors.New("rpc: pool closed")

	// ErrUnknownMethod is what a call to a method the callee has not
	// registered returns: errors.Is(err, ErrUnknownMethod) holds for the
	// *RemoteError (Code 404, message `rpc: unknown method "X"`) rebuilt on
	// the caller side and for the error CallLocal and OpenLocal return.
	ErrUnknownMethod = &RemoteError{Code: codeNotFound, Message: "rpc: unknown method"}

	// ErrMessageTooLarge is returned when an encoded message (header, body
	// or stream frame) is larger than Config.MaxMessageSize. A sender gets
	// it before anything is written; a receiver resets the stream, and a
	// callee that can still answer reports it to the caller as a
	// *RemoteError with Code 413, which also matches ErrMessageTooLarge.
	ErrMessageTooLarge = errors.New("rpc: message too large")

	// ErrUnknownProtocol is logged when a connection or stream starts with
	// a byte that selects no protocol; the connection or stream is closed.
	ErrUnknownProtocol = errors.New("rpc: unknown protocol byte")

	// ErrProtocol is returned when the peer breaks the wire protocol (a
	// zero-length message, an unknown frame kind, a reply for another
	// request). The stream is closed.
	ErrProtocol = errors.New("rpc: protocol error")

	// ErrTimeout is returned when a deadline passes: the call's context
	// deadline, Config.CallTimeout, or a Stream deadline. It implements
	// net.Error with Timeout() true, and errors.Is(err,
	// context.DeadlineExceeded) holds for it.
	ErrTimeout error = &timeoutError{}
)

// timeoutError is the type of ErrTimeout.
type timeoutError struct{}

func (*timeoutError) Error() string   { return "rpc: deadline exceeded" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

// Is makes errors.Is(ErrTimeout, context.DeadlineExceeded) true.
func (*timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// RemoteError is an error returned by the remote handler, rebuilt on the
// caller side from the Code and Message that crossed the wire. The rpc layer
// also uses it for the errors it reports on a handler's behalf: unknown
// method (404), message too large (413), handler panic (500).
type RemoteError struct {
	// Code is the status code the handler's error carried (see
	// StatusCode), or 0 when it carried none; callers treat 0 as 500.
	Code int

	// Message is the handler error's Error() text.
	Message string
}

// Error returns the remote error's message unchanged, so errors cross hops
// with the text the handler produced.
func (e *RemoteError) Error() string { return e.Message }

// StatusCode returns Code, so an HTTP layer can map any error that crossed
// an RPC hop with errors.As on interface{ StatusCode() int }.
func (e *RemoteError) StatusCode() int { return e.Code }

// Is reports whether the remote error matches target. It matches the
// sentinels that cross the wire (ErrUnknownMethod, ErrMessageTooLarge) and
// any target that carries the same status code and message, such as a
// typed error of the caller's own package rebuilt after an RPC hop.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrUnknownMethod:
		return e.Code == codeNotFound && strings.HasPrefix(e.Message, ErrUnknownMethod.Message)
	case ErrMessageTooLarge:
		return e.Code == codeRequestTooLarge && strings.HasPrefix(e.Message, ErrMessageTooLarge.Error())
	}
	sc, ok := target.(statusCoder)
	return ok && sc.StatusCode() == e.Code && target.Error() == e.Message
}

// statusCoder is implemented by errors that carry a status code.
type statusCoder interface{ StatusCode() int }

// errorCode returns the status code err carries, or 0.
func errorCode(err error) int {
	var sc statusCoder
	if errors.As(err, &sc) {
		return sc.StatusCode()
	}
	return 0
}

// unknownMethodError is the error for a method nobody registered.
func unknownMethodError(method string) *RemoteError {
	return &RemoteError{Code: codeNotFound, Message: fmt.Sprintf("rpc: unknown method %q", method)}
}

// tooLargeError is the error a callee reports for an oversized message.
func tooLargeError(size, limit int) *RemoteError {
	return &RemoteError{
		Code:    codeRequestTooLarge,
		Message: fmt.Sprintf("%s (%d > %d bytes)", ErrMessageTooLarge, size, limit),
	}
}

// panicError is what a caller sees when the handler panicked. The panic
// value is logged on the callee, never sent.
func panicError(method string) *RemoteError {
	return &RemoteError{Code: codeInternal, Message: fmt.Sprintf("rpc: handler for %q panicked", method)}
}

// remoteFromWire rebuilds a handler error; nil when msg is empty.
func remoteFromWire(msg string, code int) error {
	if msg == "" {
		return nil
	}
	return &RemoteError{Code: code, Message: msg}
}

// ctxEnded reports whether ctx is done or its deadline has passed (the
// context's own timer may not have run yet).
func ctxEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// ctxError returns the error a caller gets when ctx ended: ErrTimeout for
// an expired deadline, the context's own error otherwise.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return err
}
