package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"tether/rpc"
	"tether/structs"
)

// registerFSEndpoints adds the allocation filesystem methods: list and stat
// (unary), and readat, stream and logs (streaming; the first frame is an
// empty acknowledgement sent once the request is valid and the file open),
// and readat as a bulk method, for the data calls a server makes on the
// data connections earlier reads left open.
func (c *Client) registerFSEndpoints() {
	rpc.HandleUnary(c.mux, structs.MethodFsList, c.fsList)
	rpc.HandleUnary(c.mux, structs.MethodFsStat, c.fsStat)
	c.mux.HandleStream(structs.MethodFsReadAt, c.fsReadAt)
	c.mux.HandleStream(structs.MethodFsStream, c.fsStream)
	c.mux.HandleStream(structs.MethodFsLogs, c.fsLogs)
	rpc.HandleBulk(c.mux, structs.MethodFsReadAt, c.fsReadAtBulk)
}

// allocFS opens the allocation's directory for reading.
func (c *Client) allocFS(allocID string) (*AllocFS, *allocRunner, error) {
	ar, err := c.runnerFor(allocID)
	if err != nil {
		return nil, nil, err
	}
	if ar.isDestroyed() {
		return nil, nil, structs.NotFound("allocation %s was garbage collected on this node", allocID)
	}
	fs, err := OpenAllocFS(ar.dir.Dir, allocID)
	if err != nil {
		return nil, nil, err
	}
	fs.refused = &c.counters.pathsRefused
	return fs, ar, nil
}

func (c *Client) fsList(ctx context.Context, req *structs.FsListRequest, resp *structs.FsListResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodFsList, req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	resp.Files, err = fs.List(req.Path)
	return err
}

func (c *Client) fsStat(ctx context.Context, req *structs.FsListRequest, resp *structs.FsStatResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodFsStat, req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	resp.Info, err = fs.Stat(req.Path)
	return err
}

// rawChunkSize is the data per message of cat and readat: with its header
// a message is exactly half the yamux window, so one is in flight while
// the next is read, and no message straddles a window update (which would
// split it into two yamux frames, the second waiting for the update).
const rawChunkSize = 128<<10 - rpc.RawHeaderSize

// rawFramePool recycles the read buffers of cat and readat: a payload of
// rawChunkSize behind the headroom of a raw message.
var rawFramePool = sync.Pool{New: func() any {
	b := make([]byte, rpc.RawHeaderSize+rawChunkSize)
	return &b
}}

// ack tells the caller the request is valid and data may follow.
func ack(s *rpc.Stream) error { return s.Send(&structs.StreamFrame{}) }

// fsReadAt serves cat and readat: a structs.FsReadAtHeader once the file is
// open and its first bytes read, then exactly Header.Length bytes as raw
// messages, read into the message buffer and sent from it. The length is
// fixed when the file is opened (the HTTP layer sends it as
// Content-Length); a file that shrinks under the read fails the call.
func (c *Client) fsReadAt(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsReadAtRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	ra, err := c.openReadAt(ctx, &req)
	if err != nil {
		return err
	}
	defer ra.Close()
	r := io.LimitReader(ra.rc, ra.length)

	bp := rawFramePool.Get().(*[]byte)
	defer rawFramePool.Put(bp)
	frame := *bp
	payload := frame[rpc.RawHeaderSize:]
	// A read that may go on a data connection reads only what the content
	// type is sniffed from: the file goes by sendfile(2), head included.
	first := payload
	if ra.length >= dataConnMin && len(req.DataToken) > 0 {
		first = payload[:sniffLen]
	}
	n, end, err := readChunk(r, first)
	if err != nil {
		return err
	}
	hdr := ra.header(payload[:n])
	var dc net.Conn
	if ra.length >= dataConnMin {
		dc = c.dataConn(ctx, req.DataToken)
	}
	if dc != nil {
		hdr.DataConn = true
		err := s.Send(hdr)
		if err == nil {
			err = sendData(ctx, dc, ra)
		}
		if err != nil {
			dc.Close()
			return err
		}
		// Exactly length bytes went: the connection carries the server's
		// next reads of this node, as data calls.
		c.serveDataCalls(dc)
		return nil
	}
	if err := s.Send(hdr); err != nil {
		return err
	}
	var sent int64
	for n > 0 {
		if err := s.SendRawFrame(frame[:rpc.RawHeaderSize+n]); err != nil {
			return err
		}
		sent += int64(n)
		if end {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n, end, err = readChunk(r, payload); err != nil {
			return err
		}
	}
	if sent < ra.length {
		return errShrank(req.Path)
	}
	return nil
}

// sniffLen is how many leading bytes the content type is sniffed from
// (http.DetectContentType reads no more).
const sniffLen = 512

// dataConnMin is the smallest read worth a data connection. The dial pays
// for itself at once from a few dozen KiB: yamux (v0.1.2) grows a new
// stream's receive buffer by doubling, so a 64 KiB read on a fresh stream
// costs the server about 1 ms of allocating and clearing (four times a
// 1 KiB read), and the connection then carries the node's next reads as
// data calls. Smaller one-off reads stay on the stream.
const dataConnMin = 32 << 10

// readChunk fills buf from r. end reports that r is exhausted (buf may
// then hold fewer bytes); err is a read error other than that.
func readChunk(r io.Reader, buf []byte) (n int, end bool, err error) {
	n, err = io.ReadFull(r, buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return n, true, nil
	}
	return n, false, err
}

// errShrank fails a read that found less than the length it announced.
func errShrank(path string) error {
	return structs.NewError(http.StatusInternalServerError, "file %q shrank while it was read", path)
}

// dataConn makes the data connection a server offered with token, to the
// address of the session the call came on (inside TLS when the session
// is); or nil: no offer, or a refusal (the address leads to another
// server, a firewall), in which case the bytes go on the stream. After a
// refusal the node sends on the stream without dialing that address for
// a while (rpc.Config.DataRedialDelay).
func (c *Client) dataConn(ctx context.Context, token []byte) net.Conn {
	sess := rpc.SessionFromContext(ctx)
	if len(token) != rpc.DataTokenSize || sess == nil {
		return nil
	}
	dc, err := c.dataDialer.Dial(ctx, sess.RemoteAddr().String(), token)
	switch {
	case errors.Is(err, rpc.ErrDataDialSkipped):
		c.logger.Trace("no data connection; sending on the stream", "error", err)
		return nil
	case err != nil:
		c.logger.Debug("no data connection; sending on the stream", "error", err)
		return nil
	}
	return dc
}

// sendData writes read r to its data connection, exactly its length,
// with sendfile(2) where the connection (plain TCP) allows. A file that
// shrank fails the call; ctx ending closes dc.
func sendData(ctx context.Context, dc net.Conn, r *ReadAt) (err error) {
	stop := context.AfterFunc(ctx, func() { dc.Close() })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err() // dc was closed under us
		}
	}()
	src, err := r.Reader()
	if err != nil {
		return err
	}
	n, err := rpc.CopyData(dc, src, nil)
	if err != nil {
		return err
	}
	if n < r.length {
		return errShrank(r.path)
	}
	return nil
}

