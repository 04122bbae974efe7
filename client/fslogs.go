package client

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tether/structs"
)

// This file answers /v1/client/fs/logs (spec/http-surface.md §2.9, §4): a
// task's stdout or stderr, read across the rotated files
// alloc/logs/<task>.<type>.<N> in index order.

// fsLogsDir is where a task's rotated log files live, relative to the alloc
// dir.
const fsLogsDir = "alloc/logs"

// LogsOptions selects what Logs reads.
type LogsOptions struct {
	// Task is the task whose log is read; required.
	Task string
	// Type is "stdout" or "stderr".
	Type string
	// Offset is where to start: from the start of the oldest file, or
	// back from the end of the newest when Origin is "end". Both walk
	// across rotated files. Negative offsets are refused.
	Offset int64
	// Origin is "start" or "end"; "" means "start".
	Origin string
	// Follow keeps the stream open at the end of the newest file, waiting
	// for more data and for new files, until ctx is cancelled, the
	// allocation's directory is removed or (with TaskState) the task is
	// dead and all it wrote was sent. Without it the stream ends at
	// the end of the newest file that existed when the call started.
	Follow bool
	// Tasks maps every task name of the allocation to whether it has
	// started. A task that is absent (nil map included) is unknown; one
	// that has not started has no logs yet.
	Tasks map[string]bool
	// Ready, if not nil, is called once the request is valid and the
	// first log file is open, before the first frame, so that the caller
	// can commit a success status. Its error aborts the stream and is
	// returned.
	Ready func() error

	// Tail, with Lines, starts at the last Lines lines (0: at the end)
	// instead of at Offset/Origin.
	Tail  bool
	Lines int
	// After, if set, starts at that position (a line end an earlier
	// stream reached); it wins over Tail and Offset/Origin.
	After *structs.LogPos
	// Since, if not zero, starts at or before the first line captured at
	// or after it (the line framer drops the older ones); with Tail the
	// later start wins.
	Since time.Time
	// TaskState, if set, is the task's current state. Following, the
	// stream then ends with a TaskEnd frame once the task is dead and
	// every byte it wrote was sent; with Wait, a task that has not
	// started is waited for.
	TaskState func() *structs.TaskState
	Wait      bool
	// LineMode sends line-aligned frames with each line's capture time
	// (lineFramer) instead of the file's bytes as they come.
	LineMode bool
}

