package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
	"github.com/schollz/progressbar/v3"

	"tether/structs"
)

// bigFileBytes is the size over which "alloc fs" will not print a file
// to a terminal without -o.
const bigFileBytes = 8 << 20

// defaultTailLines is what -tail prints without -n or -c.
const defaultTailLines = 10

func allocStreamCommands(m *meta) map[string]cli.Command {
	streamFlags := complete.Flags{"-f": complete.PredictNothing, "-tail": complete.PredictNothing,
		"-n": complete.PredictAnything, "-c": complete.PredictAnything, "-job": complete.PredictNothing}
	return map[string]cli.Command{
		"alloc logs": &command{m: m, synopsis: "Print or follow a task's stdout or stderr",
			help: `
Usage: tether alloc logs [options] <allocation|job> [task]

  Prints a task's stdout (or stderr). A task name is needed when the
  allocation has more than one task.

Options:
  -stderr       The task's stderr instead of its stdout.
  -task <name>  The task (or as the second argument).
  -job          The argument is a job ID: use its newest running allocation.
  -f            Follow: keep printing as the task writes, until interrupted
                or the task ends; then exit with the task's exit code. A
                server going away is survived by reconnecting where the
                output stopped, through the address given.
  -tail         Start at the end: the last 10 lines, or -n / -c.
  -n <lines>    The last <lines> lines (implies -tail), counted by the
                node across rotated files.
  -c <bytes>    With -tail, the number of bytes.
  -since <when> Only lines captured since then: an RFC 3339 time or a
                duration back from now (10m, 2h).
  -timestamps   Prefix each line with its capture time (RFC 3339 with
                nanoseconds; "-" for lines older than the node's index).
`,
			flags: mergeFlags(streamFlags, complete.Flags{"-stderr": complete.PredictNothing, "-task": complete.PredictAnything,
				"-since": complete.PredictAnything, "-timestamps": complete.PredictNothing}),
			args: predictIDs(m, "allocs"),
			run:  runAllocLogs,
		},
		"alloc fs": &command{m: m, synopsis: "List or read files of an allocation's directory",
			help: `
Usage: tether alloc fs [options] <allocation|job> [path]

  Lists a directory of the allocation, or prints a file of it. A file over
  8 MiB is not printed to a terminal: give -o FILE to save it (with a
  progress bar on stderr when stderr is a terminal).

Options:
  -H            Machine-friendly output: sizes in bytes.
  -stat         Show the file information of the path.
  -job          The argument is a job ID: use its newest running allocation.
  -f            Follow the file, until interrupted.
  -tail         Start at the end: the last 10 lines, or -n / -c.
  -n <lines>    With -tail, the number of lines.
  -c <bytes>    With -tail, the number of bytes.
  -o <file>     Save the file there instead of printing it.
  -archive      Download the directory as one tar (a .tar -o file: plain tar;
                otherwise tar.gz), built on the node; to stdout without -o.
`,
			flags: mergeFlags(streamFlags, complete.Flags{"-H": complete.PredictNothing, "-stat": complete.PredictNothing,
				"-o": complete.PredictFiles("*"), "-archive": complete.PredictNothing}),
			args: predictIDs(m, "allocs"),
			run:  runAllocFS,
		},
	}
}

// tailOpts are the flags shared by logs and fs.
type tailOpts struct {
	follow, tail, job bool
	lines, bytes      int64

	// since and timestamps are alloc logs' only (records from the
	// servers, see runRecords).
	since      string
	timestamps bool
}

func (o *tailOpts) register(fs *flagSetT) {
	fs.BoolVar(&o.follow, "f", false, "")
	fs.BoolVar(&o.tail, "tail", false, "")
	fs.BoolVar(&o.job, "job", false, "")
	fs.Int64Var(&o.lines, "n", -1, "")
	fs.Int64Var(&o.bytes, "c", -1, "")
}

