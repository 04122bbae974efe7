package agent

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"tether/structs"
)

// This file writes log and file streams in the forms a caller asks for
// (issue #17 part 4): Nomad's JSON frames and plain bytes, and Tether's
// NDJSON and SSE records. logRecords is the one piece that turns frames
// (line-aligned ones with capture times from a node in line mode, or a
// file's bytes, which it splits itself) into records; job-wide logs use it
// once per allocation.

// logFormat is the form of a log or file stream on HTTP.
type logFormat uint8

const (
	formatFrames logFormat = iota // Nomad's concatenated JSON frames
	formatPlain                   // the bytes (plain=true or format=plain)
	formatNDJSON                  // one JSON record a line
	formatSSE                     // text/event-stream
)

// sseHeartbeat is how often an idle SSE stream sends a comment.
const sseHeartbeat = 10 * time.Second

// stampLayout is RFC 3339 with nanoseconds, always nine digits, so that
// stamped lines line up and sort as text.
const stampLayout = "2006-01-02T15:04:05.000000000Z07:00"

// noStamp stands for the capture time of a line written before the node
// kept an index (plain form and frames; NDJSON and SSE give "t":null).
const noStamp = "-"

// parseLogFormat reads format= (plain= only when it is absent).
func parseLogFormat(q url.Values, plain bool) (logFormat, error) {
	switch q.Get("format") {
	case "":
		if plain {
			return formatPlain, nil
		}
		return formatFrames, nil
	case "plain":
		return formatPlain, nil
	case "ndjson":
		return formatNDJSON, nil
	case "sse":
		return formatSSE, nil
	}
	return 0, structs.BadRequest("format must be plain, ndjson or sse")
}

// parseSince reads since=: an RFC 3339 time, or a duration back from now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, structs.BadRequest("since must be an RFC 3339 time or a duration such as 10m, got %q", v)
	}
	return now.Add(-d), nil
}

// logRecords encodes the frames of one stream in its format.
type logRecords struct {
	format logFormat
	// contentType is the Content-Type of the frame and plain forms.
	contentType string
	// lineMode: frames are line-aligned with Stamps (a node's log read in
	// line mode). Otherwise a record format splits the bytes itself.
	lineMode bool
	// timestamps prefixes each line with its capture time (plain, frames).
	timestamps bool
	// endEvent writes a task's end as a last line in plain form.
	endEvent bool
	// alloc, task and typ label NDJSON and SSE records of a log; a file
	// stream's records carry the frame's File instead of task and type.
	alloc, task, typ string
	// prefix starts each line of the plain form (job-wide logs: "[alloc8
	// task] "), which then always ends a line.
	prefix string
	// idFor, when set, appends the SSE id of a record at pos (cursorEnd
	// for a task's end) in place of pos: a job-wide log's cursor.
	idFor func(b []byte, pos string) []byte

	part    []byte // file streams: the line not yet ended
	partEnd int64  // and its end offset
	file    string
	scratch []byte
}

// ContentType is the response's Content-Type.
func (lr *logRecords) ContentType() string {
	switch lr.format {
	case formatNDJSON:
		return "application/x-ndjson"
	case formatSSE:
		return "text/event-stream; charset=utf-8"
	}
	return lr.contentType
}

// heartbeat is what an idle stream sends and how often; nil for the forms
// that have none (a byte would corrupt plain output; NDJSON has no
// comment).
func (lr *logRecords) heartbeat() ([]byte, time.Duration) {
	switch lr.format {
	case formatFrames:
		return []byte("{}"), heartbeatInterval
	case formatSSE:
		return []byte(": heartbeat\n\n"), sseHeartbeat
	}
	return nil, 0
}

// rawOK reports whether raw messages (plain bytes from the node) are
// written as they are.
func (lr *logRecords) rawOK() bool { return lr.format == formatPlain && !lr.lineMode }

// appendFrame appends the encoding of f.
func (lr *logRecords) appendFrame(b []byte, f *structs.StreamFrame) []byte {
	switch {
	case lr.format == formatFrames && !(lr.lineMode && lr.timestamps):
		return structs.AppendFrameJSON(b, f)
	case lr.format == formatFrames:
		cp := *f
		lr.scratch = lr.appendLines(lr.scratch[:0], f)
		cp.Data = lr.scratch
		return structs.AppendFrameJSON(b, &cp)
	case f.TaskEnd != nil:
		return lr.appendEnd(b, f.TaskEnd)
	case f.FileEvent != "":
		return lr.appendEvent(b, f)
	case lr.format == formatPlain && !lr.lineMode:
		return append(b, f.Data...)
	case lr.format == formatPlain:
		return lr.appendLines(b, f)
	case lr.lineMode:
		return lr.appendRecords(b, f)
	}
	return lr.splitRecords(b, f)
}