// Logs sends a task's log as frames of at most structs.MaxFrameData bytes,
// reading the rotated files alloc/logs/<task>.<type>.<N> in index order with
// no byte lost or repeated. Each frame's File is the file it was read from
// and its Offset the position within that file after its data. Plain mode
// is the concatenated Data of the frames; event frames carry none.
//
// Start: origin=start begins at the lowest index and walks forward,
// subtracting file sizes, and stops at the end of the newest file at most.
// origin=end begins at size−Offset in the highest index and walks backwards
// into earlier files, so Offset=N yields the last N bytes across files;
// Offset=0 starts at the true end (not at the start of the newest file, as
// Nomad does: its bug #18368).
//
// Following: at the end of a file, once a higher index exists the current
// file is read to EOF once more (for the tail written before rotation) and
// the next index is opened at 0. A file being read that is removed yields
// a "file deleted" frame and the stream goes on with the next index. The
// allocation's directory being removed ends the stream with a 404
// `allocation directory was removed`. Wake-ups come from fsnotify on
// alloc/logs, with a poll every followPollInterval as a fallback.
//
// send is called from the calling goroutine only. The frame's Data aliases
// a reused buffer and is valid only until send returns. Logs returns nil on
// a normal end, ctx.Err() when ctx is cancelled and send's error if send
// fails.
func (f *AllocFS) Logs(ctx context.Context, opts LogsOptions, send func(*structs.StreamFrame) error) error {
	if opts.Task == "" {
		return structs.BadRequest("must provide task name")
	}
	if opts.Type != "stdout" && opts.Type != "stderr" {
		return structs.BadRequest("must provide log type (stdout/stderr)")
	}
	if err := ValidateStreamOrigin(opts.Origin); err != nil {
		return err
	}
	if opts.Offset < 0 {
		return structs.BadRequest("offset must not be negative")
	}
	started, ok := opts.Tasks[opts.Task]
	if !ok {
		return structs.BadRequest("unknown task name %q", opts.Task)
	}
	if !started && opts.Wait && opts.Follow && opts.TaskState != nil {
		var err error
		if started, err = waitStarted(ctx, opts.TaskState); err != nil {
			return err
		}
	}
	if !started {
		return structs.NotFound("task %q not started yet. No logs available", opts.Task)
	}

	lr := &logReader{fs: f, prefix: opts.Task + "." + opts.Type + "."}
	idxs, dirCanon, err := lr.indexes()
	if err != nil {
		return err
	}
	if len(idxs) == 0 {
		return structs.NotFound("log entry for task %q and log type %q not found", opts.Task, opts.Type)
	}
	last := idxs[len(idxs)-1]
	bp := fsFrameBufPool.Get().(*[]byte)
	defer fsFrameBufPool.Put(bp)
	cur, pos, err := lr.startAt(idxs, &opts, *bp)
	if err != nil {
		return err
	}
	finish := func() error { return nil } // at the end of a read that does not follow
	if opts.LineMode {
		lf := &lineFramer{fs: f, send: send, skip: !lr.lineStart(idxs, cur, pos)}
		if !opts.Since.IsZero() {
			lf.since = opts.Since.UnixNano()
		}
		defer lf.closeStamps()
		send, finish = lf.frame, lf.finish
	}

	of, err := f.openReadRel(lr.rel(cur))
	if isFileNotFound(err) {
		// Rotated away since we listed it: go on with what follows.
		upTo := -1
		if !opts.Follow {
			upTo = last
		}
		pos = 0
		of, cur, err = lr.openAfter(cur, upTo)
		if err == nil && of == nil {
			return structs.NotFound("log entry for task %q and log type %q not found", opts.Task, opts.Type)
		}
	}
	if err != nil {
		return err
	}
	fl := &follower{of: of, name: lr.rel(cur), pos: min(pos, of.info.Size()), known: of.info.Size(), send: send}
	defer func() { fl.of.file.Close() }()

	var waker *dirWaker
	if opts.Follow {
		waker = newDirWaker(f.hostPath(dirCanon), func(base string) bool { return strings.HasPrefix(base, lr.prefix) })
		defer waker.close()
	}
	if opts.Ready != nil {
		if err := opts.Ready(); err != nil {
			return err
		}
	}

	switchTo := func(next *openedFile, idx int) {
		fl.of.file.Close()
		cur = idx
		fl.of, fl.name, fl.pos, fl.known = next, lr.rel(idx), 0, next.info.Size()
	}

	quick := false   // woken only by writes to the current file
	deleted := false // a "file deleted" frame was sent for the current file
	for {
		// The task's state is read before the drain: once it is dead,
		// its writers are closed, so what the drain and the look for a
		// next file find is all there is.
		var end *structs.TaskEnd
		if opts.Follow && !quick && opts.TaskState != nil {
			end = structs.TaskEndOf(opts.TaskState())
		}
		if opts.Follow {
			if err := fl.checkTruncated(); err != nil {
				return err
			}
		}
		if err := fl.drain(ctx, *bp); err != nil {
			return err
		}

		if !opts.Follow {
			if cur >= last {
				return finish()
			}
			next, idx, err := lr.openAfter(cur, last)
			if err != nil {
				return err
			}
			if next == nil {
				return finish()
			}
			switchTo(next, idx)
			continue
		}

		if !quick {
			next, idx, err := lr.openAfter(cur, -1)
			if err != nil {
				return err
			}
			if next != nil {
				// The writer has moved on: take the tail it wrote to the
				// current file between our EOF and the rotation.
				if err := fl.drain(ctx, *bp); err != nil {
					next.file.Close()
					return err
				}
				switchTo(next, idx)
				deleted = false
				continue
			}
			if !f.stillAt(fl.of) {
				if f.removed() {
					return errAllocDirRemoved()
				}
				// Replaced by a new file of the same index (say, removed
				// and recreated): finish the old one, then read the new
				// one from 0, opened through the Root again.
				re, err := f.openReadRel(fl.name)
				switch {
				case err == nil:
					if err := fl.drain(ctx, *bp); err != nil {
						re.file.Close()
						return err
					}
					switchTo(re, cur)
					deleted = false
					continue
				case !isFileNotFound(err):
					return err
				case !deleted:
					deleted = true
					if err := send(&structs.StreamFrame{File: fl.name, FileEvent: structs.FileEventDeleted, Offset: fl.pos}); err != nil {
						return err
					}
				}
			}
		}
		if end != nil {
			return send(&structs.StreamFrame{TaskEnd: end})
		}
		if quick, err = waker.wait(ctx, path.Base(fl.name)); err != nil {
			return err
		}
	}
}

// logReader finds and opens the rotated files of one task log.
type logReader struct {
	fs     *AllocFS
	prefix string // "<task>.<type>."
}