func (o *tailOpts) check(m *meta) bool {
	switch {
	case o.lines != -1 && o.bytes != -1:
		m.ui.Error("Only one of -n and -c may be given")
		return false
	case o.lines < -1 || o.lines == 0:
		m.ui.Error("-n must be a positive number of lines")
		return false
	case o.bytes < -1 || o.bytes == 0:
		m.ui.Error("-c must be a positive number of bytes")
		return false
	case (o.lines != -1 || o.bytes != -1) && !o.tail:
		m.ui.Error("-n and -c are only valid with -tail")
		return false
	}
	if o.tail && o.lines == -1 && o.bytes == -1 {
		o.lines = defaultTailLines
	}
	return true
}

// resolveTarget finds the allocation of the argument: an allocation ID
// prefix or, with -job, the newest running allocation of the job.
func (m *meta) resolveTarget(c *nomad.Client, arg string, job bool) (*nomad.Allocation, bool) {
	if !job {
		return m.resolveAlloc(c, arg)
	}
	id, ok := m.resolveJob(c, arg)
	if !ok {
		return nil, false
	}
	allocs, _, err := c.Jobs().Allocations(id, false, nil)
	if err != nil {
		m.apiError("querying job allocations", err)
		return nil, false
	}
	sortStubs(allocs)
	for _, a := range allocs {
		if a.ClientStatus == "running" {
			return m.resolveAlloc(c, a.ID)
		}
	}
	if len(allocs) == 0 {
		m.ui.Error(fmt.Sprintf("Job %q has no allocations", id))
		return nil, false
	}
	return m.resolveAlloc(c, allocs[0].ID)
}

// viaServers is the allocation with its node ID cleared, so the official
// client sends its fs and logs calls to the address given (the servers,
// which forward them) instead of dialing the node: operators reach nodes
// through the servers, as firewalls and load balancers expect.
func viaServers(a *nomad.Allocation) *nomad.Allocation {
	cp := *a
	cp.NodeID = ""
	return &cp
}

// interruptContext ends on Ctrl-C or SIGTERM: following ends with exit 0.
func interruptContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func runAllocLogs(m *meta, args []string) int {
	fs := m.flagSet("alloc logs")
	var o tailOpts
	var stderr bool
	var task string
	o.register(fs)
	fs.BoolVar(&stderr, "stderr", false, "")
	fs.StringVar(&task, "task", "", "")
	fs.StringVar(&o.since, "since", "", "")
	fs.BoolVar(&o.timestamps, "timestamps", false, "")
	if !m.parse(fs, args) {
		return cli.RunResultHelp
	}
	if o.lines != -1 && o.bytes == -1 {
		o.tail = true // -n alone: the node counts the lines
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		m.ui.Error("This command takes one or two arguments: <allocation|job> [task]")
		return cli.RunResultHelp
	}
	if !o.check(m) {
		return cli.RunResultHelp
	}
	if fs.NArg() == 2 {
		if task != "" && task != fs.Arg(1) {
			m.ui.Error("The task is given twice: -task and the second argument")
			return cli.RunResultHelp
		}
		task = fs.Arg(1)
	}
	c, err := m.client()
	if err != nil {
		m.ui.Error(err.Error())
		return 1
	}
	alloc, ok := m.resolveTarget(c, fs.Arg(0), o.job)
	if !ok {
		return 1
	}
	if task == "" {
		names := taskNames(alloc)
		if len(names) != 1 {
			m.ui.Error(fmt.Sprintf("Allocation %q is running the following tasks:\n  * %s\n\nPlease specify the task.",
				shortID(alloc.ID, false), strings.Join(names, "\n  * ")))
			return 1
		}
		task = names[0]
	} else if _, ok := alloc.TaskStates[task]; !ok && alloc.TaskStates != nil && len(alloc.TaskStates) > 0 {
		m.ui.Error(fmt.Sprintf("Could not find task named %q, found: %s", task, strings.Join(taskNames(alloc), ", ")))
		return 1
	}
	logType := "stdout"
	if stderr {
		logType = "stderr"
	}
	ctx, stop := interruptContext()
	defer stop()
	s := &logStream{m: m, c: c, alloc: viaServers(alloc), task: task, typ: logType}
	return s.run(ctx, o)
}

func taskNames(a *nomad.Allocation) []string {
	var names []string
	for n := range a.TaskStates {
		names = append(names, n)
	}
	if len(names) == 0 && a.Job != nil {
		for _, tg := range a.Job.TaskGroups {
			if tg.Name != nil && *tg.Name == a.TaskGroup {
				for _, t := range tg.Tasks {
					names = append(names, t.Name)
				}
			}
		}
	}
	sort.Strings(names)
	return names
}