// appendLines appends the lines of a line-aligned frame, each with its
// capture time first when asked.
func (lr *logRecords) appendLines(b []byte, f *structs.StreamFrame) []byte {
	if !lr.timestamps && lr.prefix == "" {
		return append(b, f.Data...)
	}
	eachLine(f, func(line []byte, stamp int64, _ int64) {
		b = append(b, lr.prefix...)
		if lr.timestamps {
			b = appendStamp(b, stamp)
			b = append(b, ' ')
		}
		b = append(b, line...)
		if lr.prefix != "" && line[len(line)-1] != '\n' {
			b = append(b, '\n') // a merged stream: the next line is another's
		}
	})
	return b
}

// eachLine calls fn for each line of a line-aligned frame (with its
// newline), its stamp and the offset of its end in f.File.
func eachLine(f *structs.StreamFrame, fn func(line []byte, stamp, end int64)) {
	data, i := f.Data, 0
	start := f.Offset - int64(len(data))
	for len(data) > 0 {
		n := bytes.IndexByte(data, '\n') + 1
		if n == 0 {
			n = len(data)
		}
		var stamp int64
		if i < len(f.Stamps) {
			stamp = f.Stamps[i]
		}
		start += int64(n)
		fn(data[:n], stamp, start)
		data, i = data[n:], i+1
	}
}

// appendStamp appends a capture time, or the marker of none.
func appendStamp(b []byte, ns int64) []byte {
	if ns == 0 {
		return append(b, noStamp...)
	}
	return time.Unix(0, ns).UTC().AppendFormat(b, stampLayout)
}

// logLine is one record of the record formats.
type logLine struct {
	stamp int64 // capture time (Unix ns), 0 unknown
	file  string
	pos   string // the SSE id: where the line ends
	line  []byte // without its newline
}

// appendRecords appends the records of a line-aligned log frame.
func (lr *logRecords) appendRecords(b []byte, f *structs.StreamFrame) []byte {
	n := structs.LogFileIndex(f.File)
	eachLine(f, func(line []byte, stamp, end int64) {
		pos := structs.LogPos{File: n, Offset: end}.String()
		b = lr.appendLine(b, &logLine{stamp: stamp, pos: pos, line: line})
	})
	return b
}

// splitRecords appends the records of a file stream's frame, holding a
// line not yet ended for the next frame (at most structs.MaxFrameData:
// then it goes as a record of its own).
func (lr *logRecords) splitRecords(b []byte, f *structs.StreamFrame) []byte {
	data := f.Data
	start := f.Offset - int64(len(data))
	lr.file = f.File
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			lr.part = append(lr.part, data...)
			lr.partEnd = start + int64(len(data))
			if len(lr.part) >= structs.MaxFrameData {
				b = lr.flushPart(b)
			}
			return b
		}
		line := data[:i+1]
		if len(lr.part) > 0 {
			line = append(lr.part, line...)
			lr.part = line[:0]
		}
		start += int64(i + 1)
		b = lr.appendLine(b, &logLine{file: f.File, pos: strconv.FormatInt(start, 10), line: line})
		data = data[i+1:]
	}
	return b
}

// finish appends what a stream's end leaves: a file stream's last line
// with no newline.
func (lr *logRecords) finish(b []byte) []byte {
	return lr.flushPart(b)
}

func (lr *logRecords) flushPart(b []byte) []byte {
	if len(lr.part) == 0 {
		return b
	}
	b = lr.appendLine(b, &logLine{file: lr.file, pos: strconv.FormatInt(lr.partEnd, 10), line: lr.part})
	lr.part = lr.part[:0]
	return b
}

// appendLine appends one line record: {"t","alloc","task","type","line",
// "pos"} (a file stream gives "file" for task and type; "partial":true
// marks a line with no newline), as an NDJSON line or an SSE message whose
// id is pos.
func (lr *logRecords) appendLine(b []byte, l *logLine) []byte {
	line := bytes.TrimSuffix(l.line, []byte{'\n'})
	if lr.format == formatSSE {
		b = lr.appendID(b, l.pos)
		b = append(b, "data: "...)
	}
	b = append(b, `{"t":`...)
	if l.stamp == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = appendStamp(b, l.stamp)
		b = append(b, '"')
	}
	b = lr.appendLabels(b, l.file)
	b = append(b, `,"line":`...)
	b = structs.AppendJSONString(b, line)
	b = append(b, `,"pos":"`...)
	b = append(b, l.pos...)
	b = append(b, '"')
	if len(line) == len(l.line) {
		b = append(b, `,"partial":true`...) // no newline (yet): the log's last line
	}
	b = append(b, '}')
	return lr.endRecord(b)
}

