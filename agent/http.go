package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/server"
	"tether/structs"
)

// maxBodySize bounds every request body.
const maxBodySize = 1 << 20

// handlerFunc is an endpoint: it returns a value to encode as JSON, or an
// error whose status code it carries. A nil value with a nil error writes
// nothing (the handler wrote the response itself).
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

// wrap adapts an endpoint to net/http: JSON encoding (with ?pretty), error
// mapping to status codes, and panic safety.
func (a *Agent) wrap(h handlerFunc) http.HandlerFunc {
	logger := a.logger.Named("http")
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodySize)
		}
		// As Nomad's agent, a line per request at debug, for the agent's
		// own log at that level and for debug monitors; nothing is
		// formatted otherwise.
		if logger.IsDebug() || a.debugMonitors.Load() > 0 {
			start := time.Now()
			defer func() {
				logger.Debug("request complete", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start))
			}()
		}
		out, err := h(w, r)
		if err != nil {
			writeError(logger, w, r, err)
			return
		}
		if out == nil {
			return
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}

// contentTypeJSON is the Content-Type header value of JSON answers, shared
// (net/http only reads it) to save an allocation per response.
var contentTypeJSON = []string{"application/json"}

// writeJSON encodes v; HTML characters are kept as they are, as Nomad does.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	if raw, ok := v.(rawJSON); ok {
		writeRawJSON(w, r, code, raw)
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if isPretty(r) {
		enc.SetIndent("", "    ")
	}
	if err := enc.Encode(v); err != nil {
		http.Error(w, "failed to encode response", http.StatusInternalServerError)
		return
	}
	b := buf.Bytes()
	if !isPretty(r) {
		b = bytes.TrimSuffix(b, []byte("\n"))
	}
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// isPretty reports whether ?pretty is set to anything but "0".
func isPretty(r *http.Request) bool {
	if q := r.URL.RawQuery; !strings.Contains(q, "pretty") && !strings.Contains(q, "%") {
		return false // most requests: no need to parse the query
	}
	v, ok := r.URL.Query()["pretty"]
	if !ok {
		return false
	}
	return len(v) == 0 || v[0] != "0"
}

// writeError answers err as plain text with its status code.
func writeError(logger hclog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	code := structs.StatusCode(err)
	msg := err.Error()
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		code, msg = http.StatusRequestEntityTooLarge, structs.ErrBodyTooLarge.Message
	}
	if code >= 500 {
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", msg, "code", code)
	} else {
		logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "error", msg, "code", code)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

// queryOptions takes region, namespace and the token from the request. The
// token comes from X-Nomad-Token, else "Authorization: Bearer <token>";
// never from the URL.
func queryOptions(r *http.Request) structs.QueryOptions {
	return queryOptionsOf(r, r.URL.Query())
}

// queryOptionsOf is queryOptions with the query already parsed.
func queryOptionsOf(r *http.Request, q url.Values) structs.QueryOptions {
	return structs.QueryOptions{
		Region:    q.Get("region"),
		Namespace: q.Get("namespace"),
		AuthToken: requestToken(r),
	}
}

// nodeRequest is the request of a call aimed at ?node_id, parsing the
// query once.
func nodeRequest(r *http.Request) structs.NodeSpecificRequest {
	q := r.URL.Query()
	return structs.NodeSpecificRequest{NodeID: q.Get("node_id"), QueryOptions: queryOptionsOf(r, q)}
}

func requestToken(r *http.Request) string {
	if t := r.Header.Get("X-Nomad-Token"); t != "" {
		return t
	}
	auth := r.Header.Get("Authorization")
	if rest, ok := strings.CutPrefix(auth, "Bearer "); ok {
		if f := strings.Fields(rest); len(f) > 0 {
			return f[0]
		}
	}
	return ""
}

// readBody reads the whole (bounded) body; an empty body is a 400.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, structs.ErrEmptyBody
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, structs.ErrBodyTooLarge
		}
		return nil, structs.BadRequest("reading request body: %v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, structs.ErrEmptyBody
	}
	return b, nil
}

// queryStop ends the blocking queries in flight when the agent shuts
// down (http.Server.Shutdown waits for requests; a blocking query would
// hold it for minutes). Its zero value is ready.
type queryStop struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

func (q *queryStop) init() {
	q.once.Do(func() { q.ctx, q.cancel = context.WithCancel(context.Background()) })
}

// done is a context ended by stop.
func (q *queryStop) done() context.Context {
	q.init()
	return q.ctx
}

// stop ends every blocking query, now and later.
func (q *queryStop) stop() {
	q.init()
	q.cancel()
}

// blockingOptions reads ?index= and ?wait= as Nomad does: wait is a Go
// duration ("300000ms", the Go client's form, or "5m"); a bad value of
// either is a 400 with Nomad's text.
func blockingOptions(q url.Values) (structs.BlockingOptions, error) {
	var opts structs.BlockingOptions
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return opts, structs.BadRequest("Invalid wait time")
		}
		opts.MaxQueryTime = d
	}
	if v := q.Get("index"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return opts, structs.BadRequest("Invalid index")
		}
		opts.MinQueryIndex = idx
	}
	return opts, nil
}

// queryContext is the context a read waits under: the request's, and for
// a blocking query ended too when the agent shuts down. The caller calls
// the CancelFunc.
func (a *Agent) queryContext(r *http.Request, opts structs.BlockingOptions) (context.Context, context.CancelFunc) {
	if opts.MinQueryIndex == 0 {
		return r.Context(), func() {}
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(a.queries.done(), cancel)
	return ctx, func() { stop(); cancel() }
}

// query serves a read of the server's state as Nomad serves one: run
// once, or as a blocking query when ?index= is set (bounded by ?wait=),
// then the query meta headers with the index fn returned last.
func (a *Agent) query(w http.ResponseWriter, r *http.Request, s *server.Server, fn server.QueryFunc) error {
	opts, err := blockingOptions(r.URL.Query())
	if err != nil {
		return err
	}
	ctx, cancel := a.queryContext(r, opts)
	defer cancel()
	idx, err := s.State().Blocking(ctx, opts, fn)
	if err != nil {
		return err
	}
	a.setMeta(w, idx)
	return nil
}

// setMeta sets Nomad's query meta headers: the index of the read, whether
// the server knows a leader, and the milliseconds since it last heard from
// it (0 on the leader).
func (a *Agent) setMeta(w http.ResponseWriter, index uint64) {
	if a.server == nil {
		setIndex(w, index)
		return
	}
	known, last := a.server.QueryMeta()
	h := w.Header()
	h.Set("X-Nomad-Index", strconv.FormatUint(index, 10))
	h.Set("X-Nomad-KnownLeader", strconv.FormatBool(known))
	h.Set("X-Nomad-LastContact", strconv.FormatInt(last.Milliseconds(), 10))
}

// setIndex sets Nomad's query meta headers for a read served by a server.
func setIndex(w http.ResponseWriter, index uint64) {
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(index, 10))
	w.Header().Set("X-Nomad-KnownLeader", "true")
	w.Header().Set("X-Nomad-LastContact", "0")
}

// writeRawJSON writes a reply a node already encoded, indented for ?pretty.
func writeRawJSON(w http.ResponseWriter, r *http.Request, code int, raw rawJSON) {
	b := []byte(raw)
	if isPretty(r) {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "    "); err == nil {
			buf.WriteByte('\n')
			b = buf.Bytes()
		}
	}
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