// logStream reads one task log, following it across reconnections.
type logStream struct {
	m     *meta
	c     *nomad.Client
	alloc *nomad.Allocation
	task  string
	typ   string

	// file and pos are where the output reached: the log file of the last
	// data frame and the position in it after that data.
	file string
	pos  int64
}

// run prints the log as asked: whole, the tail, and following. A server
// that serves records (Tether) counts the lines, stamps them and says how
// a followed task ended; with another (Nomad) the tail is found here.
func (s *logStream) run(ctx context.Context, o tailOpts) int {
	if o.bytes == -1 {
		if code, ok := s.runRecords(ctx, o); ok {
			return code
		}
	}
	if o.since != "" || o.timestamps {
		s.m.ui.Error("Error reading logs: the server does not support -since or -timestamps")
		return 1
	}
	origin, offset := "start", int64(0)
	if o.tail {
		origin = "end"
		offset = o.bytes
		if o.lines > 0 {
			n, err := s.tailOffset(ctx, o.lines)
			if ctx.Err() != nil {
				return 0
			}
			if err != nil {
				s.m.apiError("reading logs", err)
				return 1
			}
			offset = n
		}
	}
	err := s.stream(ctx, o.follow, origin, offset)
	for o.follow && ctx.Err() == nil && (err == nil || retryable(err)) {
		// The stream ended while following: a server went away. Reconnect
		// where the output stopped, waiting a little between attempts.
		err = s.reconnect(ctx)
	}
	if ctx.Err() != nil {
		return 0
	}
	if err != nil {
		s.m.apiError("reading logs", err)
		return 1
	}
	return 0
}

// tailOffset is the number of bytes back from the end that holds the
// last n lines: it reads ever larger tails until it has n line ends
// before the final one, or the whole log.
func (s *logStream) tailOffset(ctx context.Context, n int64) (int64, error) {
	guess := max(n*128, 4096)
	for {
		var buf bytes.Buffer
		if err := s.collect(ctx, "end", guess, &buf); err != nil {
			return 0, err
		}
		data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if idx := nthLastIndex(data, '\n', n); idx >= 0 {
			return int64(buf.Len() - idx - 1), nil
		}
		if int64(buf.Len()) < guess || guess >= 1<<30 {
			return int64(buf.Len()), nil // the whole log
		}
		guess *= 4
	}
}

// nthLastIndex is the index of the n-th last c in b, or -1.
func nthLastIndex(b []byte, c byte, n int64) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			n--
			if n == 0 {
				return i
			}
		}
	}
	return -1
}

// fatalError is a stream error that reconnecting cannot cure: the
// output cannot be written, or the file went away.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// qctx is query options that end with ctx.
func qctx(ctx context.Context) *nomad.QueryOptions {
	return (&nomad.QueryOptions{}).WithContext(ctx)
}

// collect reads the log from origin/offset to its end without following.
func (s *logStream) collect(ctx context.Context, origin string, offset int64, w io.Writer) error {
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := s.c.AllocFS().Logs(s.alloc, false, s.task, s.typ, origin, offset, cancel, nil)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case f, ok := <-frames:
			if !ok {
				return nil
			}
			if _, err := w.Write(f.Data); err != nil {
				return err
			}
		}
	}
}

// stream prints frames to stdout and records where the output reached.
// It returns nil when the stream ended (the log's end without follow, or
// the connection closing) and the stream's error otherwise.
func (s *logStream) stream(ctx context.Context, follow bool, origin string, offset int64) error {
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := s.c.AllocFS().Logs(s.alloc, follow, s.task, s.typ, origin, offset, cancel, nil)
	return eachFrame(ctx, frames, errs, func(f *nomad.StreamFrame) error {
		if len(f.Data) == 0 {
			return nil
		}
		if _, err := s.m.stdout.Write(f.Data); err != nil {
			return fatalError{fmt.Errorf("writing output: %w", err)}
		}
		s.file, s.pos = f.File, f.Offset
		return nil
	})
}

