package client

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"syscall"

	gzip "github.com/klauspost/pgzip"

	"tether/rpc"
	"tether/structs"
)

// Archives: GET /v1/client/fs/archive/:alloc_id streams a directory of an
// allocation as a tar (gzipped or not) built here, on the node. The
// safety model is cat's (allocfs.go): the requested path is cleaned and
// resolved through the allocation's os.Root, secrets and private dirs are
// refused, and the walk then goes through the same Root without ever
// following a symlink: a link is stored as a link (its target text), so
// nothing outside the allocation dir is read whatever the links say.
// Inside the walk, a task's secrets and private dirs are left out.

// maxArchiveDepth bounds the nesting the walk descends into.
const maxArchiveDepth = 256

// maxArchiveEntries bounds the entries of one archive.
const maxArchiveEntries = 1 << 20

// archiveBufSize is the write size towards the connection: the data
// connection's and the HTTP side's chunk.
const archiveBufSize = 256 << 10

// Archive is an open archive request: the directory resolved and checked,
// the walk not started. Close releases it.
type Archive struct {
	fs     *AllocFS
	rel    string // the request's cleaned path, for messages
	canon  string // the directory inside the alloc dir
	format string
}

// OpenArchive checks the caller's token and the request and opens the
// directory it names: a bad format, an escape or a file is a 400 that
// names the parameter, secrets a 403, a missing directory a 404.
func (c *Client) OpenArchive(ctx context.Context, req *structs.FsArchiveRequest) (*Archive, error) {
	if err := c.authorizeAlloc(ctx, structs.MethodFsArchive, req, req.AllocID); err != nil {
		return nil, err
	}
	if err := CheckArchiveFormat(req.Format); err != nil {
		return nil, err
	}
	afs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return nil, err
	}
	a, err := afs.openArchive(req.Path, req.Format)
	if err != nil {
		afs.Close()
		return nil, err
	}
	return a, nil
}

// CheckArchiveFormat refuses a format other than tar and tar.gz.
func CheckArchiveFormat(format string) error {
	switch format {
	case structs.ArchiveTar, structs.ArchiveTarGz:
		return nil
	}
	return structs.BadRequest("format must be %q or %q, not %q", structs.ArchiveTarGz, structs.ArchiveTar, format)
}

// openArchive resolves the directory p ("" is the alloc dir).
func (f *AllocFS) openArchive(p, format string) (*Archive, error) {
	rel, err := fsCleanRel(p)
	if err != nil {
		f.countRefused()
		return nil, structs.BadRequest("path: %v", err)
	}
	canon, fi, err := f.lstatChecked(rel)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, structs.BadRequest("path %q is not a directory (an archive takes a directory; cat reads a file)", rel)
	}
	return &Archive{fs: f, rel: rel, canon: canon, format: format}, nil
}

// Close releases the allocation directory.
func (a *Archive) Close() error { return a.fs.Close() }

// An archive's gzip compresses archiveGzipBlocks blocks of
// archiveGzipBlock bytes at once (klauspost/pgzip): about 4 MiB held per
// archive while it runs, whatever the number of cores.
const (
	archiveGzipBlock  = 512 << 10
	archiveGzipBlocks = 4
)

// ContentType is the archive's media type.
func (a *Archive) ContentType() string { return ArchiveContentType(a.format) }

// ArchiveContentType is the media type of an archive format.
func ArchiveContentType(format string) string {
	if format == structs.ArchiveTar {
		return "application/x-tar"
	}
	return "application/gzip"
}

// WriteTo writes the archive to w: the entries of the directory, named
// relative to it, in name order, directories before what they hold. It
// ends with tar's end-of-archive blocks (and gzip's trailer) only when
// every entry was written whole, so an archive cut short by an error is
// seen as truncated by any reader. ctx ending stops the walk.
func (a *Archive) WriteTo(ctx context.Context, w io.Writer) error {
	bw := bufio.NewWriterSize(w, archiveBufSize)
	var out io.Writer = bw
	var gz *gzip.Writer
	if a.format == structs.ArchiveTarGz {
		// BestSpeed: the archive is made on the node, beside its tasks, and
		// sent over a network that is rarely slower than level 1. Blocks
		// are compressed on up to archiveGzipBlocks cores at once (one
		// core made text the bound: 0.4 of cat's rate), which holds at
		// most that many blocks in and out per archive.
		var err error
		if gz, err = gzip.NewWriterLevel(bw, gzip.BestSpeed); err != nil {
			return err
		}
		if err = gz.SetConcurrency(archiveGzipBlock, archiveGzipBlocks); err != nil {
			return err
		}
		out = gz
	}
	tw := tar.NewWriter(out)
	bp := fsCopyBufPool.Get().(*[]byte)
	defer fsCopyBufPool.Put(bp)
	wk := &archiveWalk{ctx: ctx, fs: a.fs, tw: tw, buf: *bp}
	if err := wk.dir(a.canon, "", 0); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// archiveWalk is one archive's walk of its directory.
type archiveWalk struct {
	ctx     context.Context
	fs      *AllocFS
	tw      *tar.Writer
	buf     []byte
	entries int
}

// dir writes the entries of the directory canon (inside the alloc dir)
// under the archive name prefix.
func (wk *archiveWalk) dir(canon, prefix string, depth int) error {
	if depth > maxArchiveDepth {
		return structs.BadRequest("path: directories nest deeper than %d", maxArchiveDepth)
	}
	ents, err := wk.fs.readDir(canon)
	if err != nil {
		return wk.fs.pathErr(canon, err)
	}
	slices.SortFunc(ents, func(x, y fs.DirEntry) int {
		switch {
		case x.Name() < y.Name():
			return -1
		case x.Name() > y.Name():
			return 1
		}
		return 0
	})
	for _, e := range ents {
		if err := wk.ctx.Err(); err != nil {
			return err
		}
		if wk.entries++; wk.entries > maxArchiveEntries {
			return structs.BadRequest("path: more than %d entries", maxArchiveEntries)
		}
		full := path.Join(canon, e.Name())
		if fsSecretKind(full) != "" {
			continue // a task's secrets and private dirs stay out
		}
		if err := wk.entry(full, path.Join(prefix, e.Name()), depth); err != nil {
			return err
		}
	}
	return nil
}

// entry writes one entry: a directory and what it holds, a symlink as a
// link, a regular file with its bytes; other kinds (fifos, devices,
// sockets) and entries gone since the listing are left out.
func (wk *archiveWalk) entry(full, name string, depth int) error {
	fi, err := wk.fs.root.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return wk.fs.pathErr(full, err)
	}
	switch m := fi.Mode(); {
	case m.IsDir():
		if err := wk.header(fi, name+"/", ""); err != nil {
			return err
		}
		return wk.dir(full, name, depth+1)
	case m&fs.ModeSymlink != 0:
		target, err := wk.fs.root.Readlink(full)
		if err != nil {
			return wk.fs.pathErr(full, err)
		}
		return wk.header(fi, name, target)
	case m.IsRegular():
		return wk.file(full, name, fi)
	}
	return nil
}