// rawContentType is the Content-Type of cat and readat, sniffed from the
// first bytes sent: never HTML or XML (a browser must not run what it
// reads), and text for an empty body.
func rawContentType(head []byte) string {
	if len(head) == 0 {
		return "text/plain; charset=utf-8"
	}
	ct := http.DetectContentType(head)
	if strings.HasPrefix(ct, "text/html") || strings.HasPrefix(ct, "text/xml") {
		return "text/plain"
	}
	return ct
}

func (c *Client) fsStream(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsStreamRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	if err := c.authorizeAlloc(ctx, structs.MethodFsStream, &req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	opts := StreamOptions{Path: req.Path, Offset: req.Offset, Origin: req.Origin, Follow: req.Follow,
		Ready: func() error { return ack(s) }}
	return fs.Stream(ctx, opts, func(f *structs.StreamFrame) error { return s.Send(f) })
}

func (c *Client) fsLogs(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsLogsRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	if err := c.authorizeAlloc(ctx, structs.MethodFsLogs, &req, req.AllocID); err != nil {
		return err
	}
	fs, ar, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	tasks := map[string]bool{}
	for name, st := range ar.taskStates() {
		tasks[name] = !st.StartedAt.IsZero()
	}
	opts := LogsOptions{Task: req.Task, Type: req.LogType, Offset: req.Offset, Origin: req.Origin, Follow: req.Follow,
		Tasks: tasks, Ready: func() error { return ack(s) }}
	if err := logsExtOptions(&opts, &req.LogsExt); err != nil {
		return err
	}
	if tr := ar.tasks[req.Task]; tr != nil {
		opts.TaskState = tr.snapshot
	}
	send := func(f *structs.StreamFrame) error { return s.Send(f) }
	if req.Plain && !opts.LineMode {
		send = func(f *structs.StreamFrame) error {
			if f.TaskEnd != nil {
				return s.Send(f) // the HTTP side writes it only with end_event
			}
			return s.SendRaw(f.Data) // nothing for an event: plain shows none
		}
	}
	// A read that does not follow is bulk: its bytes may go on a data
	// connection, as the HTTP API will show them (plain bytes, or the JSON
	// frames). Its length is not known up front, so any offer is taken.
	if !req.Follow && !opts.LineMode {
		if dc := c.dataConn(ctx, req.DataToken); dc != nil {
			defer dc.Close() // a log read ends when the node closes it
			stop := context.AfterFunc(ctx, func() { dc.Close() })
			defer stop()
			opts.Ready = func() error { return s.Send(&structs.StreamFrame{DataConn: true}) }
			var out []byte
			send = func(f *structs.StreamFrame) error {
				b := f.Data
				if !req.Plain {
					out = structs.AppendFrameJSON(out[:0], f)
					b = out
				}
				_, err := rpc.WriteData(dc, b)
				return err
			}
		}
	}
	return fs.Logs(ctx, opts, send)
}

// logsExtOptions takes Tether's additions to a log read (checked again
// here: a request may come from any server).
func logsExtOptions(opts *LogsOptions, e *structs.LogsExt) error {
	if e.Lines < 0 || e.Lines > structs.MaxLogLines {
		return structs.BadRequest("lines must be between 0 and %d", structs.MaxLogLines)
	}
	opts.Tail, opts.Lines, opts.Since, opts.Wait = e.Tail, e.Lines, e.Since, e.Wait
	opts.LineMode = e.LineMode || e.Tail || !e.Since.IsZero() || e.After != ""
	if e.After != "" {
		p, ok := structs.ParseLogPos(e.After)
		if !ok {
			return structs.BadRequest("after must be a position N.offset, got %q", e.After)
		}
		opts.After = &p
	}
	return nil
}