// eachFrame hands the frames of a stream to fn until ctx ends (nil), the
// stream fails (its error), it ends (nil, or the error that ended it) or
// fn returns an error.
func eachFrame(ctx context.Context, frames <-chan *nomad.StreamFrame, errs <-chan error, fn func(*nomad.StreamFrame) error) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case f, ok := <-frames:
			if !ok {
				select {
				case err := <-errs:
					return err
				default:
					return nil
				}
			}
			if err := fn(f); err != nil {
				return err
			}
		}
	}
}

// reconnect resumes following at the position reached: the sizes of the
// rotated files before the current one plus the position in it, counted
// from the start as the logs endpoint counts.
func (s *logStream) reconnect(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
		offset, err := s.resumeOffset()
		if err != nil {
			if retryable(err) {
				continue
			}
			return err
		}
		return s.stream(ctx, true, "start", offset)
	}
}

func (s *logStream) resumeOffset() (int64, error) {
	if s.file == "" {
		return 0, nil
	}
	files, _, err := s.c.AllocFS().List(s.alloc, "alloc/logs", nil)
	if err != nil {
		return 0, err
	}
	cur, ok := logIndex(s.file, s.task, s.typ)
	if !ok {
		return s.pos, nil
	}
	var before int64
	for _, f := range files {
		if idx, ok := logIndex(f.Name, s.task, s.typ); ok && idx < cur {
			before += f.Size
		}
	}
	return before + s.pos, nil
}

// logIndex is N of a log file named <task>.<type>.<N>.
func logIndex(name, task, typ string) (int, bool) {
	name = name[strings.LastIndexByte(name, '/')+1:]
	rest, ok := strings.CutPrefix(name, task+"."+typ+".")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil
}

// retryable reports whether an error is the connection or a server going
// away (worth reconnecting) rather than the API refusing the call. "No
// path to node" is a 404 but passes: when the server that held the
// node's session goes away, the others answer it until the node has
// dialled one of them, which takes it a moment.
func retryable(err error) bool {
	var fe fatalError
	if errors.As(err, &fe) {
		return false
	}
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) && ue.HasStatusCode() {
		code := ue.StatusCode()
		return code >= 500 || code == 429 ||
			code == http.StatusNotFound && strings.TrimSpace(ue.Body()) == structs.ErrNoPathToNode.Message
	}
	return true
}

func runAllocFS(m *meta, args []string) int {
	fs := m.flagSet("alloc fs")
	var o tailOpts
	var machine, stat, archive bool
	var outFile string
	o.register(fs)
	fs.BoolVar(&machine, "H", false, "")
	fs.BoolVar(&stat, "stat", false, "")
	fs.BoolVar(&archive, "archive", false, "")
	fs.StringVar(&outFile, "o", "", "")
	if !m.parse(fs, args) {
		return cli.RunResultHelp
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		m.ui.Error("This command takes one or two arguments: <allocation|job> [path]")
		return cli.RunResultHelp
	}
	if !o.check(m) {
		return cli.RunResultHelp
	}
	path := "/"
	if fs.NArg() == 2 {
		path = fs.Arg(1)
	}
	c, err := m.client()
	if err != nil {
		m.ui.Error(err.Error())
		return 1
	}
	alloc, ok := m.resolveTarget(c, fs.Arg(0), o.job)
	if !ok {
		return 1
	}
	alloc = viaServers(alloc)
	if archive {
		return m.saveArchive(c, alloc, path, outFile) // cli_archive.go
	}
	size := func(n int64) string {
		if machine {
			return strconv.FormatInt(n, 10)
		}
		return humanBytes(uint64(max(n, 0)))
	}
	fi, _, err := c.AllocFS().Stat(alloc, path, nil)
	if err != nil {
		m.apiError("reading file info", err)
		return 1
	}
	if stat {
		name := fi.Name
		if fi.IsDir {
			name += "/"
		}
		m.ui.Output(formatList([]string{"Mode|Size|Modified Time|Content Type|Name",
			fmt.Sprintf("%s|%s|%s|%s|%s", fi.FileMode, size(fi.Size), formatTime(fi.ModTime), fi.ContentType, name)}))
		return 0
	}
	if fi.IsDir {
		files, _, err := c.AllocFS().List(alloc, path, nil)
		if err != nil {
			m.apiError("listing directory", err)
			return 1
		}
		rows := []string{"Mode|Size|Modified Time|Name"}
		for _, f := range files {
			name := f.Name
			if f.IsDir {
				name += "/"
			}
			rows = append(rows, fmt.Sprintf("%s|%s|%s|%s", f.FileMode, size(f.Size), formatTime(f.ModTime), name))
		}
		m.ui.Output(formatList(rows))
		return 0
	}
	ctx, stop := interruptContext()
	defer stop()
	if outFile != "" {
		return m.saveFile(ctx, c, alloc, path, fi.Size, outFile)
	}
	if !o.tail && !o.follow && fi.Size > bigFileBytes && isTerminal(m.stdout) {
		m.ui.Error(fmt.Sprintf("%s is %s: too large for a terminal. Save it with -o FILE, or pipe the output.",
			path, humanBytes(uint64(fi.Size))))
		return 1
	}
	f := &fileStream{m: m, c: c, alloc: alloc, path: path}
	return f.run(ctx, o, fi.Size)
}

