package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"tether/rpc"
	"tether/server"
	"tether/structs"
)

// heartbeatInterval is how often an idle framed stream sends "{}", so
// proxies and load balancers keep the connection.
const heartbeatInterval = time.Second

// maxPathLen bounds the path parameter of the file endpoints.
const maxPathLen = 4096

// clientFS serves /v1/client/fs/:op/:alloc_id.
func (a *Agent) clientFS(w http.ResponseWriter, r *http.Request) (any, error) {
	vars := mux.Vars(r)
	op, allocID := vars["op"], vars["id"]
	if allocID == "" {
		return nil, structs.BadRequest("must provide a valid alloc id")
	}
	if err := structs.ValidateUUID("alloc", allocID); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	path := q.Get("path")
	if len(path) > maxPathLen {
		return nil, structs.BadRequest("path is longer than %d bytes", maxPathLen)
	}
	if strings.IndexByte(path, 0) >= 0 {
		return nil, structs.BadRequest("path must not contain NUL")
	}
	qo := queryOptions(r)
	switch op {
	case "cat", "readat", "stream", "logs":
		if err := a.streams.acquire(); err != nil {
			return nil, err
		}
		defer a.streams.release()
	}
	switch op {
	case "ls":
		if path == "" {
			path = "/"
		}
		req := structs.FsListRequest{AllocID: allocID, Path: path, QueryOptions: qo}
		return a.backend.routeJSON(r.Context(), server.Target{AllocID: allocID}, structs.MethodFsList, &req)
	case "stat":
		if path == "" {
			return nil, structs.BadRequest("must provide a file name")
		}
		req := structs.FsListRequest{AllocID: allocID, Path: path, QueryOptions: qo}
		return a.backend.routeJSON(r.Context(), server.Target{AllocID: allocID}, structs.MethodFsStat, &req)
	case "cat", "readat":
		if path == "" {
			return nil, structs.BadRequest("must provide a file name")
		}
		req := structs.FsReadAtRequest{AllocID: allocID, Path: path, Offset: 0, Limit: -1, QueryOptions: qo}
		if op == "readat" {
			var err error
			if req.Offset, err = strconv.ParseInt(q.Get("offset"), 10, 64); err != nil {
				return nil, structs.BadRequest("error parsing offset: %v", err)
			}
			if req.Offset < 0 {
				return nil, structs.BadRequest("offset must not be negative")
			}
			if l := q.Get("limit"); l != "" {
				if req.Limit, err = strconv.ParseInt(l, 10, 64); err != nil {
					return nil, structs.BadRequest("error parsing limit: %v", err)
				}
			}
		}
		rt, err := a.backend.route(r.Context(), server.Target{AllocID: allocID}, structs.MethodFsReadAt, &req)
		if err != nil {
			return nil, err
		}
		if rt.local {
			return nil, a.readAtLocal(w, r, &req)
		}
		if done, err := a.readAtDataCall(w, r, rt, &req); done || err != nil {
			return nil, err
		}
		st, data, done, err := rt.streamWithData(r.Context(), structs.MethodFsReadAt, &req, &req.DataToken)
		if err != nil {
			return nil, err
		}
		defer done()
		return nil, a.streamRaw(w, r, st, data, rt)
	case "stream":
		if path == "" {
			return nil, structs.BadRequest("must provide a file name")
		}
		req := structs.FsStreamRequest{AllocID: allocID, Path: path, Follow: true, QueryOptions: qo}
		var err error
		if req.Follow, err = queryBool(q, "follow", req.Follow); err != nil {
			return nil, err
		}
		if req.Offset, err = queryOffset(q); err != nil {
			return nil, err
		}
		if req.Origin, err = parseOrigin(q.Get("origin")); err != nil {
			return nil, err
		}
		rec := &logRecords{contentType: "text/plain; charset=utf-8", alloc: allocID}
		if rec.format, err = parseLogFormat(q, false); err != nil {
			return nil, err
		}
		if err := resumeStream(&req, resumeFrom(r, rec.format)); err != nil {
			return nil, err
		}
		rt, err := a.backend.route(r.Context(), server.Target{AllocID: allocID}, structs.MethodFsStream, &req)
		if err != nil {
			return nil, err
		}
		st, err := rt.stream(r.Context(), structs.MethodFsStream, &req)
		if err != nil {
			return nil, err
		}
		return nil, a.streamRecords(w, r, st, rec, nil)
	case "logs":
		req := structs.FsLogsRequest{AllocID: allocID, QueryOptions: qo}
		if req.Task = q.Get("task"); req.Task == "" {
			return nil, structs.BadRequest("must provide task name")
		}
		var err error
		if req.Follow, err = queryBool(q, "follow", req.Follow); err != nil {
			return nil, err
		}
		if req.Plain, err = queryBool(q, "plain", false); err != nil {
			return nil, err
		}
		switch req.LogType = q.Get("type"); req.LogType {
		case "stdout", "stderr":
		default:
			return nil, structs.BadRequest("must provide log type (stdout/stderr)")
		}
		if req.Offset, err = queryOffset(q); err != nil {
			return nil, err
		}
		if req.Origin, err = parseOrigin(q.Get("origin")); err != nil {
			return nil, err
		}
		rec, err := parseLogsExt(r, &req)
		if err != nil {
			return nil, err
		}
		rt, err := a.backend.route(r.Context(), server.Target{AllocID: allocID}, structs.MethodFsLogs, &req)
		if err != nil {
			return nil, err
		}
		var token *[]byte
		if !req.Follow && !req.LineMode { // a read that follows stays on the stream
			token = &req.DataToken
		}
		st, data, done, err := rt.streamWithData(r.Context(), structs.MethodFsLogs, &req, token)
		if err != nil {
			return nil, err
		}
		defer done()
		return nil, a.streamRecords(w, r, st, rec, data)
	default:
		return nil, structs.NotFound("Invalid method")
	}
}