// appendID appends an SSE record's id line.
func (lr *logRecords) appendID(b []byte, pos string) []byte {
	b = append(b, "id: "...)
	if lr.idFor != nil {
		b = lr.idFor(b, pos)
	} else {
		b = append(b, pos...)
	}
	return append(b, '\n')
}

// appendLabels appends ,"alloc":..,"task":..,"type":.. (or "file").
func (lr *logRecords) appendLabels(b []byte, file string) []byte {
	b = append(b, `,"alloc":`...)
	b = structs.AppendJSONString(b, lr.alloc)
	if lr.task == "" {
		b = append(b, `,"file":`...)
		return structs.AppendJSONString(b, file)
	}
	b = append(b, `,"task":`...)
	b = structs.AppendJSONString(b, lr.task)
	b = append(b, `,"type":`...)
	return structs.AppendJSONString(b, lr.typ)
}

func (lr *logRecords) endRecord(b []byte) []byte {
	if lr.format == formatSSE {
		return append(b, "\n\n"...)
	}
	return append(b, '\n')
}

// appendEnd appends the end of a followed task: {"end":{...},"alloc",
// "task","type"} (SSE event "end"), or in plain form with end_event a last
// line "end state=dead failed=false exit_code=0 signal=0 finished_at=T".
func (lr *logRecords) appendEnd(b []byte, e *structs.TaskEnd) []byte {
	switch lr.format {
	case formatPlain:
		if !lr.endEvent {
			return b
		}
		b = append(b, lr.prefix...)
		b = append(b, "end state="...)
		b = append(b, e.State...)
		b = append(b, " failed="...)
		b = strconv.AppendBool(b, e.Failed)
		b = append(b, " exit_code="...)
		b = strconv.AppendInt(b, int64(e.ExitCode), 10)
		b = append(b, " signal="...)
		b = strconv.AppendInt(b, int64(e.Signal), 10)
		b = append(b, " finished_at="...)
		b = appendStamp(b, e.FinishedAt.UnixNano())
		return append(b, '\n')
	case formatSSE:
		if lr.idFor != nil {
			b = lr.appendID(b, cursorEnd)
		}
		b = append(b, "event: end\ndata: "...)
	}
	b = append(b, `{"end":`...)
	b = structs.AppendTaskEndJSON(b, e)
	b = lr.appendLabels(b, "")
	b = append(b, '}')
	return lr.endRecord(b)
}

// appendEvent appends a file event ("file deleted", "file truncated") of
// a record format: {"event":..,"alloc":..,"file":..} (SSE event "file");
// plain form shows none.
func (lr *logRecords) appendEvent(b []byte, f *structs.StreamFrame) []byte {
	switch lr.format {
	case formatPlain:
		return b
	case formatSSE:
		b = append(b, "event: file\ndata: "...)
	}
	if f.FileEvent == structs.FileEventTruncated {
		lr.part = lr.part[:0]
	}
	b = append(b, `{"event":`...)
	b = structs.AppendJSONString(b, f.FileEvent)
	b = append(b, `,"alloc":`...)
	b = structs.AppendJSONString(b, lr.alloc)
	b = append(b, `,"file":`...)
	b = structs.AppendJSONString(b, f.File)
	b = append(b, '}')
	return lr.endRecord(b)
}

// appendError appends the failure of the stream records stand for (in
// job-wide logs, one allocation's read): a line "error: msg" in plain
// form, {"error":msg,"alloc","task","type"} in NDJSON, SSE event "error".
func (lr *logRecords) appendError(b []byte, msg string) []byte {
	switch lr.format {
	case formatPlain:
		b = append(b, lr.prefix...)
		b = append(b, "error: "...)
		b = append(b, msg...)
		return append(b, '\n')
	case formatSSE:
		b = append(b, "event: error\ndata: "...)
	}
	b = append(b, `{"error":`...)
	b = structs.AppendJSONString(b, msg)
	b = lr.appendLabels(b, "")
	b = append(b, '}')
	return lr.endRecord(b)
}

// resumeFrom is where an SSE client reconnecting resumes: its
// Last-Event-ID header, else after=.
func resumeFrom(r *http.Request, f logFormat) string {
	if id := r.Header.Get("Last-Event-ID"); id != "" && f == formatSSE {
		return id
	}
	return r.URL.Query().Get("after")
}
