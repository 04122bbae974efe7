package structs

import "net/http"

// MethodHTTPForward is the unary server method that answers an HTTP API
// request a node-only agent received and does not serve itself (jobs,
// nodes, allocations, evaluations, ACL, status, operator, ...). The server
// replays the request against its own HTTP API, so every endpoint a server
// serves is served the same way, with the same checks, through any node:
// the server evaluates the caller's token, carried in the request's
// headers, and nothing of the node's own identity.
//
// The reply, an HTTPForwardResponse, carries the whole answer: status,
// headers and body. An answer larger than MaxHTTPForwardInline, or one
// its handler flushes (a stream), is refused with ErrForwardTooLarge
// instead; the node then asks again with MethodHTTPForwardStream, if the
// request may be repeated (GET, HEAD).
const MethodHTTPForward = "HTTP.Forward"

// MethodHTTPForwardStream is MethodHTTPForward as a streaming method, for
// answers of any size and for streams. The caller opens the stream with an
// HTTPForwardRequest; the server answers one HTTPForwardResponse (status
// code and headers, no body), then the body as raw messages, then ends
// the stream. An error before the response (a malformed request, a server
// shutting down) comes as the stream's error, with its status code.
const MethodHTTPForwardStream = "HTTP.ForwardStream"

// Limits of a forwarded HTTP request, checked on both sides.
const (
	// MaxHTTPForwardURL bounds the path and raw query of a forwarded
	// request together.
	MaxHTTPForwardURL = 64 << 10

	// MaxHTTPForwardHeader bounds the names and values of a forwarded
	// request's (or response's) headers together.
	MaxHTTPForwardHeader = 256 << 10

	// MaxHTTPForwardBody bounds a forwarded request's body: the HTTP
	// API's own limit on every body.
	MaxHTTPForwardBody = 1 << 20

	// MaxHTTPForwardInline bounds the body of MethodHTTPForward's reply,
	// well inside the RPC layer's default message limit (4 MiB).
	MaxHTTPForwardInline = 2 << 20
)

// HTTPForwardRequest is an HTTP API request replayed on a server.
type HTTPForwardRequest struct {
	// Method is the HTTP method (GET, PUT, POST, DELETE, ...).
	Method string

	// Path is the request's path, starting with "/v1/".
	Path string

	// RawQuery is the query string as the caller sent it, without "?".
	RawQuery string

	// Header holds the caller's headers (X-Nomad-Token or Authorization
	// among them), hop-by-hop headers removed.
	Header http.Header

	// Body is the whole request body (at most MaxHTTPForwardBody bytes).
	Body []byte
}

// HTTPForwardResponse is a replayed request's answer: its status,
// headers and (from MethodHTTPForward) body. From MethodHTTPForwardStream
// Body is empty and the body follows as raw messages.
type HTTPForwardResponse struct {
	// Code is the HTTP status code.
	Code int

	// Header holds the headers the server's handler set (X-Nomad-Index,
	// X-Nomad-KnownLeader, X-Nomad-LastContact, Content-Type, ...).
	Header http.Header

	// Body is the whole body, from MethodHTTPForward.
	Body []byte
}

// ErrForwardTooLarge is MethodHTTPForward's refusal of an answer that does
// not fit one reply (MaxHTTPForwardInline) or that its handler streams.
var ErrForwardTooLarge = &Error{Code: http.StatusInternalServerError, Message: "forwarded answer too large for one reply; use a stream"}

// ErrNoServers is a node-only agent's answer to a request for its servers
// while it has no connection to any, as Nomad's client agents answer.
var ErrNoServers = &Error{Code: http.StatusInternalServerError, Message: "no servers"}

// HeaderSize returns the bytes of h's names and values.
func HeaderSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return n
}
