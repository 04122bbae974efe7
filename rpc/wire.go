package rpc

import "time"

// The headers below are the msgpack objects of spec.md. They encode as maps
// keyed by the codec names, so fields can be added without breaking older
// peers (unknown keys are ignored).

// requestHeader starts every unary request; the arguments follow as a
// second message.
type requestHeader struct {
	// Method is the registered method name, e.g. "ClientStats.Stats".
	Method string `codec:"Method"`

	// Seq numbers the requests of a session; the response echoes it.
	Seq uint64 `codec:"Seq"`

	// Timeout is the caller's remaining time in nanoseconds; 0 means none.
	// The callee gives the handler's context the same deadline.
	Timeout int64 `codec:"Timeout,omitempty"`

	// JSON asks for the reply as JSON (a JSON message, json.go) instead
	// of the handler's reply type. Older callees ignore it; callers only
	// set it for methods whose callee answers it.
	JSON bool `codec:"JSON,omitempty"`
}

// responseHeader starts every unary response. When Error is empty the
// reply follows as a second message; otherwise nothing follows.
type responseHeader struct {
	Seq   uint64 `codec:"Seq"`
	Error string `codec:"Error,omitempty"`
	Code  int    `codec:"Code,omitempty"`
}

// streamHeader is the first message of a streaming RPC.
type streamHeader struct {
	Method  string `codec:"Method"`
	Timeout int64  `codec:"Timeout,omitempty"`
}

// streamAck answers a streamHeader: empty Error means the handler was found
// and runs; otherwise the callee closes the stream.
type streamAck struct {
	Error string `codec:"Error,omitempty"`
	Code  int    `codec:"Code,omitempty"`
}

// streamTrailer is the body of the kindEnd frame a streaming handler sends
// last: empty Error for a clean end, else the handler's error.
type streamTrailer struct {
	Error string `codec:"Error,omitempty"`
	Code  int    `codec:"Code,omitempty"`
}

// encodeTimeout turns the time left until deadline into the wire form: 0
// for no deadline, at least 1ns otherwise, so an expired deadline still
// reads as a deadline.
func encodeTimeout(deadline time.Time, ok bool) int64 {
	if !ok {
		return 0
	}
	d := time.Until(deadline)
	if d <= 0 {
		return 1
	}
	return int64(d)
}
