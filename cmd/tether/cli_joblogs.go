package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
)

// jobLogsCommands is "job logs": one task log of every allocation of a
// job at once (GET /v1/job/:job_id/logs), each line tagged with its
// allocation and task.
func jobLogsCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"job logs": &command{m: m, synopsis: "Print or follow one task's logs across all allocations of a job",
			help: `
Usage: tether job logs [options] <job> [task]

  Prints the stdout (or stderr) of a task in every allocation of the job
  (a unique ID prefix is enough), merged as the lines arrive, each line
  starting with "[<alloc8> <task>] ". A task name is needed when a group of
  the job runs more than one task; allocations of groups without that task
  are left out.

Options:
  -stderr          The tasks' stderr instead of their stdout.
  -f               Follow: keep printing as the tasks write; allocations that
                   start later join, and one whose task ends prints an end
                   line. Until interrupted (exit 0); a server going away is
                   survived by resuming where every allocation got to.
  -n <lines>       The last <lines> lines of each allocation.
  -since <when>    Only lines captured since then: an RFC 3339 time or a
                   duration back from now (10m, 2h).
  -timestamps      Each line's capture time after the tag (RFC 3339 with
                   nanoseconds; "-" for lines older than the node's index).
  -json            The server's NDJSON records ({"t","alloc","task","type",
                   "line","pos"}, {"end":...}, {"error":...}) as they come.
  -max-allocs <n>  How many allocations are read at once (default 32, at
                   most 256); the others wait for one to end.
`,
			flags: complete.Flags{"-stderr": complete.PredictNothing, "-f": complete.PredictNothing,
				"-n": complete.PredictAnything, "-since": complete.PredictAnything, "-timestamps": complete.PredictNothing,
				"-json": complete.PredictNothing, "-max-allocs": complete.PredictAnything},
			args: predictIDs(m, "jobs"),
			run:  runJobLogs,
		},
	}
}

func runJobLogs(m *meta, args []string) int {
	var stderr, follow, timestamps, jsonOut bool
	var lines, maxAllocs int64
	var since string
	c, rest, code := m.start("job logs", args, argsRule{1, 2, "This command takes one or two arguments: <job> [task]"}, func(fs *flagSetT) {
		fs.BoolVar(&stderr, "stderr", false, "")
		fs.BoolVar(&follow, "f", false, "")
		fs.Int64Var(&lines, "n", -1, "")
		fs.StringVar(&since, "since", "", "")
		fs.BoolVar(&timestamps, "timestamps", false, "")
		fs.BoolVar(&jsonOut, "json", false, "")
		fs.Int64Var(&maxAllocs, "max-allocs", 0, "")
	})
	if c == nil {
		return code
	}
	if lines < -1 || lines == 0 {
		m.ui.Error("-n must be a positive number of lines")
		return cli.RunResultHelp
	}
	id, ok := m.resolveJob(c, rest[0])
	if !ok {
		return 1
	}
	params := map[string]string{"type": "stdout", "follow": strconv.FormatBool(follow),
		"timestamps": strconv.FormatBool(timestamps)}
	if stderr {
		params["type"] = "stderr"
	}
	if len(rest) == 2 {
		params["task"] = rest[1]
	}
	if lines > 0 {
		params["lines"] = strconv.FormatInt(lines, 10)
	}
	if since != "" {
		params["since"] = since
	}
	if maxAllocs != 0 {
		params["max_allocs"] = strconv.FormatInt(maxAllocs, 10)
	}
	ctx, stop := interruptContext()
	defer stop()
	out := &jobLogPrinter{w: m.stdout, json: jsonOut, stamps: timestamps}
	if err := m.followJobLogs(ctx, c, id, params, follow, out); err != nil && ctx.Err() == nil {
		m.apiError("reading job logs", err)
		return 1
	}
	return 0 // the end, or Ctrl-C
}