// queryBool parses an optional boolean parameter (def when absent).
func queryBool(q url.Values, name string, def bool) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, structs.BadRequest("failed to parse %s field to boolean: %v", name, err)
	}
	return b, nil
}

// queryOffset parses the optional, non-negative offset parameter.
func queryOffset(q url.Values) (int64, error) {
	v := q.Get("offset")
	if v == "" {
		return 0, nil
	}
	off, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, structs.BadRequest("error parsing offset: %v", err)
	}
	if off < 0 {
		return 0, structs.BadRequest("offset must not be negative")
	}
	return off, nil
}

func parseOrigin(o string) (string, error) {
	switch o {
	case "":
		return "start", nil
	case "start", "end":
		return o, nil
	}
	return "", structs.BadRequest("origin must be start or end")
}

// firstFrame waits for the node's acknowledgement (or its error, which
// becomes the HTTP status since nothing was written yet).
func firstFrame(st *rpc.Stream) (structs.StreamFrame, error) {
	var ack structs.StreamFrame
	if err := st.Recv(&ack); err != nil && !errors.Is(err, io.EOF) {
		return ack, err
	}
	return ack, nil
}

// ackAndData reads the node's acknowledgement from st and, when it
// announced one, takes its data connection (nil otherwise), which the
// caller closes.
func ackAndData(r *http.Request, st *rpc.Stream, data <-chan net.Conn) (net.Conn, error) {
	ack, err := firstFrame(st)
	if err != nil {
		return nil, err
	}
	noteRelayed(routeHeaderOf(r.Context()), ack.Via, ack.Hops)
	if !ack.DataConn {
		return nil, nil
	}
	return awaitData(r, data)
}

// awaitData takes the data connection a node announced; it made the
// connection before it said so, so the wait is short.
func awaitData(r *http.Request, data <-chan net.Conn) (net.Conn, error) {
	if data == nil {
		return nil, structs.NewError(http.StatusBadGateway, "node announced a data connection nobody offered")
	}
	select {
	case dc := <-data:
		return dc, nil
	case <-r.Context().Done():
		return nil, r.Context().Err()
	case <-time.After(dataConnWait):
		return nil, structs.NewError(http.StatusBadGateway, "node announced a data connection that did not arrive")
	}
}

// outFrame is one message of a frame stream on its way to the HTTP
// writer: a decoded frame, or raw data (plain logs) still in the message
// buffer it arrived in.
type outFrame struct {
	structs.StreamFrame
	raw rpc.Msg
}

