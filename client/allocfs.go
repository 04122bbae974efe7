package client

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"tether/structs"
)

// This file is the read-only view of one allocation directory that answers
// /v1/client/fs/{ls,stat,cat,readat} (spec/http-surface.md §2.4–2.7). The
// streaming halves, /fs/stream and /fs/logs, are in fsstream.go and
// fslogs.go.
//
// Safety model. Every path a caller sends is first cleaned lexically (a
// leading "/" means the alloc dir, as in Nomad; a ".." that climbs above it
// is refused), then resolved component by component through an os.Root on
// the alloc dir: each symlink is read and expanded by hand, so a link whose
// target is absolute or climbs out is refused as an escape, and we learn the
// canonical in-alloc path of the file. Secrets are checked against both the
// requested and the canonical path, so a link alloc/data/s → ../../web/secrets
// does not expose them. The open itself goes through the same os.Root, so a
// symlink swapped in between resolving and opening still cannot leave the
// alloc dir (the kernel walk is confined by the Root). A task can still copy
// or hard-link its own secrets elsewhere; no path check can stop that, and
// it is not a leak this layer can prevent.
//
// Error messages never contain a host path: they quote the cleaned request
// path, and errors from the OS are reduced to their errno text.

// fsCopyBufSize is the buffer ReadAt and OpenRange readers copy through.
const fsCopyBufSize = 256 * 1024

// maxSymlinkHops bounds symlink expansion during resolution, as the kernel's
// own limit does (40 on Linux).
const maxSymlinkHops = 40

// errEscape is returned by resolve when a path or a symlink leaves the
// alloc dir. It is mapped to 400 `path escapes the alloc directory`.
var errEscape = errors.New("path escapes the alloc directory")

var (
	fsFrameBufPool = sync.Pool{New: func() any { b := make([]byte, structs.MaxFrameData); return &b }}
	fsCopyBufPool  = sync.Pool{New: func() any { b := make([]byte, fsCopyBufSize); return &b }}
)

// AllocFS gives safe, read-only access to one allocation directory. All
// methods may be called concurrently. Close it once every call has
// returned.
type AllocFS struct {
	allocID  string
	allocDir string
	root     *os.Root
	rootInfo os.FileInfo // identity of the alloc dir, to notice it being removed

	// refused, when set, counts paths refused as escapes or malformed.
	refused *atomic.Uint64
}

func (f *AllocFS) countRefused() {
	if f.refused != nil {
		f.refused.Add(1)
	}
}

// OpenAllocFS opens the allocation directory allocDir of allocation allocID.
// A missing directory is a 404.
func OpenAllocFS(allocDir, allocID string) (*AllocFS, error) {
	root, err := os.OpenRoot(allocDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, structs.NotFound("allocation %s has no directory on this node", allocID)
		}
		return nil, structs.NewError(http.StatusInternalServerError,
			"opening directory of allocation %s: %v", allocID, fsErrnoText(err))
	}
	info, err := root.Stat(".")
	if err != nil {
		root.Close()
		return nil, structs.NewError(http.StatusInternalServerError,
			"opening directory of allocation %s: %v", allocID, fsErrnoText(err))
	}
	return &AllocFS{allocID: allocID, allocDir: allocDir, root: root, rootInfo: info}, nil
}

// Close releases the directory handle.
func (f *AllocFS) Close() error { return f.root.Close() }