// rel is the alloc-relative path of index i, which is also the frame File.
func (lr *logReader) rel(i int) string {
	return fsLogsDir + "/" + lr.prefix + strconv.Itoa(i)
}

// indexes lists alloc/logs and returns the indices of the files named
// <prefix><N>, ascending, with the canonical path of the logs dir. Names
// whose rest is not a plain decimal integer are skipped (Nomad fails the
// call with a 500); the hidden .<task>.<type>.fifo never matches. A
// missing logs dir has no files, unless the alloc dir itself is gone.
func (lr *logReader) indexes() ([]int, string, error) {
	f := lr.fs
	canon, err := f.resolve(fsLogsDir)
	if err == nil {
		var entries []fs.DirEntry
		if entries, err = f.readDir(canon); err == nil {
			return lr.parse(entries), canon, nil
		}
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		if f.removed() {
			return nil, "", errAllocDirRemoved()
		}
		return nil, fsLogsDir, nil
	}
	return nil, "", f.pathErr(fsLogsDir, err)
}

func (lr *logReader) parse(entries []fs.DirEntry) []int {
	var idxs []int
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasPrefix(name, lr.prefix) {
			continue
		}
		rest := name[len(lr.prefix):]
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 || strconv.Itoa(n) != rest {
			continue
		}
		idxs = append(idxs, n)
	}
	sort.Ints(idxs)
	return idxs
}

// startAt picks where a read begins: After, else the later of the Tail
// and Since starts, else Offset/Origin.
func (lr *logReader) startAt(idxs []int, opts *LogsOptions, buf []byte) (int, int64, error) {
	if p := opts.After; p != nil {
		last := idxs[len(idxs)-1]
		if p.File > last {
			return last, lr.size(last), nil
		}
		return p.File, p.Offset, nil
	}
	if !opts.Tail && opts.Since.IsZero() {
		cur, pos := lr.start(idxs, opts.Offset, opts.Origin == "end")
		return cur, pos, nil
	}
	cur, pos := idxs[0], int64(0)
	if opts.Tail {
		var err error
		if cur, pos, err = lr.startLines(idxs, opts.Lines, buf); err != nil {
			return 0, 0, err
		}
	}
	if !opts.Since.IsZero() {
		if c, p := lr.startSince(idxs, opts.Since.UnixNano()); c > cur || c == cur && p > pos {
			cur, pos = c, p
		}
	}
	return cur, pos, nil
}

// waitStarted polls the task's state until it has started (true), it is
// dead without having started (false) or ctx ends.
func waitStarted(ctx context.Context, state func() *structs.TaskState) (bool, error) {
	tick := time.NewTicker(followPollInterval)
	defer tick.Stop()
	for {
		st := state()
		switch {
		case st == nil:
			return false, nil
		case !st.StartedAt.IsZero():
			return true, nil
		case st.State == structs.TaskStateDead:
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick.C:
		}
	}
}

// start picks the file index and offset to begin at (spec §4). Sizes are
// those at call time; a file that cannot be stat'ed counts as empty.
func (lr *logReader) start(idxs []int, offset int64, fromEnd bool) (int, int64) {
	size := func(i int) int64 {
		fi, err := lr.fs.root.Stat(lr.rel(idxs[i]))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	if fromEnd {
		i := len(idxs) - 1
		off := size(i) - offset
		for off < 0 && i > 0 {
			i--
			off += size(i)
		}
		return idxs[i], max(off, 0)
	}
	i, off := 0, offset
	for i < len(idxs)-1 {
		s := size(i)
		if off < s {
			break
		}
		off -= s
		i++
	}
	return idxs[i], min(off, size(i))
}

// openAfter opens the lowest index above after (and at most upTo, when
// upTo ≥ 0), skipping files removed since they were listed. It returns a
// nil file when there is none.
func (lr *logReader) openAfter(after, upTo int) (*openedFile, int, error) {
	idxs, _, err := lr.indexes()
	if err != nil {
		return nil, 0, err
	}
	for _, i := range idxs {
		if i <= after {
			continue
		}
		if upTo >= 0 && i > upTo {
			break
		}
		of, err := lr.fs.openReadRel(lr.rel(i))
		if isFileNotFound(err) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		return of, i, nil
	}
	return nil, 0, nil
}

// isFileNotFound reports a coded 404 for a missing file (not the alloc dir
// being gone, which ends the stream).
func isFileNotFound(err error) bool {
	var se *structs.Error
	return errors.As(err, &se) && se.Code == 404 && !errors.Is(err, errAllocDirRemoved())
}
