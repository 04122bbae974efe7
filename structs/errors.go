package structs

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an error that carries the HTTP status code it should be answered
// with. Its Message is what an HTTP caller sees, so it never contains a host
// path. Errors of this type survive RPC hops: the transport sends Code and
// Message and the receiving side rebuilds an error whose StatusCode is Code.
type Error struct {
	Code    int
	Message string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// StatusCode returns the HTTP status code.
func (e *Error) StatusCode() int { return e.Code }

// Is reports whether target is an *Error with the same code and message, so
// that errors.Is works on errors rebuilt after an RPC hop.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code && t.Message == e.Message
}

// NewError returns an *Error with the given status code and formatted message.
func NewError(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// BadRequest returns a 400 error with the formatted message.
func BadRequest(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, format, args...)
}

// NotFound returns a 404 error with the formatted message.
func NotFound(format string, args ...any) *Error {
	return NewError(http.StatusNotFound, format, args...)
}

// statusCoder is implemented by errors that know their HTTP status, ours and
// the transport's rebuilt remote errors alike.
type statusCoder interface{ StatusCode() int }

// StatusCode returns the HTTP status code err should be answered with: the
// code of the first error in its chain that carries one, else 500.
func StatusCode(err error) int {
	var sc statusCoder
	if errors.As(err, &sc) {
		if c := sc.StatusCode(); c >= 400 && c <= 599 {
			return c
		}
	}
	return http.StatusInternalServerError
}

// The errors below are Nomad's texts for the conditions every endpoint
// shares. Callers compare with errors.Is.
var (
	// ErrPermissionDenied is returned when a token lacks a capability.
	ErrPermissionDenied = &Error{Code: http.StatusForbidden, Message: "Permission denied"}

	// ErrTokenNotFound is returned for an unknown or expired token.
	ErrTokenNotFound = &Error{Code: http.StatusForbidden, Message: "ACL token not found"}

	// ErrNoPathToNode is returned when no server holds a live session to
	// the node a call is for.
	ErrNoPathToNode = &Error{Code: http.StatusNotFound, Message: "No path to node"}

	// ErrNoNodeID is returned by a server when a node-targeted call names
	// no node.
	ErrNoNodeID = &Error{Code: http.StatusBadRequest, Message: "No local Node and node_id not provided"}

	// ErrInvalidMethod is returned for an HTTP method a route does not take.
	ErrInvalidMethod = &Error{Code: http.StatusMethodNotAllowed, Message: "Invalid method"}

	// ErrBodyTooLarge is returned when a request body exceeds its limit.
	ErrBodyTooLarge = &Error{Code: http.StatusRequestEntityTooLarge, Message: "Request body too large"}

	// ErrEmptyBody is returned when a request that needs a body has none.
	ErrEmptyBody = &Error{Code: http.StatusBadRequest, Message: "Request body is empty"}

	// ErrNotClient is returned by an agent that runs no node when a call
	// can only be answered by a node.
	ErrNotClient = &Error{Code: http.StatusBadRequest, Message: "Agent is not running a node"}
)

// ErrUnknownNode returns the 404 for a node ID that no server knows.
func ErrUnknownNode(id string) *Error {
	return NotFound("Unknown node %s", id)
}

// ErrUnknownAllocation returns the 404 for an allocation ID no server knows.
func ErrUnknownAllocation(id string) *Error {
	return NotFound("Unknown allocation %q", id)
}
