package client

import (
	"context"
	"io"
	"path"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"tether/structs"
)

// This file answers /v1/client/fs/stream (spec/http-surface.md §2.8, §3):
// one file read as frames, optionally followed as it grows.

// followPollInterval is how often a follower re-checks its file when no
// fsnotify event arrives. It is the fallback for missed events (a queue
// overflow, a filesystem without inotify, or no inotify instance left:
// fs.inotify.max_user_instances is 128 by default), not the main wake-up.
const followPollInterval = 250 * time.Millisecond

// maxCoalescedEvents bounds how many already-queued fsnotify events one
// wake-up absorbs, so a chatty writer costs one re-read, not one per write.
const maxCoalescedEvents = 256

// StreamOptions selects what Stream reads.
type StreamOptions struct {
	// Path is the file, relative to the alloc dir; required.
	Path string
	// Offset is where to start: from the start of the file, or back from
	// its end when Origin is "end". Negative offsets are refused.
	Offset int64
	// Origin is "start" or "end"; "" means "start".
	Origin string
	// Follow keeps the stream open at EOF, waiting for more data, until
	// the file is deleted or ctx is cancelled. Without it the stream ends
	// at the first EOF.
	Follow bool
	// Ready, if not nil, is called once the request is valid and the file
	// is open, before the first frame, so that the caller can commit a
	// success status (every 4xx comes before it). Its error aborts the
	// stream and is returned.
	Ready func() error
}

// Stream sends the file opts.Path as frames of at most structs.MaxFrameData
// bytes. Each frame's File is the cleaned request path (no leading slash)
// and its Offset the file position after its data.
//
// origin=end starts at max(size−Offset, 0); origin=start with an Offset past
// EOF sends nothing until the file grows past it (if following). While
// following, a file that shrinks below what was read yields a
// {File, FileEvent: "file truncated"} frame and reading restarts at 0; a
// file that is removed, renamed away or replaced (by another file or a
// symlink) yields {File, FileEvent: "file deleted", Offset} and the stream
// ends. The file is read through the descriptor opened at the start, so a
// symlink the task swaps in later is never followed.
//
// send is called from the calling goroutine only. The frame's Data aliases
// a reused buffer and is valid only until send returns: the caller must
// encode or copy it before returning. Stream returns nil on a normal end
// (EOF without follow, file deleted), ctx.Err() when ctx is cancelled, and
// send's error if send fails.
func (f *AllocFS) Stream(ctx context.Context, opts StreamOptions, send func(*structs.StreamFrame) error) error {
	if err := ValidateStreamOrigin(opts.Origin); err != nil {
		return err
	}
	if opts.Offset < 0 {
		return structs.BadRequest("offset must not be negative")
	}
	of, err := f.openRead(opts.Path)
	if err != nil {
		return err
	}
	defer of.file.Close()

	var waker *dirWaker
	if opts.Follow {
		// Watch before the first read, so a write that lands after it is
		// seen as an event rather than waiting for the poll.
		base := path.Base(of.canon)
		waker = newDirWaker(f.hostPath(path.Dir(of.canon)), func(name string) bool { return name == base })
		defer waker.close()
	}

	size := of.info.Size()
	pos := opts.Offset
	if opts.Origin == "end" {
		pos = max(size-opts.Offset, 0)
	}
	fl := &follower{of: of, name: of.rel, pos: pos, known: size, send: send}
	bp := fsFrameBufPool.Get().(*[]byte)
	defer fsFrameBufPool.Put(bp)
	if opts.Ready != nil {
		if err := opts.Ready(); err != nil {
			return err
		}
	}

	for {
		// Look for deletion before draining, so bytes written just before
		// the file went away are still sent.
		gone := opts.Follow && !f.stillAt(of)
		if opts.Follow {
			if err := fl.checkTruncated(); err != nil {
				return err
			}
		}
		if err := fl.drain(ctx, *bp); err != nil {
			return err
		}
		if !opts.Follow {
			return nil
		}
		if gone {
			return send(&structs.StreamFrame{File: fl.name, FileEvent: structs.FileEventDeleted, Offset: fl.pos})
		}
		if _, err := waker.wait(ctx, ""); err != nil {
			return err
		}
	}
}

