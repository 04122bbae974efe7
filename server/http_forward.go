package server

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"tether/rpc"
	"tether/structs"
)

// httpAPI is the handler HTTP.Forward replays requests against.
type httpAPI struct{ h http.Handler }

// SetHTTPAPI sets the handler HTTP.Forward replays node agents' requests
// against: the agent's own HTTP API, limited to the paths servers answer
// for nodes. Until it is set, HTTP.Forward answers 503.
func (s *Server) SetHTTPAPI(h http.Handler) { s.httpAPI.Store(&httpAPI{h: h}) }

// registerHTTPForward registers HTTP.Forward and HTTP.ForwardStream
// (structs.MethodHTTPForward, structs.MethodHTTPForwardStream).
func (s *Server) registerHTTPForward() {
	rpc.HandleUnary(s.mux, structs.MethodHTTPForward, s.httpForwardEndpoint)
	s.mux.HandleStream(structs.MethodHTTPForwardStream, s.httpForwardStreamEndpoint)
}

// httpForwardEndpoint serves HTTP.Forward: it replays the request against
// the HTTP API and answers the whole response in the reply, or
// ErrForwardTooLarge for an answer that does not fit one.
func (s *Server) httpForwardEndpoint(ctx context.Context, req *structs.HTTPForwardRequest, resp *structs.HTTPForwardResponse) error {
	w := &forwardWriter{header: make(http.Header), inline: true}
	if err := s.replayHTTP(ctx, req, w); err != nil {
		return err
	}
	if w.tooLarge {
		return structs.ErrForwardTooLarge
	}
	*resp = structs.HTTPForwardResponse{Code: w.status(), Header: w.header, Body: w.buf}
	return nil
}

// httpForwardStreamEndpoint serves HTTP.ForwardStream: it replays the
// request against the HTTP API and streams the answer back, status and
// headers first.
func (s *Server) httpForwardStreamEndpoint(ctx context.Context, st *rpc.Stream) error {
	var req structs.HTTPForwardRequest
	if err := st.Recv(&req); err != nil {
		return err
	}
	w := &forwardWriter{st: st, header: make(http.Header)}
	if err := s.replayHTTP(ctx, &req, w); err != nil {
		return err
	}
	w.done = true
	return w.flush()
}

// replayHTTP runs req against the HTTP API, answering into w.
//
// The replayed request carries only what the caller sent: its headers
// (the token among them) and body. Its context is cancelled with ctx (the
// call's) but carries none of its values, so no handler can take the
// session it arrived on, or the node bound to it, for the caller: the
// node's identity grants nothing.
func (s *Server) replayHTTP(ctx context.Context, req *structs.HTTPForwardRequest, w http.ResponseWriter) error {
	api := s.httpAPI.Load()
	if api == nil {
		return structs.NewError(http.StatusServiceUnavailable, "HTTP API not ready")
	}
	rctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	if dl, ok := ctx.Deadline(); ok {
		var cancelDL context.CancelFunc
		rctx, cancelDL = context.WithDeadline(rctx, dl)
		defer cancelDL()
	}
	hr, err := forwardedRequest(rctx, req)
	if err != nil {
		return err
	}
	if sess := rpc.SessionFromContext(ctx); sess != nil {
		hr.RemoteAddr = sess.RemoteAddr().String()
	}
	api.h.ServeHTTP(w, hr)
	return nil
}

// forwardMethods are the HTTP methods a forwarded request may use.
var forwardMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPut: true, http.MethodPost: true,
	http.MethodDelete: true, http.MethodPatch: true, http.MethodOptions: true,
}

// forwardedRequest checks req against the limits of a forwarded request
// and builds the *http.Request to replay, as net/http would have parsed
// it from the wire.
// jwksPath is the one forwarded path outside /v1/: the keyring's public
// keys (keyring.go).
const jwksPath = "/.well-known/jwks.json"

