package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// This file keeps the capture-time index of a task's log (issue #17 part
// 2): beside each rotated file <task>.<type>.N the log writer keeps
// .<task>.<type>.N.times, records of 16 bytes (little-endian file offset,
// then Unix nanoseconds) saying when the chunk written at that offset
// arrived. It is created, truncated and removed with its log file, so it
// survives agent restarts and never outlives the log. A line's capture time
// is the time of the last record at or before its first byte.
//
// Size: every write is recorded until a file has stampsFine records; after
// that a write is recorded only when the time since the last record is at
// least a gap that doubles every stampsFine records (1 ms, 2 ms, 4 ms, ...),
// and nothing is recorded past maxStamps (1 MiB). Lines of an unrecorded
// write carry the time of an earlier one. Reaching maxStamps takes about 37
// hours of sub-second writes into one file.

const (
	stampSize  = 16
	stampsFine = 4096
	maxStamps  = 16 * stampsFine
)

// stampGap is the least time between two records once a file has n.
func stampGap(n int) time.Duration {
	if n < stampsFine {
		return 0
	}
	return time.Millisecond << min((n-stampsFine)/stampsFine, 30)
}

// stampName is the index file of log file name (a base name or a path).
func stampName(name string) string {
	dir, base := path.Split(name)
	return dir + "." + base + ".times"
}

// isStampFile reports whether a name in alloc/logs is an index
// (.<task>.<type>.N.times), which listings leave out.
func isStampFile(name string) bool {
	rest, ok := strings.CutPrefix(name, ".")
	if !ok {
		return false
	}
	rest, ok = strings.CutSuffix(rest, ".times")
	if !ok {
		return false
	}
	i := strings.LastIndexByte(rest, '.')
	return i > 0 && rest[i+1:] != "" && strings.Trim(rest[i+1:], "0123456789") == ""
}

// stampWriter appends the records of one log file. It is used under the
// RotatingWriter's lock. A failing index is dropped (f nil): the log
// itself never fails because of it.
type stampWriter struct {
	f     *os.File
	n     int   // records in the file
	last  int64 // time of the last record (Unix ns)
	atOff int64 // offset of the last record
	rec   [stampSize]byte
}

// openStamps opens the index of the log file at host path logPath:
// truncated for a new log file, or appended to (a restarted agent),
// dropping a torn last record.
func openStamps(logPath string, appendTo bool) *stampWriter {
	p := stampName(logPath)
	flags := os.O_RDWR | os.O_CREATE
	if !appendTo {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(p, flags, logFilePerm)
	if err != nil {
		return &stampWriter{}
	}
	sw := &stampWriter{f: f, atOff: -1}
	if appendTo {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return &stampWriter{}
		}
		size := fi.Size() - fi.Size()%stampSize
		if size != fi.Size() {
			if err := f.Truncate(size); err != nil {
				f.Close()
				return &stampWriter{}
			}
		}
		sw.n = int(size / stampSize)
		if sw.n > 0 {
			if _, err := f.ReadAt(sw.rec[:], size-stampSize); err == nil {
				sw.atOff = int64(binary.LittleEndian.Uint64(sw.rec[:8]))
				sw.last = int64(binary.LittleEndian.Uint64(sw.rec[8:]))
			}
		}
		if _, err := f.Seek(size, io.SeekStart); err != nil {
			f.Close()
			return &stampWriter{}
		}
	}
	return sw
}

// stamp records that the bytes written at off arrived at now.
func (sw *stampWriter) stamp(off int64, now time.Time) {
	if sw == nil || sw.f == nil || sw.n >= maxStamps || off <= sw.atOff {
		return
	}
	t := now.UnixNano()
	if sw.n > 0 && time.Duration(t-sw.last) < stampGap(sw.n) {
		return
	}
	binary.LittleEndian.PutUint64(sw.rec[:8], uint64(off))
	binary.LittleEndian.PutUint64(sw.rec[8:], uint64(t))
	if _, err := sw.f.Write(sw.rec[:]); err != nil {
		sw.close()
		return
	}
	sw.n++
	sw.last, sw.atOff = t, off
}

func (sw *stampWriter) close() {
	if sw != nil && sw.f != nil {
		sw.f.Close()
		sw.f = nil
	}
}

