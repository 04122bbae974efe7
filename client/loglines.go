package client

import (
	"bytes"
	"io"

	"tether/structs"
)

// This file turns a log stream into whole lines (issue #17 part 2): where
// the last N lines start, found by reading the rotated files backwards,
// where lines captured since a time start, and the framer that re-cuts the
// byte frames of Logs into line-aligned frames with each line's capture
// time.

// tailBlock is how much a backwards scan reads at a time.
const tailBlock = 64 << 10

// startLines is where the last n lines of the log start: the file index
// and the offset in it. A final newline ends the last line; a partial last
// line counts as one. With fewer lines than n it is the start of the oldest
// file. The files are read backwards, a block at a time, so a tail of a
// few lines reads a block or two whatever the log's size.
func (lr *logReader) startLines(idxs []int, n int, buf []byte) (int, int64, error) {
	if n == 0 {
		i := len(idxs) - 1
		return idxs[i], lr.size(idxs[i]), nil
	}
	need, first := n, true
	for i := len(idxs) - 1; i >= 0; i-- {
		of, err := lr.fs.openReadRel(lr.rel(idxs[i]))
		if isFileNotFound(err) {
			continue // rotated away meanwhile: the older files are too
		}
		if err != nil {
			return 0, 0, err
		}
		end := of.info.Size()
		for end > 0 {
			start := max(0, end-int64(len(buf)))
			chunk := buf[:end-start]
			if _, err := of.file.ReadAt(chunk, start); err != nil && err != io.EOF {
				of.file.Close()
				return 0, 0, fsReadErr(of.rel, err)
			}
			if first {
				first = false
				chunk = bytes.TrimSuffix(chunk, []byte{'\n'})
			}
			for {
				j := bytes.LastIndexByte(chunk, '\n')
				if j < 0 {
					break
				}
				if need--; need == 0 {
					of.file.Close()
					return idxs[i], start + int64(j) + 1, nil
				}
				chunk = chunk[:j]
			}
			end = start
		}
		of.file.Close()
	}
	return idxs[0], 0, nil
}

// startSince is a place at or before the first line captured at or after
// since (Unix ns): in the newest file whose index starts before since, the
// last record before it. The line framer then drops what is older. Only
// the indexes are read.
func (lr *logReader) startSince(idxs []int, since int64) (int, int64) {
	for i := len(idxs) - 1; i >= 0; i-- {
		ls := lr.fs.openLogStamps(lr.rel(idxs[i]))
		first, off := ls.since(since)
		ls.close()
		if first == 0 || first < since {
			return idxs[i], off
		}
	}
	return idxs[0], 0
}

// size is the size of file idx now (0 when it cannot be stat'ed).
func (lr *logReader) size(idx int) int64 {
	fi, err := lr.fs.root.Stat(lr.rel(idx))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// lineStart reports whether offset off of file idx starts a line: the
// start of the oldest file, or just after a newline (at the start of a
// file, the previous file's last byte).
func (lr *logReader) lineStart(idxs []int, idx int, off int64) bool {
	if off == 0 {
		prev := -1
		for _, i := range idxs {
			if i < idx {
				prev = i
			}
		}
		if prev < 0 {
			return true
		}
		idx, off = prev, lr.size(prev)
		if off == 0 {
			return true
		}
	}
	of, err := lr.fs.openReadRel(lr.rel(idx))
	if err != nil {
		return true
	}
	defer of.file.Close()
	var b [1]byte
	if _, err := of.file.ReadAt(b[:], off-1); err != nil {
		return true
	}
	return b[0] == '\n'
}

// lineFramer re-cuts the byte frames of a log stream (one file per frame,
// File and end Offset set) into line-aligned frames: Data holds whole
// lines, each ending in the frame's File, and Stamps the capture time of
// each line's first byte from that file's index. A line not yet ended is
// held until its newline comes (across a rotation too), until it reaches
// structs.MaxFrameData (then it goes as a line of its own), or until
// finish. Event frames go through after the lines before them.
type lineFramer struct {
	fs    *AllocFS
	since int64 // > 0: drop lines captured before it or never stamped
	skip  bool  // drop bytes up to the first newline (started mid-line)
	send  func(*structs.StreamFrame) error

	file   string     // the file whose index is open
	stamps *logStamps // its index
	part   []byte     // the line begun and not ended
	pstamp int64      // its capture time
	// partFile and partEnd are where part's last byte is.
	partFile string
	partEnd  int64
	out      structs.StreamFrame
}

// frame takes one frame of Logs.
func (lf *lineFramer) frame(f *structs.StreamFrame) error {
	if len(f.Data) == 0 {
		if f.TaskEnd != nil {
			if err := lf.finish(); err != nil {
				return err
			}
		}
		return lf.send(f)
	}
	if f.File != lf.file {
		lf.closeStamps()
		lf.file, lf.stamps = f.File, lf.fs.openLogStamps(f.File)
	}
	start := f.Offset - int64(len(f.Data))
	lf.stamps.advance(start, f.Offset)
	data := f.Data
	if lf.skip {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return nil
		}
		lf.skip = false
		start += int64(i + 1)
		data = data[i+1:]
	}
	lf.out = structs.StreamFrame{File: f.File, Data: lf.out.Data[:0], Stamps: lf.out.Stamps[:0]}
	for len(data) > 0 {
		if len(lf.part) == 0 {
			lf.pstamp = lf.stamps.at(start)
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			lf.part = append(lf.part, data...)
			lf.partFile, lf.partEnd = f.File, start+int64(len(data))
			if len(lf.part) >= structs.MaxFrameData {
				lf.line(lf.part, start+int64(len(data)))
				lf.part = lf.part[:0]
			}
			break
		}
		n := int64(i + 1)
		if len(lf.part) > 0 {
			lf.part = append(lf.part, data[:i+1]...)
			lf.line(lf.part, start+n)
			lf.part = lf.part[:0]
		} else {
			lf.line(data[:i+1], start+n)
		}
		data, start = data[i+1:], start+n
		if len(lf.out.Data) >= structs.MaxFrameData {
			if err := lf.flush(); err != nil {
				return err
			}
		}
	}
	return lf.flush()
}

// line adds one line (with its newline, if any) ending at end.
func (lf *lineFramer) line(b []byte, end int64) {
	if lf.since > 0 && (lf.pstamp == 0 || lf.pstamp < lf.since) {
		return
	}
	lf.out.Data = append(lf.out.Data, b...)
	lf.out.Stamps = append(lf.out.Stamps, lf.pstamp)
	lf.out.Offset = end
}

func (lf *lineFramer) flush() error {
	if len(lf.out.Stamps) == 0 {
		return nil
	}
	err := lf.send(&lf.out)
	lf.out.Data, lf.out.Stamps = lf.out.Data[:0], lf.out.Stamps[:0]
	return err
}

// finish sends the line not yet ended, as the log's last line: at the end
// of a read that does not follow, or of the task.
func (lf *lineFramer) finish() error {
	if len(lf.part) == 0 {
		return nil
	}
	lf.out = structs.StreamFrame{File: lf.partFile, Data: lf.out.Data[:0], Stamps: lf.out.Stamps[:0]}
	lf.line(lf.part, lf.partEnd)
	lf.part = lf.part[:0]
	return lf.flush()
}

func (lf *lineFramer) closeStamps() {
	if lf.stamps != nil {
		lf.stamps.close()
		lf.stamps = nil
	}
}
