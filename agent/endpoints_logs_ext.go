package agent

import (
	"net/http"
	"strconv"
	"time"

	"tether/structs"
)

// parseLogsExt reads Tether's additions to /v1/client/fs/logs (lines,
// since, timestamps, after or Last-Event-ID, wait, end_event, format) into
// req and returns the stream's encoder. A request with none of them is
// Nomad's, served as Nomad serves it.
func parseLogsExt(r *http.Request, req *structs.FsLogsRequest) (*logRecords, error) {
	q := r.URL.Query()
	rec := &logRecords{contentType: "application/json", alloc: req.AllocID, task: req.Task, typ: req.LogType}
	var err error
	if rec.format, err = parseLogFormat(q, req.Plain); err != nil {
		return nil, err
	}
	if rec.format == formatPlain {
		rec.contentType = "text/plain"
	}
	e := &req.LogsExt
	if v := q.Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > structs.MaxLogLines {
			return nil, structs.BadRequest("lines must be a number of lines from 0 to %d, got %q", structs.MaxLogLines, v)
		}
		e.Tail, e.Lines = true, n
	}
	if v := q.Get("since"); v != "" {
		if e.Since, err = parseSince(v, time.Now()); err != nil {
			return nil, err
		}
	}
	if rec.timestamps, err = queryBool(q, "timestamps", false); err != nil {
		return nil, err
	}
	if rec.endEvent, err = queryBool(q, "end_event", false); err != nil {
		return nil, err
	}
	if e.Wait, err = queryBool(q, "wait", false); err != nil {
		return nil, err
	}
	if v := resumeFrom(r, rec.format); v != "" {
		if _, ok := structs.ParseLogPos(v); !ok {
			return nil, structs.BadRequest("after (or Last-Event-ID) must be a position N.offset, got %q", v)
		}
		e.After = v
	}
	e.LineMode = e.Tail || !e.Since.IsZero() || e.After != "" || rec.timestamps ||
		rec.format == formatNDJSON || rec.format == formatSSE
	if e.LineMode {
		// The node sends line frames (never raw bytes) and this side
		// writes them in the asked form.
		req.Plain = false
		rec.lineMode = true
	} else if rec.format == formatPlain {
		req.Plain = true // format=plain is plain=true
	}
	return rec, nil
}

// resumeStream points a file stream at where an SSE client (its
// Last-Event-ID) or after= says it stopped: a byte offset.
func resumeStream(req *structs.FsStreamRequest, after string) error {
	if after == "" {
		return nil
	}
	off, err := strconv.ParseInt(after, 10, 64)
	if err != nil || off < 0 {
		return structs.BadRequest("after (or Last-Event-ID) must be a byte offset, got %q", after)
	}
	req.Offset, req.Origin = off, "start"
	return nil
}