// saveFile copies a file of the allocation to outFile, with a progress
// bar on stderr when stderr is a terminal.
func (m *meta) saveFile(ctx context.Context, c *nomad.Client, alloc *nomad.Allocation, path string, size int64, outFile string) int {
	r, err := c.AllocFS().Cat(alloc, path, qctx(ctx))
	if err != nil {
		m.apiError("reading file", err)
		return 1
	}
	defer r.Close()
	out, err := os.Create(outFile)
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error creating %s: %v", outFile, err))
		return 1
	}
	var w io.Writer = out
	var bar *progressbar.ProgressBar
	if isTerminal(m.stderr) {
		bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(m.stderr),
			progressbar.OptionSetDescription(path),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(m.stderr) }),
		)
		w = io.MultiWriter(out, bar)
	}
	_, cerr := io.Copy(w, r)
	if bar != nil {
		_ = bar.Finish()
	}
	if err := out.Close(); cerr == nil {
		cerr = err
	}
	if cerr != nil {
		m.ui.Error(fmt.Sprintf("Error saving %s to %s: %v", path, outFile, cerr))
		return 1
	}
	return 0
}

// fileStream reads one file of an allocation, following it across
// reconnections.
type fileStream struct {
	m     *meta
	c     *nomad.Client
	alloc *nomad.Allocation
	path  string
	pos   int64
}

func (f *fileStream) run(ctx context.Context, o tailOpts, size int64) int {
	offset := int64(0)
	if o.tail {
		if o.bytes > 0 {
			offset = max(size-o.bytes, 0)
		} else {
			off, err := f.tailStart(ctx, size, o.lines)
			if err != nil {
				f.m.apiError("reading file", err)
				return 1
			}
			offset = off
		}
	}
	if !o.follow {
		var r io.ReadCloser
		var err error
		if offset == 0 {
			r, err = f.c.AllocFS().Cat(f.alloc, f.path, qctx(ctx))
		} else {
			r, err = f.c.AllocFS().ReadAt(f.alloc, f.path, offset, size-offset, qctx(ctx))
		}
		if err != nil {
			f.m.apiError("reading file", err)
			return 1
		}
		defer r.Close()
		if _, err := io.Copy(f.m.stdout, r); err != nil && ctx.Err() == nil {
			f.m.apiError("reading file", err)
			return 1
		}
		return 0
	}
	f.pos = offset
	err := f.stream(ctx)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil && (err == nil || retryable(err)) {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
		err = f.stream(ctx)
	}
	if ctx.Err() != nil {
		return 0
	}
	f.m.apiError("reading file", err)
	return 1
}

// tailStart is the offset of the start of the file's last n lines.
func (f *fileStream) tailStart(ctx context.Context, size, n int64) (int64, error) {
	guess := max(n*128, 4096)
	for {
		start := max(size-guess, 0)
		r, err := f.c.AllocFS().ReadAt(f.alloc, f.path, start, size-start, qctx(ctx))
		if err != nil {
			return 0, err
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return 0, err
		}
		if idx := nthLastIndex(bytes.TrimSuffix(data, []byte("\n")), '\n', n); idx >= 0 {
			return start + int64(idx) + 1, nil
		}
		if start == 0 {
			return 0, nil
		}
		guess *= 4
	}
}