func forwardedRequest(ctx context.Context, req *structs.HTTPForwardRequest) (*http.Request, error) {
	switch {
	case !forwardMethods[req.Method]:
		return nil, structs.BadRequest("forwarded request: unsupported method %q", truncate(req.Method, 16))
	case len(req.Path)+len(req.RawQuery) > structs.MaxHTTPForwardURL:
		return nil, structs.BadRequest("forwarded request: URL longer than %d bytes", structs.MaxHTTPForwardURL)
	case !strings.HasPrefix(req.Path, "/v1/") && req.Path != jwksPath:
		return nil, structs.BadRequest("forwarded request: path must start with /v1/")
	case structs.HeaderSize(req.Header) > structs.MaxHTTPForwardHeader:
		return nil, structs.BadRequest("forwarded request: headers larger than %d bytes", structs.MaxHTTPForwardHeader)
	case len(req.Body) > structs.MaxHTTPForwardBody:
		return nil, structs.ErrBodyTooLarge
	}
	uri := req.Path
	if req.RawQuery != "" {
		uri += "?" + req.RawQuery
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, structs.BadRequest("forwarded request: invalid URL")
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, "", bytes.NewReader(req.Body))
	if err != nil {
		return nil, structs.BadRequest("forwarded request: %v", err)
	}
	hr.URL = u
	hr.RequestURI = uri
	hr.Host = ""
	hr.Header = req.Header
	if hr.Header == nil {
		hr.Header = make(http.Header)
	}
	hr.ContentLength = int64(len(req.Body))
	if len(req.Body) == 0 {
		hr.Body = http.NoBody
	}
	return hr, nil
}

// truncate shortens s to at most n bytes, for error texts.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// forwardChunk is the most body bytes forwardWriter holds before it sends
// them: small answers (most of the API) go in one message after the
// response header, large lists in messages of this size.
const forwardChunk = 32 << 10

// forwardWriter is the http.ResponseWriter of a replayed request.
//
// Inline (HTTP.Forward), it keeps the whole body for the reply, up to
// MaxHTTPForwardInline; a longer body, or a Flush (the handler streams),
// makes it refuse every later write and report tooLarge.
//
// On a stream (HTTP.ForwardStream), it sends the status and headers as
// an HTTPForwardResponse when the handler first flushes or fills a chunk
// (or returns), then the body as raw messages; a handler that flushes is
// streamed.
type forwardWriter struct {
	st       *rpc.Stream // nil inline
	inline   bool
	tooLarge bool // inline: the answer does not fit a reply
	header   http.Header
	code     int
	sent     bool // the response header went out
	done     bool // the handler returned: what is buffered is the rest
	buf      []byte
	err      error // the first send error; every later write fails with it
}

// status is the answer's status code (200 if the handler set none).
func (w *forwardWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Header returns the response headers, sent with the first write.
func (w *forwardWriter) Header() http.Header { return w.header }

// WriteHeader records the status code; informational codes are dropped
// (the node answers the final one).
func (w *forwardWriter) WriteHeader(code int) {
	if w.code != 0 || code >= 100 && code < 200 {
		return
	}
	if code < 200 || code > 999 {
		code = http.StatusInternalServerError
	}
	w.code = code
}

// Write buffers p, sending full chunks.
func (w *forwardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.inline {
		if w.tooLarge || len(w.buf)+len(p) > structs.MaxHTTPForwardInline {
			w.tooLarge = true
			return 0, structs.ErrForwardTooLarge
		}
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	n := 0
	for len(p) > 0 {
		if w.err != nil {
			return n, w.err
		}
		k := min(forwardChunk-len(w.buf), len(p))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(w.buf) == forwardChunk {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Flush sends the response header, if not yet sent, and the buffered
// body; inline, it marks the answer as one for a stream.
func (w *forwardWriter) Flush() {
	if w.inline {
		w.tooLarge = true
		return
	}
	_ = w.flush()
}

func (w *forwardWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if !w.sent {
		w.code = w.status()
		hdr := w.header.Clone()
		if hdr == nil {
			hdr = make(http.Header)
		}
		if _, ok := hdr["Content-Length"]; !ok && w.done && w.code != http.StatusNoContent && w.code != http.StatusNotModified {
			// The whole body is here: say how long it is, as net/http
			// does for a handler that wrote less than its buffer.
			hdr["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
		}
		if err := w.st.Send(&structs.HTTPForwardResponse{Code: w.code, Header: hdr}); err != nil {
			w.err = err
			return err
		}
		w.sent = true
	}
	if len(w.buf) > 0 {
		if err := w.st.SendRaw(w.buf); err != nil {
			w.err = err
			return err
		}
		w.buf = w.buf[:0]
	}
	return nil
}