// removeStamps removes the index of the log file at host path logPath.
func removeStamps(logPath string) error {
	if err := os.Remove(stampName(logPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove log index: %w", err)
	}
	return nil
}

// logStamps reads the index of one log file, opened through the alloc
// dir's Root, as a cursor: a reader moving forward through the log keeps
// only the records of the stretch it is at (advance), so a stream holds a
// few KiB whatever the index's size. A task can write into alloc/logs, so
// what is read is checked: at most maxStamps records, offsets never
// negative and never going back (the index ends at the first that is).
type logStamps struct {
	f    *openedFile // nil: no index
	win  []stampRec  // records loaded and kept, offsets ascending
	read int64       // bytes of the index consumed
	n    int         // records consumed
	done bool        // nothing more will be read (bad record, limit)
	last int64       // offset of the last record consumed
	buf  []byte
}

type stampRec struct{ off, t int64 }

// stampChunk is how many records one read takes.
const stampChunk = 256

// openLogStamps opens the index of the log file at rel (alloc-relative);
// a missing or unreadable index has no records.
func (f *AllocFS) openLogStamps(rel string) *logStamps {
	ls := &logStamps{last: -1}
	if of, err := f.openReadRel(stampName(rel)); err == nil {
		ls.f = of
	}
	return ls
}

// load appends the next records to the window; false when none came (the
// index's end for now: a followed log's index grows).
func (ls *logStamps) load() bool {
	if ls.f == nil || ls.done {
		return false
	}
	if ls.buf == nil {
		ls.buf = make([]byte, stampChunk*stampSize)
	}
	n, _ := ls.f.file.ReadAt(ls.buf, ls.read)
	n -= n % stampSize
	got := false
	for i := 0; i < n; i += stampSize {
		off := int64(binary.LittleEndian.Uint64(ls.buf[i:]))
		t := int64(binary.LittleEndian.Uint64(ls.buf[i+8:]))
		if off < 0 || off < ls.last || ls.n >= maxStamps {
			ls.done = true
			return got
		}
		ls.win = append(ls.win, stampRec{off, t})
		ls.read += stampSize
		ls.n++
		ls.last, got = off, true
	}
	return got
}

// advance readies at() for the offsets from start to end of a stretch
// of the log: it reads records until one lies past end (or the index
// ends), and forgets those before start but the last.
func (ls *logStamps) advance(start, end int64) {
	if ls.n == 0 {
		ls.seek(start)
	}
	for ls.last <= end && ls.load() {
	}
	i := sort.Search(len(ls.win), func(i int) bool { return ls.win[i].off > start })
	if i > 1 {
		ls.win = append(ls.win[:0], ls.win[i-1:]...)
	}
}

// seek moves a fresh cursor to the last record at or before off, by a
// binary search of the fixed-size records: a tail of a long log reads a
// few records of its index, not all of it.
func (ls *logStamps) seek(off int64) {
	if ls.f == nil {
		return
	}
	fi, err := ls.f.file.Stat()
	if err != nil {
		return
	}
	count := min(fi.Size()/stampSize, maxStamps)
	if count <= stampChunk {
		return
	}
	var rec [stampSize]byte
	offAt := func(i int64) (int64, bool) {
		if _, err := ls.f.file.ReadAt(rec[:8], i*stampSize); err != nil {
			return 0, false
		}
		return int64(binary.LittleEndian.Uint64(rec[:8])), true
	}
	// The first record past off, then one back.
	lo, hi := int64(0), count
	for lo < hi {
		mid := lo + (hi-lo)/2
		o, ok := offAt(mid)
		if !ok {
			return
		}
		if o > off {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if i := max(lo-1, 0); i > 0 {
		ls.read, ls.n = i*stampSize, int(i)
	}
}

// at is the capture time of the byte at off (within the stretch given to
// advance): the time of the last record at or before it, or 0.
func (ls *logStamps) at(off int64) int64 {
	i := sort.Search(len(ls.win), func(i int) bool { return ls.win[i].off > off })
	if i == 0 {
		return 0
	}
	return ls.win[i-1].t
}

// since reports the index's first record time (0 with none) and the
// offset of the last record earlier than t (0 if none): a reader of the
// lines captured at or after t may start there. It reads the index
// through, keeping nothing.
func (ls *logStamps) since(t int64) (first, off int64) {
	for ls.load() {
		for _, r := range ls.win {
			if first == 0 {
				first = r.t
			}
			if r.t >= t {
				return first, off
			}
			off = r.off
		}
		ls.win = ls.win[:0]
	}
	return first, off
}

func (ls *logStamps) close() {
	if ls.f != nil {
		ls.f.file.Close()
		ls.f = nil
	}
}
