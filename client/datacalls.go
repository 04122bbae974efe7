package client

import (
	"context"
	"io"
	"net"
	"sync"

	"tether/rpc"
	"tether/structs"
)

// dataCallers owns the goroutines that answer a server's data calls on
// the data connections earlier bulk reads left open (rpc.ServeDataCalls).
// The zero value is ready to use.
type dataCallers struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// serveDataCalls answers the server's data calls on dc, a data connection
// whose transfer ended exactly at its length, until either side closes it
// or the agent stops.
func (c *Client) serveDataCalls(dc net.Conn) {
	d := &c.dataCallers
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		dc.Close()
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		rpc.ServeDataCalls(c.ctx, dc, c.rpcCfg, c.dataCall)
	}()
}

// stop waits for the data call goroutines, which end with the agent's
// context; later connections are closed at once.
func (d *dataCallers) stop() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.wg.Wait()
}

// dataCall answers one data call: cat and readat (FsReadAt), with the
// same checks and the same bytes as on the stream.
func (c *Client) dataCall(ctx context.Context, method string, decode func(any) error, reply func(any) (net.Conn, error)) error {
	if method != structs.MethodFsReadAt {
		return structs.NotFound("unknown data call %q", method)
	}
	var req structs.FsReadAtRequest
	if err := decode(&req); err != nil {
		return structs.BadRequest("bad data call: %v", err)
	}
	r, err := c.openReadAt(ctx, &req)
	if err != nil {
		return err
	}
	defer r.close()
	head, err := r.sniff(make([]byte, sniffLen))
	if err != nil {
		return err
	}
	dc, err := reply(r.header(head))
	if err != nil {
		return err
	}
	return sendData(ctx, dc, head, r.rc, r.length, req.Path)
}

// readAt is an open cat or readat: the file's reader and the length the
// read will have.
type readAt struct {
	fs     *AllocFS
	rc     io.ReadCloser
	length int64
}

// openReadAt checks and opens the read req asks for.
func (c *Client) openReadAt(ctx context.Context, req *structs.FsReadAtRequest) (*readAt, error) {
	if err := c.authorizeAlloc(ctx, structs.MethodFsReadAt, req, req.AllocID); err != nil {
		return nil, err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return nil, err
	}
	rc, info, err := fs.OpenRange(req.Path, req.Offset, req.Limit)
	if err != nil {
		fs.Close()
		return nil, err
	}
	length := max(info.Size-req.Offset, 0)
	if req.Limit > 0 && req.Limit < length {
		length = req.Limit
	}
	return &readAt{fs: fs, rc: rc, length: length}, nil
}

// sniff reads the first bytes of the read into buf (no more than its
// length) and returns them.
func (r *readAt) sniff(buf []byte) ([]byte, error) {
	n, _, err := readChunk(io.LimitReader(r.rc, r.length), buf)
	return buf[:n], err
}

// header is the read's FsReadAtHeader, its content type sniffed from head.
func (r *readAt) header(head []byte) *structs.FsReadAtHeader {
	return &structs.FsReadAtHeader{Length: r.length, ContentType: rawContentType(head[:min(len(head), sniffLen)])}
}

func (r *readAt) close() {
	r.rc.Close()
	r.fs.Close()
}
