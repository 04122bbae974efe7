package client

import (
	"bytes"
	"context"
	"io"

	"tether/structs"
)

// ReadAt is an open cat or readat: the file's reader, the length the read
// will have, and (once sniffed) its first bytes.
type ReadAt struct {
	fs     *AllocFS
	rc     io.ReadCloser
	length int64
	path   string
	head   []byte
}

// openReadAt checks and opens the read req asks for.
func (c *Client) openReadAt(ctx context.Context, req *structs.FsReadAtRequest) (*ReadAt, error) {
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
	return &ReadAt{fs: fs, rc: rc, length: length, path: req.Path}, nil
}

// OpenReadAt checks and opens a cat or readat and sniffs its content
// type, for a caller that sends the bytes itself without a stream: the
// node's own HTTP API (WriteTo) and data calls. Close releases it.
func (c *Client) OpenReadAt(ctx context.Context, req *structs.FsReadAtRequest) (*ReadAt, error) {
	r, err := c.openReadAt(ctx, req)
	if err != nil {
		return nil, err
	}
	head := make([]byte, min(r.length, sniffLen))
	n, _, err := readChunk(r.rc, head)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.head = head[:n]
	return r, nil
}

// Header is the read's header: its length and the content type sniffed
// from its first bytes.
func (r *ReadAt) Header() *structs.FsReadAtHeader {
	return r.header(r.head)
}

// header is the read's FsReadAtHeader, its content type sniffed from head.
func (r *ReadAt) header(head []byte) *structs.FsReadAtHeader {
	return &structs.FsReadAtHeader{Length: r.length, ContentType: rawContentType(head[:min(len(head), sniffLen)])}
}

// WriteTo writes the read's bytes to w, exactly its length: the sniffed
// head, then the rest from the file (sendfile(2) where w is a socket that
// takes it, such as a plain HTTP response with Content-Length). A file
// that shrank fails with fewer bytes written.
func (r *ReadAt) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(r.head)
	written := int64(n)
	if err != nil {
		return written, err
	}
	src, err := r.rest()
	if err != nil {
		return written, err
	}
	m, err := io.Copy(w, src)
	written += m
	if err == nil && written < r.length {
		err = errShrank(r.path)
	}
	return written, err
}

// Reader returns the read's bytes: the sniffed head, then the rest of
// the file up to the read's length.
func (r *ReadAt) Reader() (io.Reader, error) {
	src, err := r.rest()
	if err != nil {
		return nil, err
	}
	return io.MultiReader(bytes.NewReader(r.head), src), nil
}

// rest is the read after its head: the file itself at the reader's
// offset, so that a socket's ReadFrom can send it without copying it
// through user space.
func (r *ReadAt) rest() (io.Reader, error) {
	n := r.length - int64(len(r.head))
	rr, ok := r.rc.(*rangeReader)
	if !ok {
		return io.LimitReader(r.rc, n), nil
	}
	if _, err := rr.file.Seek(rr.off, io.SeekStart); err != nil {
		return nil, fsReadErr(rr.rel, err)
	}
	return &io.LimitedReader{R: rr.file, N: n}, nil
}

// Close releases the file and the allocation directory.
func (r *ReadAt) Close() error {
	r.rc.Close()
	return r.fs.Close()
}