// data returns the bytes the frame carries.
func (f *outFrame) data() []byte {
	if f.raw.Raw() {
		return f.raw.Bytes()
	}
	return f.Data
}

// framePool recycles frames (and their data buffers) between the stream
// reader and the HTTP writer.
var framePool = sync.Pool{New: func() any { return new(outFrame) }}

// putFrame releases f's message and recycles f.
func putFrame(f *outFrame) {
	f.raw.Release()
	f.raw = rpc.Msg{}
	framePool.Put(f)
}

// frameReader moves frames from the stream to a channel, so the writer can
// also send heartbeats. It ends when the stream ends; its error (nil on a
// clean end) is delivered last.
func frameReader(ctx context.Context, st *rpc.Stream) (<-chan *outFrame, <-chan error) {
	frames := make(chan *outFrame, 4)
	errc := make(chan error, 1)
	go func() {
		defer close(frames)
		for {
			m, err := st.RecvMsg()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				errc <- err
				return
			}
			f := framePool.Get().(*outFrame)
			f.StreamFrame = structs.StreamFrame{Data: f.Data[:0]} // reuse the data buffer
			if m.Raw() {
				f.raw = m
			} else {
				err = m.Decode(&f.StreamFrame)
				m.Release()
				if err != nil {
					putFrame(f)
					errc <- err
					return
				}
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				putFrame(f)
				errc <- ctx.Err()
				return
			}
		}
	}()
	return frames, errc
}

// streamFrames answers a frame stream as JSON frames, or in plain mode
// the raw data only.
func (a *Agent) streamFrames(w http.ResponseWriter, r *http.Request, st *rpc.Stream, contentType string, plain bool, data <-chan net.Conn) error {
	rec := &logRecords{contentType: contentType}
	if plain {
		rec.format = formatPlain
	}
	return a.streamRecords(w, r, st, rec, data)
}

// streamRecords answers a frame stream in rec's format: JSON frames back
// to back (with a "{}" heartbeat each idle second), the raw data only
// (plain), or NDJSON or SSE records (an SSE comment every 10 s). Each
// write is flushed; a slow reader slows the node through flow control.
// The stream is closed on every path.
func (a *Agent) streamRecords(w http.ResponseWriter, r *http.Request, st *rpc.Stream, rec *logRecords, data <-chan net.Conn) error {
	defer st.Close()
	dc, err := ackAndData(r, st, data)
	if err != nil {
		return err
	}
	if dc != nil {
		defer dc.Close()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", rec.ContentType())
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	if dc != nil {
		a.copyDataStream(w, r, st, dc)
		return nil
	}

	frames, errc := frameReader(ctx, st)
	// Framed streams beat every second, data or not, as Nomad: "{}" is
	// ignored by decoders and keeps idle proxies from cutting the
	// stream. SSE sends a comment every 10 s; plain and NDJSON none.
	beat, every := rec.heartbeat()
	var hbc <-chan time.Time
	if beat != nil {
		hb := time.NewTicker(every)
		defer hb.Stop()
		hbc = hb.C
	}
	var out []byte
	write := func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		_, err := w.Write(b)
		a.streamed.frames.Add(uint64(len(b)))
		return err
	}
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				if err := <-errc; err != nil && r.Context().Err() == nil {
					a.logger.Named("http").Debug("stream ended with error", "path", r.URL.Path, "error", err)
				}
				if tail := rec.finish(out[:0]); len(tail) > 0 && write(tail) == nil {
					_ = rc.Flush()
				}
				return nil
			}
			// Under HTTPS the TLS records of one frame (and its flush)
			// leave in one socket write.
			err := rpc.WithBatch(r.Context(), func() error {
				var err error
				switch {
				case f.raw.Raw() && rec.rawOK():
					err = write(f.data())
				case f.raw.Raw():
					err = errors.New("raw message on a framed stream")
				default:
					out = rec.appendFrame(out[:0], &f.StreamFrame)
					err = write(out)
				}
				if err == nil && len(frames) == 0 {
					err = rc.Flush()
				}
				return err
			})
			putFrame(f)
			if err != nil {
				return nil // the caller went away; the deferred Close stops the node
			}
		case <-hbc:
			if _, err := w.Write(beat); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		case <-r.Context().Done():
			return nil
		}
	}
}

