package client

import (
	"context"
	"io"

	"tether/structs"
)

// ReadAt is an open cat or readat: the file's range reader, where the
// read starts and how long it is, and (once sniffed) its first bytes.
type ReadAt struct {
	fs     *AllocFS
	rc     *rangeReader
	start  int64
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
	rc, info, err := fs.openRange(req.Path, req.Offset, req.Limit)
	if err != nil {
		fs.Close()
		return nil, err
	}
	length := max(info.Size-req.Offset, 0)
	if req.Limit > 0 && req.Limit < length {
		length = req.Limit
	}
	return &ReadAt{fs: fs, rc: rc, start: req.Offset, length: length, path: req.Path}, nil
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

// Reader returns the read's bytes from the file itself, from its start,
// so that a socket's ReadFrom can send them with sendfile(2) (the sniffed
// head was only looked at). Only one reader of a ReadAt is used at a time.
func (r *ReadAt) Reader() (io.Reader, error) {
	if _, err := r.rc.file.Seek(r.start, io.SeekStart); err != nil {
		return nil, fsReadErr(r.rc.rel, err)
	}
	return &io.LimitedReader{R: r.rc.file, N: r.length}, nil
}

// WriteTo writes the read's bytes to w, exactly its length (sendfile(2)
// where w is a socket that takes it, such as a plain HTTP response with
// Content-Length). A file that shrank fails with fewer bytes written.
func (r *ReadAt) WriteTo(w io.Writer) (int64, error) {
	src, err := r.Reader()
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, src)
	if err == nil && n < r.length {
		err = errShrank(r.path)
	}
	return n, err
}

// Close releases the file and the allocation directory.
func (r *ReadAt) Close() error {
	r.rc.Close()
	return r.fs.Close()
}
