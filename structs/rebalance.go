package structs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Methods of admission and rebalancing (server/admission.go,
// server/rebalance.go, client/conn.go).
const (
	// MethodNodeRelease is called by a node on the session it is leaving,
	// once it has registered on another server: the server stops routing
	// new calls down that session, lets the calls in flight finish, then
	// closes it.
	MethodNodeRelease = "Node.ReleaseSession"

	// MethodClientMove is called by a server on a node's session to ask
	// the node to move to another server (rebalancing).
	MethodClientMove = "Agent.MoveServer"
)

// NodeReleaseRequest releases the session it arrives on.
type NodeReleaseRequest struct {
	NodeID   string
	SecretID string
}

// ClientMoveRequest asks a node to move its session to Server, an RPC
// address of a server of its region.
type ClientMoveRequest struct {
	Server string
}

// retryAfterMarker precedes the hint in a TooManyRequests message. Only
// the code and the message of an error cross an RPC hop, so the hint
// travels in the text, where any number of hops keep it.
const retryAfterMarker = "; retry after "

// TooManyRequests returns a 429 telling the caller to come back after d
// (at least a millisecond), with the formatted reason.
func TooManyRequests(d time.Duration, format string, args ...any) *Error {
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return &Error{
		Code:    http.StatusTooManyRequests,
		Message: fmt.Sprintf(format, args...) + retryAfterMarker + d.Round(time.Millisecond).String(),
	}
}

// RetryAfter returns the hint of a TooManyRequests error, also after RPC
// hops (any error with status 429 whose message ends in the hint).
func RetryAfter(err error) (time.Duration, bool) {
	var sc interface{ StatusCode() int }
	if err == nil || !errors.As(err, &sc) || sc.StatusCode() != http.StatusTooManyRequests {
		return 0, false
	}
	msg := err.Error()
	i := strings.LastIndex(msg, retryAfterMarker)
	if i < 0 {
		return 0, false
	}
	d, perr := time.ParseDuration(msg[i+len(retryAfterMarker):])
	if perr != nil || d <= 0 {
		return 0, false
	}
	return d, true
}