// file writes a regular file: its size when opened, exactly. A file that
// shrinks meanwhile fails the archive; bytes it gains are left out. The
// open goes through the Root without following a link swapped in.
func (wk *archiveWalk) file(full, name string, li os.FileInfo) error {
	f, err := wk.fs.root.OpenFile(full, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
		return nil // gone, or replaced by a link, since the listing
	}
	if err != nil {
		return wk.fs.pathErr(full, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fsReadErr(full, err)
	}
	if !fi.Mode().IsRegular() || !os.SameFile(li, fi) {
		return nil // replaced since the listing
	}
	if err := wk.header(fi, name, ""); err != nil {
		return err
	}
	n, err := io.CopyBuffer(wk.tw, io.LimitReader(onlyReader{f}, fi.Size()), wk.buf)
	if err != nil {
		var we *archiveWriteError
		if errors.As(err, &we) {
			return we.err
		}
		return fsReadErr(full, err)
	}
	if n < fi.Size() {
		return errShrank(full)
	}
	return nil
}

// header writes the tar header of fi named name (link: a symlink's
// target). Ownership is kept as numbers; no user database is read.
func (wk *archiveWalk) header(fi os.FileInfo, name, link string) error {
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("archive header of %q: %w", name, err)
	}
	h.Name = name
	if err := wk.tw.WriteHeader(h); err != nil {
		return &archiveWriteError{err}
	}
	return nil
}

// onlyReader hides an *os.File's WriterTo, so that io.CopyBuffer uses the
// buffer (the tar writer is no socket sendfile could reach).
type onlyReader struct{ io.Reader }

// archiveWriteError marks an error of the archive's destination (the
// caller went away), as opposed to reading the allocation's files.
type archiveWriteError struct{ err error }

func (e *archiveWriteError) Error() string { return e.err.Error() }
func (e *archiveWriteError) Unwrap() error { return e.err }

// registerArchiveEndpoint adds FileSystem.Archive.
func (c *Client) registerArchiveEndpoint() {
	c.mux.HandleStream(structs.MethodFsArchive, c.fsArchive)
}

// fsArchive serves FileSystem.Archive: the acknowledgement once the
// directory is open, then the archive on the data connection the server
// offered (closed at its end) or as raw messages, then the result. The
// caller closing the stream (or the data connection) stops the walk.
func (c *Client) fsArchive(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsArchiveRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	a, err := c.OpenArchive(ctx, &req)
	if err != nil {
		return err
	}
	defer a.Close()
	if dc := c.dataConn(ctx, req.DataToken); dc != nil {
		defer dc.Close() // the archive's bytes end when the node closes it
		stop := context.AfterFunc(ctx, func() { dc.Close() })
		defer stop()
		if err := s.Send(&structs.StreamFrame{DataConn: true}); err != nil {
			return err
		}
		return a.WriteTo(ctx, writerFunc(func(p []byte) (int, error) { return rpc.WriteData(dc, p) }))
	}
	if err := ack(s); err != nil {
		return err
	}
	return a.WriteTo(ctx, writerFunc(func(p []byte) (int, error) {
		for rest := p; len(rest) > 0; {
			n := min(len(rest), rawChunkSize)
			if err := s.SendRaw(rest[:n]); err != nil {
				return len(p) - len(rest), err
			}
			rest = rest[n:]
		}
		return len(p), nil
	}))
}

// writerFunc is a func as an io.Writer; its errors are the destination's.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) {
	n, err := f(p)
	if err != nil {
		err = &archiveWriteError{err}
	}
	return n, err
}
