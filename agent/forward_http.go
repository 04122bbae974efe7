package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/server"
	"tether/structs"
)

// A node-only agent answers the whole HTTP API, as Nomad's client agents
// do: what it serves itself (its client endpoints, its /v1/agent/...
// endpoints, its metrics) it serves, and every other request goes to its
// server over the node's own session as one HTTP.Forward call
// (structs.MethodHTTPForward; HTTP.ForwardStream for long answers), which
// the server replays against its own HTTP API (server/http_forward.go).
// One code path for every server endpoint: jobs, nodes, allocations,
// evaluations, ACL, status, operator, regions, system, members, whatever
// a server serves. The server checks
// the caller's token, carried in the forwarded headers; blocking queries
// block on the server (index and wait travel in the query); the status,
// headers (X-Nomad-Index, X-Nomad-KnownLeader, ...) and body come back as
// the server's handler wrote them.

// servedByNode reports whether a node-only agent answers path itself
// rather than forwarding it to its servers.
func servedByNode(path string) bool {
	switch {
	case strings.HasPrefix(path, "/v1/client/"):
		return true // routed per call by backend.route
	case path == "/v1/agent/members":
		return false // the servers' membership
	case strings.HasPrefix(path, "/v1/agent/"):
		return true // this agent: self, health, monitor, pprof, servers, ...
	case path == "/v1/metrics", strings.HasPrefix(path, "/debug/"):
		return true
	}
	return false
}

// forwardingToServers returns h as this agent's HTTP API: h itself on an
// agent that runs a server (or no node), else h for the paths the node
// serves and HTTP.Forward for every other.
func (a *Agent) forwardingToServers(h http.Handler) http.Handler {
	if a.server != nil || a.client == nil {
		return h
	}
	logger := a.logger.Named("http")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if servedByNode(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		a.forwardHTTP(logger, w, r)
	})
}

// serverPathsOnly returns h limited to the paths HTTP.Forward replays on
// a server: what a node-only agent forwards (servedByNode false). A
// forwarded request for another path is refused, so the method is no
// back door to a server's own agent endpoints or to client calls.
func serverPathsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if servedByNode(r.URL.Path) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, "this endpoint is served by the node agent, not forwarded")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hopByHop are the headers that belong to one connection, never
// forwarded either way (RFC 9110 section 7.6.1).
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// forwardHeader copies h without its hop-by-hop headers (nor the headers
// its Connection header names).
func forwardHeader(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		return make(http.Header)
	}
	for _, c := range out["Connection"] {
		for _, name := range strings.Split(c, ",") {
			if name = strings.TrimSpace(name); name != "" {
				out.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		delete(out, k)
	}
	return out
}

// forwardRequestOf builds the HTTP.Forward request of r: method, path and
// query as sent, headers without hop-by-hop ones, and the body, bounded
// as every body of the API.
func forwardRequestOf(w http.ResponseWriter, r *http.Request) (*structs.HTTPForwardRequest, error) {
	req := &structs.HTTPForwardRequest{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Header:   forwardHeader(r.Header),
	}
	if len(req.Path)+len(req.RawQuery) > structs.MaxHTTPForwardURL {
		return nil, structs.NewError(http.StatusRequestURITooLong, "request URL longer than %d bytes", structs.MaxHTTPForwardURL)
	}
	if structs.HeaderSize(req.Header) > structs.MaxHTTPForwardHeader {
		return nil, structs.NewError(http.StatusRequestHeaderFieldsTooLarge, "request headers larger than %d bytes", structs.MaxHTTPForwardHeader)
	}
	if r.Body != nil && r.Body != http.NoBody {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, structs.MaxHTTPForwardBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, structs.ErrBodyTooLarge
			}
			return nil, structs.BadRequest("reading request body: %v", err)
		}
		req.Body = body
	}
	return req, nil
}

// forwardHTTP answers r with its server's answer, over the node's
// session: HTTP.Forward, one unary call answering the whole response,
// and, for a GET or HEAD whose answer does not fit one reply (a long
// list, a stream), HTTP.ForwardStream. Errors before the server's answer
// are written as the API's errors (with their status: a typed error of
// the server keeps its code and text).
func (a *Agent) forwardHTTP(logger hclog.Logger, w http.ResponseWriter, r *http.Request) {
	req, err := forwardRequestOf(w, r)
	if err != nil {
		writeError(logger, w, r, err)
		return
	}
	ctx, cancel := forwardContext(r)
	resp, err := a.client.ForwardHTTP(ctx, req)
	cancel()
	switch {
	case err == nil:
		h := w.Header()
		for k, v := range forwardHeader(resp.Header) {
			h[k] = v
		}
		w.WriteHeader(resp.Code)
		_, _ = w.Write(resp.Body)
	case errors.Is(err, structs.ErrForwardTooLarge) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		a.forwardHTTPStream(logger, w, r, req)
	default:
		writeError(logger, w, r, err)
	}
}

// forwardContext is the context of r's HTTP.Forward call. A blocking query
// (?index=) may take its whole wait on the server (server.queryWait: the
// wait asked, server.DefaultQueryTime by default, at most
// server.MaxQueryTime, plus up to a 16th), longer than the RPC layer's
// default call timeout: its call gets that, and half a minute, to answer. Other calls keep the
// default timeout. Either ends when the caller goes away.
func forwardContext(r *http.Request) (context.Context, context.CancelFunc) {
	q := r.URL.Query()
	if q.Get("index") == "" {
		return r.Context(), func() {}
	}
	wait := server.DefaultQueryTime
	if d, err := time.ParseDuration(q.Get("wait")); err == nil && d > 0 {
		wait = min(d, server.MaxQueryTime)
	}
	return context.WithTimeout(r.Context(), wait+wait/16+30*time.Second)
}

// forwardHTTPStream answers r with its server's answer streamed back
// (HTTP.ForwardStream). An error in the middle of the body aborts the
// response, so a cut answer never looks whole.
func (a *Agent) forwardHTTPStream(logger hclog.Logger, w http.ResponseWriter, r *http.Request, req *structs.HTTPForwardRequest) {
	st, err := a.client.ForwardHTTPStream(r.Context(), req)
	if err != nil {
		writeError(logger, w, r, err)
		return
	}
	defer st.Close()
	var resp structs.HTTPForwardResponse
	if err := st.Recv(&resp); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("server ended the forwarded request without an answer")
		}
		writeError(logger, w, r, err)
		return
	}
	h := w.Header()
	for k, v := range forwardHeader(resp.Header) {
		h[k] = v
	}
	w.WriteHeader(resp.Code)
	flusher, _ := w.(http.Flusher)
	for {
		m, err := st.RecvMsg()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil || !m.Raw() {
			m.Release()
			logger.Debug("forwarded response cut", "method", r.Method, "path", r.URL.Path, "error", err)
			panic(http.ErrAbortHandler)
		}
		_, werr := w.Write(m.Bytes())
		m.Release()
		if werr != nil {
			return // the caller went away
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