// followJobLogs prints the job's log from the server's NDJSON records,
// in the plain form the server would write or, with -json, as they come.
// A follow survives the server it reads through going away: it resumes
// from the cursor of every allocation's position reached (after=), so no
// line is lost or printed twice. It ends at the stream's end without
// follow, at Ctrl-C, or when the job is gone.
func (m *meta) followJobLogs(ctx context.Context, c *nomad.Client, id string, params map[string]string, follow bool, out *jobLogPrinter) error {
	params["format"] = "ndjson"
	path := "/v1/job/" + url.PathEscape(id) + "/logs"
	connected := false
	backoff := 100 * time.Millisecond
	for {
		if cur := out.cursor(); cur != "" {
			params["after"] = cur
		}
		err := out.read(ctx, c, path, params, &connected)
		switch {
		case ctx.Err() != nil:
			return nil
		case !follow:
			return err
		case err != nil && connected && isNotFound(err, "job not found"):
			return nil // purged while followed
		case err != nil && !retryable(err):
			return err
		}
		// The stream ended while following: a server went away.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// isNotFound reports whether err is the server's 404 with text.
func isNotFound(err error, text string) bool {
	var ue nomad.UnexpectedResponseError
	return errors.As(err, &ue) && ue.HasStatusCode() && ue.StatusCode() == http.StatusNotFound &&
		strings.TrimSpace(ue.Body()) == text
}

// jobLogRecord is one NDJSON record of a job-wide log.
type jobLogRecord struct {
	T       *string `json:"t"`
	Alloc   string  `json:"alloc"`
	Task    string  `json:"task"`
	Line    *string `json:"line"`
	Partial bool    `json:"partial"`
	Pos     string  `json:"pos"`
	Error   *string `json:"error"`
	End     *struct {
		State      string    `json:"state"`
		Failed     bool      `json:"failed"`
		ExitCode   int       `json:"exit_code"`
		Signal     int       `json:"signal"`
		FinishedAt time.Time `json:"finished_at"`
	} `json:"end"`
}

// jobLogPrinter writes a job's records and keeps where each allocation's
// log reached, for the resume.
type jobLogPrinter struct {
	w      io.Writer
	json   bool
	stamps bool
	allocs []string          // in the order they came
	pos    map[string]string // allocation → "N.offset" or "end"
}

// cursor is the server's resume cursor (alloc=pos,...), "" before any
// record.
func (p *jobLogPrinter) cursor() string {
	var b strings.Builder
	for i, a := range p.allocs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(a + "=" + p.pos[a])
	}
	return b.String()
}

func (p *jobLogPrinter) moved(alloc, pos string) {
	if p.pos == nil {
		p.pos = map[string]string{}
	}
	if _, ok := p.pos[alloc]; !ok {
		p.allocs = append(p.allocs, alloc)
	}
	p.pos[alloc] = pos
}

// read prints one stream's records until it ends; *connected is set once
// the server answered 200.
func (p *jobLogPrinter) read(ctx context.Context, c *nomad.Client, path string, params map[string]string, connected *bool) error {
	q := (&nomad.QueryOptions{Params: params}).WithContext(ctx)
	body, err := c.Raw().Response(path, q)
	if err != nil {
		return err
	}
	defer body.Close()
	*connected = true
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var rec jobLogRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("reading job logs: a record that is not JSON: %w", err)
		}
		if err := p.print(sc.Bytes(), &rec); err != nil {
			return fatalError{fmt.Errorf("writing output: %w", err)}
		}
		switch {
		case rec.End != nil:
			p.moved(rec.Alloc, "end")
		case rec.Line != nil && rec.Pos != "":
			p.moved(rec.Alloc, rec.Pos)
		}
	}
	return sc.Err()
}

// print writes one record: as it came with -json, else as the server's
// plain form has it ("[alloc8 task] line", the end and error lines).
func (p *jobLogPrinter) print(raw []byte, rec *jobLogRecord) error {
	if p.json {
		_, err := p.w.Write(append(raw, '\n'))
		return err
	}
	b := []byte("[" + rec.Alloc[:min(8, len(rec.Alloc))] + " " + rec.Task + "] ")
	switch {
	case rec.End != nil:
		e := rec.End
		b = fmt.Appendf(b, "end state=%s failed=%t exit_code=%d signal=%d finished_at=%s", e.State, e.Failed, e.ExitCode, e.Signal,
			e.FinishedAt.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"))
	case rec.Error != nil:
		b = append(b, "error: "+*rec.Error...)
	case rec.Line != nil:
		b = appendLine(b, p.stamps, rec.T, *rec.Line)
	default:
		return nil // a record of a kind this CLI does not know
	}
	_, err := p.w.Write(append(b, '\n'))
	return err
}