// List returns the entries of the directory at path ("" or "/" is the alloc
// dir), sorted by name, as Nomad's ls does. Entries are described without
// following symlinks. An empty directory gives an empty, non-nil slice.
// Listing a task's secrets dir is allowed (names only), as in Nomad.
func (f *AllocFS) List(p string) ([]*structs.AllocFileInfo, error) {
	rel, err := fsCleanRel(p)
	if err != nil {
		f.countRefused()
		return nil, err
	}
	canon, err := f.resolve(rel)
	if err != nil {
		return nil, f.pathErr(rel, err)
	}
	dir, err := f.root.Open(canon)
	if err != nil {
		return nil, f.pathErr(rel, err)
	}
	defer dir.Close()
	if fi, err := dir.Stat(); err != nil {
		return nil, f.pathErr(rel, err)
	} else if !fi.IsDir() {
		return nil, structs.BadRequest("file %q is not a directory", rel)
	}
	entries, err := dir.ReadDir(-1)
	if err != nil {
		return nil, f.pathErr(rel, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	out := make([]*structs.AllocFileInfo, 0, len(entries))
	for _, e := range entries {
		if canon == fsLogsDir && isStampFile(e.Name()) {
			continue // the logs' capture-time indexes: Nomad lists no such file
		}
		info, err := e.Info()
		if err != nil {
			// Removed between ReadDir and Lstat: it is no longer there.
			continue
		}
		out = append(out, allocFileInfo(e.Name(), info))
	}
	return out, nil
}

// Stat describes the file or directory at path, following symlinks that
// stay inside the alloc dir. path is required; "/" is the alloc dir itself,
// whose Name is the allocation ID. ContentType is filled as Nomad does: a
// ".json" name is application/json; a regular file is sniffed from its
// first 512 bytes; directories, empty, unreadable, special and secret files
// are application/octet-stream (secrets are never opened).
func (f *AllocFS) Stat(p string) (*structs.AllocFileInfo, error) {
	if p == "" {
		return nil, structs.BadRequest("must provide a file name")
	}
	rel, err := fsCleanRel(p)
	if err != nil {
		f.countRefused()
		return nil, err
	}
	canon, err := f.resolve(rel)
	if err != nil {
		return nil, f.pathErr(rel, err)
	}
	info, err := f.root.Lstat(canon)
	if err != nil {
		return nil, f.pathErr(rel, err)
	}
	name := path.Base(rel)
	if rel == "." {
		name = f.allocID
	}
	out := allocFileInfo(name, info)
	out.ContentType = "application/octet-stream"
	switch {
	case info.IsDir():
	case strings.HasSuffix(rel, ".json"):
		out.ContentType = "application/json"
	case info.Mode().IsRegular() && fsSecretKind(rel) == "" && fsSecretKind(canon) == "":
		out.ContentType = f.sniff(canon)
	}
	return out, nil
}

// sniff returns the content type of the regular file at canon from its first
// 512 bytes, or application/octet-stream when it is empty or unreadable.
func (f *AllocFS) sniff(canon string) string {
	const octet = "application/octet-stream"
	file, err := f.root.OpenFile(canon, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return octet
	}
	defer file.Close()
	if fi, err := file.Stat(); err != nil || !fi.Mode().IsRegular() {
		return octet
	}
	var buf [512]byte
	n, _ := io.ReadFull(file, buf[:])
	if n == 0 {
		return octet
	}
	return http.DetectContentType(buf[:n])
}

// ReadAt copies the file at path from offset, at most limit bytes (limit ≤ 0
// means to EOF), to w, and returns the number of bytes written. cat is
// ReadAt(ctx, path, 0, -1, w). It copies through one fixed buffer, so memory
// does not grow with the file. An offset past EOF copies nothing. It checks
// ctx between chunks and returns ctx.Err() when cancelled.
func (f *AllocFS) ReadAt(ctx context.Context, p string, offset, limit int64, w io.Writer) (int64, error) {
	rc, _, err := f.OpenRange(p, offset, limit)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	bp := fsCopyBufPool.Get().(*[]byte)
	defer fsCopyBufPool.Put(bp)
	buf := *bp
	var written int64
	for {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		n, rerr := rc.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m < n {
				return written, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}

// OpenRange opens the file at path for reading from offset, at most limit
// bytes (limit ≤ 0 means to EOF as it is while reading), with the same
// checks as ReadAt. The caller streams the reader and must close it. Read
// errors other than io.EOF are already *structs.Error (500) with no host
// path, so they can be returned as they are. The returned info describes
// the file; its ContentType is left empty, because cat and readat sniff the
// bytes they actually send (spec §2.6).
func (f *AllocFS) OpenRange(p string, offset, limit int64) (io.ReadCloser, *structs.AllocFileInfo, error) {
	r, info, err := f.openRange(p, offset, limit)
	if err != nil {
		return nil, nil, err
	}
	return r, info, nil
}

// openRange is OpenRange with the concrete reader, whose file can also be
// sent with sendfile(2).
func (f *AllocFS) openRange(p string, offset, limit int64) (*rangeReader, *structs.AllocFileInfo, error) {
	if offset < 0 {
		return nil, nil, structs.BadRequest("offset must not be negative")
	}
	of, err := f.openRead(p)
	if err != nil {
		return nil, nil, err
	}
	end := int64(-1)
	if limit > 0 {
		end = offset + limit
		if end < offset { // overflow: no real limit
			end = -1
		}
	}
	r := &rangeReader{file: of.file, rel: of.rel, off: offset, end: end}
	return r, allocFileInfo(path.Base(of.rel), of.info), nil
}

// rangeReader reads [off, end) of an open file with pread. end < 0 means to
// EOF. Its errors carry the request path, never the host path that
// *os.File errors would.
type rangeReader struct {
	file     *os.File
	rel      string
	off, end int64
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.end >= 0 {
		if r.off >= r.end {
			return 0, io.EOF
		}
		if rem := r.end - r.off; int64(len(p)) > rem {
			p = p[:rem]
		}
	}
	n, err := r.file.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF {
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	if err != nil {
		return n, fsReadErr(r.rel, err)
	}
	return n, nil
}

func (r *rangeReader) Close() error { return r.file.Close() }

// ValidateStreamOrigin checks a stream or logs origin: "", "start" or "end".
func ValidateStreamOrigin(origin string) error {
	switch origin {
	case "", "start", "end":
		return nil
	}
	return structs.BadRequest("origin must be start or end")
}

// openedFile is a regular file opened for reading through the Root.
type openedFile struct {
	file  *os.File
	rel   string // cleaned request path, for frames and messages
	canon string // symlink-free path inside the alloc dir
	info  os.FileInfo
}

// openRead opens the regular file at request path p for reading: it must
// be named, stay inside the alloc dir, not be under a task's secrets or
// private dir (by request or canonical path) and not be a directory or a
// special file (a fifo or device would block or never end).
func (f *AllocFS) openRead(p string) (*openedFile, error) {
	if p == "" {
		return nil, structs.BadRequest("must provide a file name")
	}
	rel, err := fsCleanRel(p)
	if err != nil {
		f.countRefused()
		return nil, err
	}
	return f.openReadRel(rel)
}

// lstatChecked resolves rel inside the allocation dir, refusing secrets
// before and after resolution, and lstats what it names.
func (f *AllocFS) lstatChecked(rel string) (string, os.FileInfo, error) {
	if err := fsSecretErr(rel, rel); err != nil {
		return "", nil, err
	}
	canon, err := f.resolve(rel)
	if err != nil {
		return "", nil, f.pathErr(rel, err)
	}
	if err := fsSecretErr(canon, rel); err != nil {
		return "", nil, err
	}
	fi, err := f.root.Lstat(canon)
	if err != nil {
		return "", nil, f.pathErr(rel, err)
	}
	return canon, fi, nil
}

// openReadRel is openRead for an already cleaned path. Every re-open (log
// rotation, a new index) comes through here, so it goes through the Root
// and the checks again.
func (f *AllocFS) openReadRel(rel string) (*openedFile, error) {
	canon, li, err := f.lstatChecked(rel)
	if err != nil {
		return nil, err
	}
	if err := fsRegularErr(rel, li); err != nil {
		return nil, err
	}
	// O_NONBLOCK: if a fifo is swapped in after the Lstat, opening it must
	// not block; regular files ignore the flag.
	file, err := f.root.OpenFile(canon, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, f.pathErr(rel, err)
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fsReadErr(rel, err)
	}
	if err := fsRegularErr(rel, info); err != nil {
		file.Close()
		return nil, err
	}
	return &openedFile{file: file, rel: rel, canon: canon, info: info}, nil
}

// readDir returns the entries of the directory canon, unsorted.
func (f *AllocFS) readDir(canon string) ([]fs.DirEntry, error) {
	dir, err := f.root.Open(canon)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return dir.ReadDir(-1)
}

// stillAt reports whether canon still names the file we hold open. A file
// that was removed, renamed away or replaced (by another file or by a
// symlink) is gone, as Nomad's watcher sees it.
func (f *AllocFS) stillAt(of *openedFile) bool {
	li, err := f.root.Lstat(of.canon)
	if err != nil {
		return false
	}
	fi, err := of.file.Stat()
	if err != nil {
		return false
	}
	return os.SameFile(li, fi)
}

// removed reports whether the alloc dir itself is gone (garbage-collected)
// or replaced.
func (f *AllocFS) removed() bool {
	fi, err := os.Stat(f.allocDir)
	return err != nil || !os.SameFile(fi, f.rootInfo)
}

// hostPath is the host path of canon, for the fsnotify watcher only: all
// reads go through the Root.
func (f *AllocFS) hostPath(canon string) string {
	return filepath.Join(f.allocDir, filepath.FromSlash(canon))
}

// fsCleanRel turns a request path into a clean slash path relative to the
// alloc dir ("." for the dir itself). Leading slashes are dropped, as Nomad
// joins the path onto the alloc dir; a path that climbs above it is an
// escape.
func fsCleanRel(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", structs.BadRequest("invalid path %q", p)
	}
	rel := path.Clean(strings.TrimLeft(p, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", structs.BadRequest("%s", errEscape.Error())
	}
	return rel, nil
}

// resolve expands every symlink in rel (clean, relative) through the Root
// and returns the symlink-free path it names inside the alloc dir. It
// returns errEscape for an absolute link target or one that climbs out,
// fs.ErrNotExist when a component is missing or is not a directory, and
// syscall.ELOOP after too many links. The last component must exist.
func (f *AllocFS) resolve(rel string) (string, error) {
	var done []string
	todo := fsSplitPath(rel)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", errEscape
			}
			done = done[:len(done)-1]
			continue
		}
		cur := path.Join(append(done, c)...)
		fi, err := f.root.Lstat(cur)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if hops++; hops > maxSymlinkHops {
				return "", syscall.ELOOP
			}
			target, err := f.root.Readlink(cur)
			if err != nil {
				return "", err
			}
			if path.IsAbs(target) {
				return "", errEscape
			}
			todo = append(fsSplitPath(target), todo...)
			continue
		}
		if len(todo) > 0 && !fi.IsDir() {
			return "", fs.ErrNotExist
		}
		done = append(done, c)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

func fsSplitPath(p string) []string {
	if p == "" || p == "." {
		return nil
	}
	return strings.Split(p, "/")
}

// fsSecretKind returns "secret" or "private" when p (clean, relative) is a
// task's secrets or private dir or lies under it, else "". As in Nomad the
// match ignores case. The task is any first component but the shared
// "alloc" dir; this layer does not know the task names, and refusing a
// non-task "<x>/secrets" as well errs on the safe side.
func fsSecretKind(p string) string {
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 2 || parts[0] == "alloc" {
		return ""
	}
	switch strings.ToLower(parts[1]) {
	case "secrets":
		return "secret"
	case "private":
		return "private"
	}
	return ""
}

// fsSecretErr returns Nomad's 403 when p is a secret or private path; the
// message quotes the request path rel.
func fsSecretErr(p, rel string) error {
	if k := fsSecretKind(p); k != "" {
		return structs.NewError(http.StatusForbidden, "Reading %s file prohibited: %s", k, rel)
	}
	return nil
}

// fsRegularErr refuses directories and special files for reading.
func fsRegularErr(rel string, fi os.FileInfo) error {
	switch {
	case fi.IsDir():
		return structs.BadRequest("file %q is a directory", rel)
	case fi.Mode()&fs.ModeSymlink != 0:
		// Only seen when a symlink was swapped in after resolving.
		return structs.BadRequest("file %q changed while opening it", rel)
	case !fi.Mode().IsRegular():
		return structs.BadRequest("file %q is not a regular file", rel)
	}
	return nil
}

// pathErr maps an error from resolving or opening rel to a coded error
// that names rel and never a host path.
func (f *AllocFS) pathErr(rel string, err error) error {
	var se *structs.Error
	switch {
	case errors.As(err, &se):
		return se
	case errors.Is(err, errEscape), isRootEscape(err):
		f.countRefused()
		return structs.BadRequest("%s", errEscape.Error())
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		if f.removed() {
			return errAllocDirRemoved()
		}
		return structs.NotFound("file %q not found", rel)
	case errors.Is(err, syscall.ELOOP):
		return structs.BadRequest("too many levels of symbolic links in %q", rel)
	case errors.Is(err, fs.ErrPermission):
		return structs.NewError(http.StatusForbidden, "permission denied reading %q", rel)
	}
	return structs.NewError(http.StatusInternalServerError, "accessing %q: %v", rel, fsErrnoText(err))
}

// fsReadErr maps an error from reading an open file; *os.File errors carry
// the host path, so only the errno text is kept.
func fsReadErr(rel string, err error) error {
	return structs.NewError(http.StatusInternalServerError, "reading %q: %v", rel, fsErrnoText(err))
}

// errAllocDirRemoved is returned when the alloc dir disappears, which is
// what garbage collection of the allocation looks like from here.
func errAllocDirRemoved() error {
	return structs.NotFound("allocation directory was removed")
}

// isRootEscape recognises os.Root's own escape error, whose sentinel is
// unexported. It only fires when a symlink is swapped in between our
// resolution and the open.
func isRootEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

// fsErrnoText returns the innermost text of err, dropping any path a
// *PathError or *LinkError would print.
func fsErrnoText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err.Error()
	}
	return err.Error()
}

// allocFileInfo builds Nomad's AllocFileInfo without ContentType.
func allocFileInfo(name string, info os.FileInfo) *structs.AllocFileInfo {
	return &structs.AllocFileInfo{
		Name:     name,
		IsDir:    info.IsDir(),
		Size:     info.Size(),
		FileMode: info.Mode().String(),
		ModTime:  info.ModTime(),
	}
}