// follower reads one open file into frames, tracking the read position and
// the largest size the file is known to have had (to notice truncation).
type follower struct {
	of    *openedFile
	name  string // frame File
	pos   int64
	known int64
	send  func(*structs.StreamFrame) error
}

// drain sends everything from pos to the current EOF, one frame per read of
// at most len(buf) bytes.
func (fl *follower) drain(ctx context.Context, buf []byte) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := fl.of.file.ReadAt(buf, fl.pos)
		if n > 0 {
			fl.pos += int64(n)
			fl.known = max(fl.known, fl.pos)
			if serr := fl.send(&structs.StreamFrame{File: fl.name, Offset: fl.pos, Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		switch {
		case err == io.EOF, err == nil && n == 0:
			return nil
		case err != nil:
			return fsReadErr(fl.of.rel, err)
		}
	}
}

// checkTruncated sends a truncation frame and rewinds to 0 when the file is
// now smaller than it was known to be.
func (fl *follower) checkTruncated() error {
	fi, err := fl.of.file.Stat()
	if err != nil {
		return fsReadErr(fl.of.rel, err)
	}
	size := fi.Size()
	if size >= fl.known {
		fl.known = size
		return nil
	}
	fl.pos, fl.known = 0, size
	return fl.send(&structs.StreamFrame{File: fl.name, FileEvent: structs.FileEventTruncated})
}

// dirWaker wakes a follower when something happens to matching names in
// one directory: an fsnotify event, or else the fallback poll. It watches
// the directory rather than the file so that creates, renames and deletes
// are seen too. It is only a wake-up signal: every read goes through the
// Root, so watching a host path that a task has swapped is harmless.
type dirWaker struct {
	watcher *fsnotify.Watcher // nil when unavailable: poll only
	events  <-chan fsnotify.Event
	errs    <-chan error
	dir     string // host path of the watched directory
	match   func(base string) bool
	tick    *time.Ticker
}

func newDirWaker(dir string, match func(base string) bool) *dirWaker {
	d := &dirWaker{dir: filepath.Clean(dir), match: match, tick: time.NewTicker(followPollInterval)}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return d
	}
	if err := w.Add(d.dir); err != nil {
		w.Close()
		return d
	}
	d.watcher, d.events, d.errs = w, w.Events, w.Errors
	return d
}

// close stops the watcher (and its goroutine) and the ticker.
func (d *dirWaker) close() {
	d.tick.Stop()
	if d.watcher != nil {
		d.watcher.Close()
	}
}

// wait blocks until a relevant event, a poll tick or ctx's end. It absorbs
// the events already queued behind the first one and reports whether all of
// them were plain writes to the file named writeTo (so the caller may skip
// its slower checks); a tick, an error or any other event reports false.
func (d *dirWaker) wait(ctx context.Context, writeTo string) (onlyWrites bool, err error) {
	onlyWrites = true
	got := 0
	for got == 0 {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-d.tick.C:
			return false, nil
		case _, ok := <-d.errs:
			if !ok {
				d.events, d.errs = nil, nil // watcher died: poll only
				continue
			}
			// Overflow or a read error: events may have been missed.
			return false, nil
		case ev, ok := <-d.events:
			if !ok {
				d.events, d.errs = nil, nil
				continue
			}
			if d.relevant(ev) {
				got++
				onlyWrites = d.isWriteTo(ev, writeTo)
			}
		}
	}
	for got < maxCoalescedEvents {
		select {
		case ev, ok := <-d.events:
			if !ok {
				d.events, d.errs = nil, nil
				return false, nil
			}
			if d.relevant(ev) {
				got++
				onlyWrites = onlyWrites && d.isWriteTo(ev, writeTo)
			}
		default:
			return onlyWrites, nil
		}
	}
	return onlyWrites, nil
}

// relevant keeps events on matching names and on the directory itself
// (its removal: the alloc being garbage-collected).
func (d *dirWaker) relevant(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	return name == d.dir || d.match(filepath.Base(name))
}

func (d *dirWaker) isWriteTo(ev fsnotify.Event, base string) bool {
	return base != "" && ev.Op == fsnotify.Write && filepath.Clean(ev.Name) != d.dir &&
		filepath.Base(ev.Name) == base
}