// streamRaw answers cat and readat: the node's header (length and content
// type, or its error, which becomes the HTTP status since nothing was
// written yet), then its raw messages written as they arrive, with no
// decoding. Content-Length is the header's length, so a read that ends
// short can never look complete; headers keep a browser from running what
// it reads.
func (a *Agent) streamRaw(w http.ResponseWriter, r *http.Request, st *rpc.Stream, data <-chan net.Conn, rt *callRoute) error {
	defer st.Close()
	var hdr structs.FsReadAtHeader
	if err := st.Recv(&hdr); err != nil {
		return err
	}
	if err := checkReadHeader(&hdr); err != nil {
		return err
	}
	noteRelayed(rt.hdr, hdr.Via, hdr.Hops)
	var dc net.Conn
	if hdr.DataConn {
		var err error
		if dc, err = awaitData(r, data); err != nil {
			return err
		}
	}
	writeRawHeader(w, &hdr)
	if dc != nil {
		// The node's clean result on the stream says the bytes it sent
		// were all it meant to send.
		result := func() error { return st.Recv(nil) }
		keep := rt.poolData
		return a.copyData(w, r, dc, nil, hdr.Length, result, keep) // closes dc or keeps it
	}
	var sent int64
	for {
		m, err := st.RecvMsg()
		if err == nil && (!m.Raw() || sent+int64(len(m.Bytes())) > hdr.Length) {
			m.Release()
			err = fmt.Errorf("node sent more than the %d bytes it announced", hdr.Length)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && sent == hdr.Length {
				return nil
			}
			if r.Context().Err() == nil {
				a.logger.Named("http").Debug("read ended with error", "path", r.URL.Path, "error", err)
			}
			// A truncated body must not look complete.
			panic(http.ErrAbortHandler)
		}
		var n int
		var werr error
		if r.TLS != nil {
			// The TLS records of one message leave in one socket write;
			// in plain HTTP the message already is one write.
			werr = rpc.WithBatch(r.Context(), func() (err error) {
				n, err = w.Write(m.Bytes())
				return err
			})
		} else {
			n, werr = w.Write(m.Bytes())
		}
		m.Release()
		sent += int64(n)
		a.streamed.raw.Add(uint64(n))
		if werr != nil {
			return nil // the caller went away; the deferred Close stops the node
		}
	}
}

// dataConnWait bounds the wait for a data connection the node announced.
const dataConnWait = 10 * time.Second

// checkReadHeader refuses a read header no node would send.
func checkReadHeader(hdr *structs.FsReadAtHeader) error {
	if hdr.Length < 0 || hdr.ContentType == "" {
		return structs.NewError(http.StatusBadGateway, "node sent an invalid read header")
	}
	return nil
}

