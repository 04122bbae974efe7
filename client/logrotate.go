package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// logFilePerm is the mode of task log files.
const logFilePerm os.FileMode = 0o644

// RotatingWriter writes a task's output to <dir>/<base>.0, <base>.1, ...,
// starting a new file when the current one would exceed the size limit and
// deleting the oldest so that never more than the file limit exist on disk.
// It replaces Nomad's logmon process: the agent copies the task's pipes into
// it directly. A write that crosses the size boundary is split across the two
// files, so no byte is lost or duplicated. Write is safe for concurrent use.
//
// Beside each file it keeps the file's capture-time index (logindex.go):
// when each write arrived, created, truncated and removed with the file.
type RotatingWriter struct {
	dir         string
	base        string
	maxFiles    int
	maxFileSize int64

	// mu guards everything below.
	mu     sync.Mutex
	f      *os.File // current file; nil after a failed rotation or Close
	idx    int      // index of the current file
	oldest int      // lowest index that may still exist on disk
	size   int64    // bytes in the current file
	closed bool
	stamps *stampWriter // the current file's index

	// now is the clock of the index; time.Now unless a test sets it.
	now func() time.Time

	// rotations, when set, counts the rotations (the node's metrics).
	rotations *atomic.Uint64
}

// NewRotatingWriter opens the rotating log <dir>/<base>.N. base is usually
// "<task>.stdout" or "<task>.stderr"; dir must exist. maxFiles and
// maxFileSize must be at least 1. If files of the sequence exist (an agent
// restart) it continues at the highest index, appending to that file if it
// is not full, and removes files beyond the limit.
func NewRotatingWriter(dir, base string, maxFiles int, maxFileSize int64) (*RotatingWriter, error) {
	switch {
	case maxFiles < 1:
		return nil, fmt.Errorf("max files must be at least 1, got %d", maxFiles)
	case maxFileSize < 1:
		return nil, fmt.Errorf("max file size must be at least 1, got %d", maxFileSize)
	case base == "" || strings.ContainsAny(base, "/\x00"):
		return nil, fmt.Errorf("invalid log file base name %q", base)
	}
	w := &RotatingWriter{dir: dir, base: base, maxFiles: maxFiles, maxFileSize: maxFileSize, now: time.Now}

	indexes, err := w.existing()
	if err != nil {
		return nil, err
	}
	if len(indexes) == 0 {
		if err := w.openIndex(0, false); err != nil {
			return nil, err
		}
		return w, nil
	}
	last := indexes[len(indexes)-1]
	if err := w.openIndex(last, true); err != nil {
		return nil, err
	}
	current := last
	if w.size >= w.maxFileSize {
		current++
	}
	// Remove what is beyond the limit by listing, not by counting up from
	// index 0: the sequence may have gaps.
	oldestKept := current - w.maxFiles + 1
	for _, idx := range indexes {
		if idx >= oldestKept {
			break
		}
		if err := w.remove(idx); err != nil {
			w.f.Close()
			w.stamps.close()
			return nil, err
		}
	}
	w.oldest = max(indexes[0], oldestKept)
	if current != last {
		if err := w.rotateLocked(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Write writes p, rotating as often as needed so that no file exceeds the
// size limit. On error it returns how many bytes of p were written.
func (w *RotatingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, fmt.Errorf("write to %s: %w", w.base, os.ErrClosed)
	}
	written := 0
	var now time.Time
	if len(p) > 0 {
		now = w.now()
	}
	for len(p) > 0 {
		if w.f == nil || w.size >= w.maxFileSize {
			if err := w.rotateLocked(); err != nil {
				return written, err
			}
		}
		// The record goes first: a reader that sees the bytes finds it.
		w.stamps.stamp(w.size, now)
		chunk := p
		if room := w.maxFileSize - w.size; int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		n, err := w.f.Write(chunk)
		written += n
		w.size += int64(n)
		p = p[n:]
		if err != nil {
			return written, fmt.Errorf("failed to write log file: %w", err)
		}
	}
	return written, nil
}

// Close closes the current file. Later writes fail; closing twice is not an
// error.
func (w *RotatingWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.stamps.close()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("failed to close log file: %w", err)
	}
	return nil
}

// path returns the name of file idx.
func (w *RotatingWriter) path(idx int) string {
	return filepath.Join(w.dir, w.base+"."+strconv.Itoa(idx))
}

// rotateLocked closes the current file and starts the next index. The
// oldest files are removed first, so the limit holds even between the two
// steps. A file left at the new index by someone else is truncated.
func (w *RotatingWriter) rotateLocked() error {
	next := w.idx + 1
	if w.f == nil && w.size == 0 {
		// A previous open of w.idx failed; retry the same index.
		next = w.idx
	}
	w.stamps.close()
	if w.f != nil {
		err := w.f.Close()
		w.f = nil
		if err != nil {
			return fmt.Errorf("failed to close log file: %w", err)
		}
	}
	if err := w.purge(next); err != nil {
		return err
	}
	if w.rotations != nil {
		w.rotations.Add(1)
	}
	return w.openIndex(next, false)
}

// openIndex opens file idx as the current file, appending to it when
// appendTo is set and truncating it otherwise.
func (w *RotatingWriter) openIndex(idx int, appendTo bool) error {
	flags := os.O_WRONLY | os.O_CREATE
	if appendTo {
		flags |= os.O_APPEND
	} else {
		flags |= os.O_TRUNC
	}
	w.idx, w.size = idx, 0
	f, err := os.OpenFile(w.path(idx), flags, logFilePerm)
	if err != nil {
		return fmt.Errorf("failed to open log file: %w", err)
	}
	if appendTo {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("failed to stat log file: %w", err)
		}
		w.size = fi.Size()
	}
	w.f = f
	w.stamps = openStamps(w.path(idx), appendTo)
	return nil
}

// purge removes every file of the sequence that would be outside the newest
// maxFiles once file current exists. Files are removed by index from the
// oldest one known, so rotating does not list the directory.
func (w *RotatingWriter) purge(current int) error {
	oldestKept := current - w.maxFiles + 1
	for ; w.oldest < oldestKept; w.oldest++ {
		if err := w.remove(w.oldest); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes file idx and its index.
func (w *RotatingWriter) remove(idx int) error {
	if err := os.Remove(w.path(idx)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove old log file: %w", err)
	}
	return removeStamps(w.path(idx))
}

// existing returns the indexes of the files of this sequence in dir, in
// increasing order.
func (w *RotatingWriter) existing() ([]int, error) {
	d, err := os.Open(w.dir)
	if err != nil {
		return nil, fmt.Errorf("failed to list log dir: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("failed to list log dir: %w", err)
	}
	prefix := w.base + "."
	var indexes []int
	for _, name := range names {
		suffix, ok := strings.CutPrefix(name, prefix)
		if !ok || suffix == "" || strings.TrimLeft(suffix, "0123456789") != "" {
			continue
		}
		idx, err := strconv.Atoi(suffix)
		if err != nil || strconv.Itoa(idx) != suffix {
			continue // overflow or leading zeros: not one of ours
		}
		indexes = append(indexes, idx)
	}
	sort.Ints(indexes)
	return indexes, nil
}
