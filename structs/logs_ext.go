package structs

import (
	"strconv"
	"strings"
	"time"
)

// This file holds what Tether adds to Nomad's log and file streams
// (issue #17, parts 2 to 4): line tails, since, capture times, the end of
// a followed task, and the record formats. A request that asks for none of
// it is served exactly as Nomad serves it.

// MaxLogLines is the largest lines= a log read accepts.
const MaxLogLines = 100_000

// LogsExt are the additions to a log read, carried in FsLogsRequest.
type LogsExt struct {
	// Tail starts the read at the start of the last Lines whole lines
	// across the rotated files (a partial last line counts as one; 0
	// lines is the end). It replaces Offset and Origin.
	Tail  bool `codec:"Tail,omitempty"`
	Lines int  `codec:"Lines,omitempty"`

	// Since, when not zero, starts the read at the first line whose first
	// byte the node's log writer captured at or after it. Lines with no
	// capture time (written before the node kept an index) are left out.
	// With Lines, the later of the two starts wins.
	Since time.Time `codec:"Since,omitempty"`

	// After resumes a read where an earlier one stopped: the position of
	// a line's end (LogPos), as records carry it. It replaces Lines,
	// Since, Offset and Origin.
	After string `codec:"After,omitempty"`

	// LineMode asks the node for line-aligned frames: each frame's Data
	// is whole lines (the last line of the log may lack its newline),
	// every line of a frame ends in the frame's File, and Stamps gives the
	// capture time of each line. Set by the HTTP side whenever lines,
	// since, after, timestamps or a record format is asked for.
	LineMode bool `codec:"LineMode,omitempty"`

	// Wait, while following, waits for a task that has not started yet
	// instead of failing with "not started yet".
	Wait bool `codec:"Wait,omitempty"`
}

// TaskEnd is how a followed task ended: the last frame of a followed log
// stream once the task is dead (StreamFrame.TaskEnd; Nomad's clients
// ignore the field) and the "end" record of the record formats.
type TaskEnd struct {
	State      string    `json:"state"`
	Failed     bool      `json:"failed"`
	ExitCode   int       `json:"exit_code"`
	Signal     int       `json:"signal"`
	FinishedAt time.Time `json:"finished_at"`
}

// TaskEndOf is the end of a dead task from its state, with the exit code
// and signal of its last termination event; nil while the task is not
// dead.
func TaskEndOf(st *TaskState) *TaskEnd {
	if st == nil || st.State != TaskStateDead {
		return nil
	}
	end := &TaskEnd{State: st.State, Failed: st.Failed, FinishedAt: st.FinishedAt}
	for i := len(st.Events) - 1; i >= 0; i-- {
		if ev := st.Events[i]; ev.Type == TaskTerminated {
			end.ExitCode, end.Signal = ev.ExitCode, ev.Signal
			break
		}
	}
	return end
}

// LogPos is a position in a task's rotated log: the file index N of
// alloc/logs/<task>.<type>.N and the byte offset in it. It is written
// "N.offset", the SSE id and the after= parameter.
type LogPos struct {
	File   int
	Offset int64
}

// String is the "N.offset" form.
func (p LogPos) String() string {
	return strconv.Itoa(p.File) + "." + strconv.FormatInt(p.Offset, 10)
}

// ParseLogPos reads the "N.offset" form.
func ParseLogPos(s string) (LogPos, bool) {
	n, off, ok := strings.Cut(s, ".")
	if !ok {
		return LogPos{}, false
	}
	f, err1 := strconv.Atoi(n)
	o, err2 := strconv.ParseInt(off, 10, 64)
	if err1 != nil || err2 != nil || f < 0 || o < 0 {
		return LogPos{}, false
	}
	return LogPos{File: f, Offset: o}, true
}

// LogFileIndex is N of a log file path ending in <task>.<type>.N (the
// frame File of a log stream), or -1.
func LogFileIndex(file string) int {
	i := strings.LastIndexByte(file, '.')
	if i < 0 {
		return -1
	}
	n, err := strconv.Atoi(file[i+1:])
	if err != nil || n < 0 {
		return -1
	}
	return n
}
