package structs

import "net/http"

// MethodHTTPForward is the streaming server method that answers an HTTP
// API request a node-only agent received and does not serve itself (jobs,
// nodes, allocations, evaluations, ACL, status, operator, ...). The server
// replays the request against its own HTTP API, so every endpoint a server
// serves is served the same way, with the same checks, through any node:
// the server evaluates the caller's token, carried in the request's
// headers, and nothing of the node's own identity.
//
// The caller opens the stream with an HTTPForwardRequest. The server
// answers one HTTPForwardResponse (status code and headers), then the
// body as raw messages, then ends the stream. An error before the
// response (a malformed request, a server shutting down) comes as the
// stream's error, with its status code.
const MethodHTTPForward = "HTTP.Forward"

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

// HTTPForwardResponse is the status and headers of a replayed request's
// answer; the body follows as raw messages.
type HTTPForwardResponse struct {
	// Code is the HTTP status code.
	Code int

	// Header holds the headers the server's handler set (X-Nomad-Index,
	// X-Nomad-KnownLeader, X-Nomad-LastContact, Content-Type, ...).
	Header http.Header
}

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