// writeRawHeader commits the 200 of a cat or readat: the exact length,
// the sniffed content type, and headers that keep a browser from running
// what it reads.
func writeRawHeader(w http.ResponseWriter, hdr *structs.FsReadAtHeader) {
	h := w.Header()
	h.Set("Content-Type", hdr.ContentType)
	h.Set("Content-Length", strconv.FormatInt(hdr.Length, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-XSS-Protection", "1; mode=block")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	w.WriteHeader(http.StatusOK)
}

// readAtLocal answers a cat or readat of an allocation this node runs
// from the file itself: no stream, and sendfile(2) into a plain HTTP
// response. A read that ends short aborts the response, so it cannot
// look complete.
func (a *Agent) readAtLocal(w http.ResponseWriter, r *http.Request, req *structs.FsReadAtRequest) error {
	ra, err := a.backend.client.OpenReadAt(r.Context(), req)
	if err != nil {
		return err
	}
	defer ra.Close()
	hdr := ra.Header()
	writeRawHeader(w, hdr)
	var n int64
	if r.TLS == nil {
		n, err = ra.WriteTo(w)
	} else {
		// crypto/tls cannot take sendfile; one socket write per chunk.
		var src io.Reader
		if src, err = ra.Reader(); err == nil {
			n, err = rpc.CopyData(w, src, batchedWriter(w, r))
		}
	}
	a.streamed.local.Add(uint64(max(n, 0)))
	if err != nil || n < hdr.Length {
		if r.Context().Err() == nil {
			a.logger.Named("http").Debug("read ended with error", "path", r.URL.Path, "error", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// readAtDataCall answers a cat or readat with a data call (a server
// holding a data connection of the allocation's node), and reports
// whether it did; if not, the read takes a stream. An error is the
// call's answer.
func (a *Agent) readAtDataCall(w http.ResponseWriter, r *http.Request, rt *callRoute, req *structs.FsReadAtRequest) (bool, error) {
	var hdr structs.FsReadAtHeader
	dc, head, keep, err := rt.dataCall(r.Context(), structs.MethodFsReadAt, req, &hdr)
	if err != nil || dc == nil {
		return err != nil, err
	}
	if err := checkReadHeader(&hdr); err != nil || int64(len(head)) > hdr.Length {
		dc.Close()
		return true, structs.NewError(http.StatusBadGateway, "node sent an invalid read header")
	}
	writeRawHeader(w, &hdr)
	return true, a.copyData(w, r, dc, head, hdr.Length, nil, keep)
}

// copyData answers a read whose bytes come on a data connection: exactly
// length bytes, head (already read) and then the rest from dc, copied
// socket to socket (splice on plain HTTP). result, if set, tells whether
// the node meant the transfer to end there. A short copy aborts the
// response, so it cannot look complete; closing dc on any early return
// stops the node. A clean transfer gives dc to keep, which pools it for
// the node's next read (a data call).
func (a *Agent) copyData(w http.ResponseWriter, r *http.Request, dc net.Conn, head []byte, length int64, result func() error, keep func(net.Conn)) error {
	stop := context.AfterFunc(r.Context(), func() { dc.Close() })
	clean := false
	defer func() {
		if stop() && clean {
			keep(dc)
		} else {
			dc.Close()
		}
	}()
	n, err := int64(0), error(nil)
	if len(head) > 0 {
		var m int
		m, err = w.Write(head)
		n = int64(m)
	}
	if err == nil && n < length {
		var m int64
		rest := io.LimitReader(dc, length-n)
		if tc, tcp := rpc.DataNetConn(dc).(*net.TCPConn); tcp && r.TLS == nil {
			// From the socket itself, which splice(2) wants; dc, which
			// holds the connection's slot, is still what is closed.
			m, err = io.Copy(w, io.LimitReader(tc, length-n)) // splice(2)
		} else {
			m, err = rpc.CopyData(w, rest, batchedWriter(w, r))
		}
		n += m
	}
	a.streamed.data.Add(uint64(n))
	if err == nil && n < length {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && result != nil {
		if err = result(); errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err == nil {
		clean = true
		return nil
	}
	if r.Context().Err() == nil {
		a.logger.Named("http").Debug("read ended with error", "path", r.URL.Path, "error", err)
	}
	if n < length {
		panic(http.ErrAbortHandler) // a truncated body must not look complete
	}
	return nil
}

// copyDataStream answers a log read whose bytes (plain, or JSON frames the
// node encoded) come on a data connection: 256 KiB chunks, each in one
// socket write, until the node closes the connection; then the node's
// result from the stream.
func (a *Agent) copyDataStream(w http.ResponseWriter, r *http.Request, st *rpc.Stream, dc net.Conn) {
	stop := context.AfterFunc(r.Context(), func() { dc.Close() })
	defer stop()
	n, err := rpc.CopyData(w, dc, batchedWriter(w, r))
	a.streamed.data.Add(uint64(max(n, 0)))
	if err != nil {
		return // the caller went away (or the node did); closing dc stops the node
	}
	if err := st.Recv(nil); !errors.Is(err, io.EOF) && r.Context().Err() == nil {
		a.logger.Named("http").Debug("stream ended with error", "path", r.URL.Path, "error", err)
	}
}

// batchedWriter writes one chunk of a response in one socket write.
func batchedWriter(w http.ResponseWriter, r *http.Request) func([]byte) error {
	return func(p []byte) error {
		return rpc.WithBatch(r.Context(), func() error {
			_, err := w.Write(p)
			return err
		})
	}
}