func (f *fileStream) stream(ctx context.Context) error {
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := f.c.AllocFS().Stream(f.alloc, f.path, "start", f.pos, cancel, nil)
	return eachFrame(ctx, frames, errs, func(fr *nomad.StreamFrame) error {
		if fr.FileEvent != "" {
			return fatalError{fmt.Errorf("%s: %s", f.path, fr.FileEvent)}
		}
		if len(fr.Data) == 0 {
			return nil
		}
		if _, err := f.m.stdout.Write(fr.Data); err != nil {
			return fatalError{fmt.Errorf("writing output: %w", err)}
		}
		f.pos = fr.Offset
		return nil
	})
}

// logRecord is one NDJSON record of a Tether server's log stream.
type logRecord struct {
	T       *string `json:"t"`
	Line    *string `json:"line"`
	Partial bool    `json:"partial"`
	Pos     string  `json:"pos"`
	End     *struct {
		ExitCode int `json:"exit_code"`
	} `json:"end"`
}

// appendLine appends a record's line, after its capture time t and a
// space when stamps is set ("-" for a line the node has no time of).
func appendLine(b []byte, stamps bool, t *string, line string) []byte {
	if stamps {
		if t != nil {
			b = append(b, *t...)
		} else {
			b = append(b, '-')
		}
		b = append(b, ' ')
	}
	return append(b, line...)
}

// errNotRecords says the server answered with Nomad's frames: it ignores
// format=ndjson, so the client-side path is taken.
var errNotRecords = errors.New("the server does not serve log records")

// runRecords prints the log from the server's NDJSON records
// (format=ndjson): lines=, since= and timestamps= are the server's; a
// follow ends with the task and exits with its exit code, and a server
// going away is survived by resuming after the last record's position.
// ok is false when the server does not serve records.
func (s *logStream) runRecords(ctx context.Context, o tailOpts) (code int, ok bool) {
	params := map[string]string{"task": s.task, "type": s.typ, "format": "ndjson",
		"follow": strconv.FormatBool(o.follow), "timestamps": strconv.FormatBool(o.timestamps)}
	if o.tail {
		params["lines"] = strconv.FormatInt(o.lines, 10)
	}
	if o.since != "" {
		params["since"] = o.since
	}
	var pos string // where the output reached
	first := true
	backoff := 100 * time.Millisecond
	for {
		if pos != "" {
			params["after"] = pos
			delete(params, "lines")
		}
		exit, err := s.records(ctx, params, o.timestamps, &pos, &first)
		switch {
		case errors.Is(err, errNotRecords):
			return 0, false
		case ctx.Err() != nil:
			return 0, true
		case exit != nil:
			return *exit, true
		case err == nil && !o.follow:
			return 0, true
		case err != nil && !retryable(err):
			s.m.apiError("reading logs", err)
			return 1, true
		}
		// The stream ended while following: a server went away.
		select {
		case <-ctx.Done():
			return 0, true
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// records reads one NDJSON stream, printing its lines and moving pos. It
// returns the task's exit code when the stream ends with the task, and
// errNotRecords when the first thing the server sent is not a record.
func (s *logStream) records(ctx context.Context, params map[string]string, stamps bool, pos *string, first *bool) (*int, error) {
	q := (&nomad.QueryOptions{Params: params}).WithContext(ctx)
	body, err := s.c.Raw().Response("/v1/client/fs/logs/"+s.alloc.ID, q)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	dec := json.NewDecoder(body)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil
			}
			return nil, err
		}
		var rec logRecord
		if err := json.Unmarshal(raw, &rec); err != nil || (rec.Line == nil && rec.End == nil) {
			if *first {
				return nil, errNotRecords
			}
			continue
		}
		*first = false
		if rec.End != nil {
			return &rec.End.ExitCode, nil
		}
		b := appendLine(nil, stamps, rec.T, *rec.Line)
		if !rec.Partial {
			b = append(b, '\n')
		}
		if _, err := s.m.stdout.Write(b); err != nil {
			return nil, fatalError{fmt.Errorf("writing output: %w", err)}
		}
		*pos = rec.Pos
	}
}
