package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/server"
	"tether/structs"
	"tether/structs/acl"
)

// Job-wide logs (issue #17 part 1): GET /v1/job/:job_id/logs reads one
// task log of every allocation of a job at once, each through the routed
// logs call of that allocation (backend.route, so each allocation's node
// may hold its session on another server), and merges their lines as
// they arrive, each tagged with its allocation and task. With follow,
// allocations that start later join (a watch of the job's allocations in
// the server's state) and those whose task ends leave with an end record.
//
// It is served by servers. A node-only agent forwards it with the other
// server endpoints (agent/forward_http.go): the first, unary try stops at
// the first flush and the answer is streamed (HTTP.ForwardStream).

const (
	// defaultJobLogAllocs is how many allocations a job-wide log reads at
	// once unless max_allocs says otherwise; maxJobLogAllocs caps it.
	defaultJobLogAllocs = 32
	maxJobLogAllocs     = 256
	// jobLogQueue is how many encoded chunks the allocations' readers may
	// have ahead of the HTTP writer; then they wait, and flow control
	// slows their nodes.
	jobLogQueue = 64
)

// jobLogsOptions is a parsed job-wide log request.
type jobLogsOptions struct {
	ns, jobID string
	task      string // "" : the only task of each allocation's group
	follow    bool
	maxAllocs int
	req       structs.FsLogsRequest // what each allocation's call asks
	rec       *logRecords           // the records' form, copied per allocation
	resume    *jobCursor            // where a resumed stream stood (nil: from the start)
}

// jobLogs serves GET /v1/job/:job_id/logs.
func (a *Agent) jobLogs(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.NewError(http.StatusMethodNotAllowed, "Invalid method")
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	// The capability of the call under it (fs/logs): read-logs or read-fs.
	if _, err := a.authorize(r, func(x *acl.ACL) bool {
		return x.AllowNamespaceOperation(ns, acl.NamespaceCapabilityReadLogs) ||
			x.AllowNamespaceOperation(ns, acl.NamespaceCapabilityReadFS)
	}); err != nil {
		return nil, err
	}
	o, err := parseJobLogs(r, ns, mux.Vars(r)["id"])
	if err != nil {
		return nil, err
	}
	job, allocs, idx, err := s.State().JobAllocs(nil, ns, o.jobID)
	if err != nil {
		return nil, err
	}
	if job == nil {
		return nil, structs.NotFound("job not found")
	}
	if err := o.checkTask(job); err != nil {
		return nil, err
	}
	if !o.follow && !slices.ContainsFunc(allocs, hasLogs) {
		return nil, structs.NotFound("job has no allocations")
	}
	if err := a.streams.acquire(); err != nil {
		return nil, err
	}
	defer a.streams.release()

	h := w.Header()
	h.Set("Content-Type", o.rec.ContentType())
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return nil, nil
	}
	if _, err := w.Write(nil); err != nil {
		// A writer that takes no more after a flush: a node agent's
		// unary forward, which asks again as a stream.
		return nil, nil
	}

	// The stream ends when the caller goes away or the agent shuts down
	// (a follow would hold http.Server.Shutdown, as a blocking query).
	// The handler is not registered through routed: the branches' calls,
	// running beside one another after the 200, write no route headers.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.queries.done(), cancel)()
	f := &jobFanout{a: a, s: s, o: o, ctx: ctx, out: make(chan jobChunk, jobLogQueue),
		seen: make(map[string]bool), logger: a.logger.Named("http").With("job", o.jobID)}
	f.admit(job, allocs, true)
	if o.follow {
		f.wg.Add(1)
		go f.watch(idx)
	}
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	defer func() { cancel(); <-done }() // every branch and the watch have ended
	a.writeJobLogs(w, r, rc, f, done)
	return nil, nil
}

// hasLogs reports whether an allocation has run on its node, so that its
// tasks may have logs.
func hasLogs(al *structs.Allocation) bool {
	return al.ClientStatus != structs.AllocClientStatusPending
}

// parseJobLogs reads the query of a job-wide log: the parameters of
// fs/logs (parseLogsExt, with their 400s) but a record form only (plain
// by default) and a job cursor to resume from (joblogs_cursor.go) rather
// than one position, plus task, type, follow and max_allocs.
func parseJobLogs(r *http.Request, ns, jobID string) (*jobLogsOptions, error) {
	q := r.URL.Query()
	if jobID == "" {
		return nil, structs.BadRequest("must provide a job ID")
	}
	o := &jobLogsOptions{ns: ns, jobID: jobID, task: q.Get("task"), maxAllocs: defaultJobLogAllocs}
	var err error
	if o.follow, err = queryBool(q, "follow", false); err != nil {
		return nil, err
	}
	if v := q.Get("max_allocs"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxJobLogAllocs {
			return nil, structs.BadRequest("max_allocs must be a number from 1 to %d, got %q", maxJobLogAllocs, v)
		}
		o.maxAllocs = n
	}
	// With Plain set, parseLogFormat takes no format= as the plain form:
	// the frame form is none of a job's.
	req := structs.FsLogsRequest{Follow: o.follow, Plain: true, LogType: q.Get("type"), Origin: "start", QueryOptions: queryOptions(r)}
	switch req.LogType {
	case "":
		req.LogType = "stdout"
	case "stdout", "stderr":
	default:
		return nil, structs.BadRequest("must provide log type (stdout/stderr)")
	}
	// after= or an EventSource's Last-Event-ID is a job cursor, not the
	// one position parseLogsExt reads.
	v := q.Get("after")
	if id := r.Header.Get("Last-Event-ID"); id != "" && q.Get("format") == "sse" {
		v = id
	}
	if v != "" {
		if o.resume, err = parseJobCursor(v); err != nil {
			return nil, err
		}
		r = r.Clone(r.Context())
		r.Header.Del("Last-Event-ID")
		q.Del("after")
		r.URL.RawQuery = q.Encode()
	}
	if o.rec, err = parseLogsExt(r, &req); err != nil {
		return nil, err
	}
	if _, ok := q["end_event"]; !ok {
		o.rec.endEvent = true // a merged plain stream says when an allocation leaves
	}
	// Line mode always: every frame holds whole lines, so the merge never
	// cuts one, and a task that ends says so. A follow waits for tasks
	// that have not started.
	req.LineMode, req.Plain, req.Wait = true, false, o.follow
	o.rec.lineMode = true
	o.req = req
	return o, nil
}

// checkTask refuses a task no group of the job runs, or no task where a
// group runs several (as alloc logs does).
func (o *jobLogsOptions) checkTask(job *structs.Job) error {
	var names []string
	for _, tg := range job.TaskGroups {
		if o.task == "" && len(tg.Tasks) > 1 {
			return structs.BadRequest("group %q of job %q runs more than one task (%s): please specify the task",
				tg.Name, job.ID, strings.Join(taskNamesOf(tg), ", "))
		}
		names = append(names, taskNamesOf(tg)...)
	}
	if o.task != "" && !slices.Contains(names, o.task) {
		return structs.BadRequest("task %q not found in job %q; it runs %s", o.task, job.ID, strings.Join(names, ", "))
	}
	return nil
}

func taskNamesOf(tg *structs.TaskGroup) []string {
	out := make([]string, 0, len(tg.Tasks))
	for _, t := range tg.Tasks {
		out = append(out, t.Name)
	}
	return out
}

// taskOf is the task an allocation's log is read from: the task asked,
// if its group runs it, else its group's only task. ok is false when the
// allocation has none to read (another group, or several tasks).
func (o *jobLogsOptions) taskOf(al *structs.Allocation, job *structs.Job) (string, bool) {
	var tg *structs.TaskGroup
	if al.Job != nil {
		tg = al.Job.LookupTaskGroup(al.TaskGroup)
	}
	if tg == nil && job != nil {
		tg = job.LookupTaskGroup(al.TaskGroup)
	}
	if tg == nil {
		return "", false
	}
	for _, t := range tg.Tasks {
		if o.task == t.Name || o.task == "" && len(tg.Tasks) == 1 {
			return t.Name, true
		}
	}
	return "", false
}

// jobFanout reads the allocations of one job-wide log: at most maxAllocs
// branches at once (the rest wait in pending, in the order they came),
// each one allocation's routed logs call, all writing encoded records to
// out. Its goroutines (branches and the follow's watch) are counted in
// wg and end with ctx.
type jobFanout struct {
	a      *Agent
	s      *server.Server
	o      *jobLogsOptions
	ctx    context.Context
	out    chan jobChunk
	logger hclog.Logger
	wg     sync.WaitGroup

	mu      sync.Mutex
	seen    map[string]bool // allocations read or left out, by ID
	pending []jobBranch
	running int
}

// jobBranch is one allocation's part of the stream.
type jobBranch struct {
	alloc, task string
	after       string // a resumed stream's position in the log ("": none)
}

// jobChunk is what a branch hands the writer, which encodes it with the
// branch's records (so that SSE ids carry the cursor in the stream's
// order): a frame of the allocation's log, or the branch's failure.
type jobChunk struct {
	rec *logRecords
	fr  *structs.StreamFrame // from jobFramePool; nil with err
	err string
}

// admit adds the allocations not seen yet: those that have run on their
// node (a follow leaves out, for good, the ones already finished when it
// starts: their logs are history, read without follow).
func (f *jobFanout) admit(job *structs.Job, allocs []*structs.Allocation, first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, al := range allocs {
		if f.seen[al.ID] || !hasLogs(al) {
			continue
		}
		f.seen[al.ID] = true
		after := f.o.resume.lookup(al.ID)
		if after == cursorEnd || first && f.o.follow && al.ClientTerminal() && after == "" {
			continue
		}
		if task, ok := f.o.taskOf(al, job); ok {
			f.pending = append(f.pending, jobBranch{alloc: al.ID, task: task, after: after})
		}
	}
	f.startLocked()
}

// startLocked starts waiting branches while there is room.
func (f *jobFanout) startLocked() {
	for f.running < f.o.maxAllocs && len(f.pending) > 0 && f.ctx.Err() == nil {
		b := f.pending[0]
		f.pending = f.pending[1:]
		f.running++
		f.wg.Add(1)
		go f.run(b)
	}
}

// watch admits the job's allocations as they change, from the index the
// first read returned, until ctx ends or the job is gone.
func (f *jobFanout) watch(idx uint64) {
	defer f.wg.Done()
	for {
		job, allocs, next, err := f.s.State().WatchJobAllocs(f.ctx, f.o.ns, f.o.jobID, idx)
		if err != nil || job == nil {
			if f.ctx.Err() == nil && err != nil {
				f.logger.Debug("job logs: watch ended", "error", err)
			}
			return
		}
		idx = next
		f.admit(job, allocs, false)
	}
}

// run is one branch: the allocation's log, encoded with its labels.
func (f *jobFanout) run(b jobBranch) {
	defer func() {
		f.mu.Lock()
		f.running--
		f.startLocked()
		f.mu.Unlock()
		f.wg.Done()
	}()
	rec := *f.o.rec
	rec.alloc, rec.task = b.alloc, b.task
	rec.prefix = "[" + b.alloc[:min(8, len(b.alloc))] + " " + b.task + "] "
	backoff := branchRetryMin
	for {
		err := f.read(&rec, &b)
		if err == nil || f.ctx.Err() != nil {
			return
		}
		if f.o.follow && transient(err) && f.stillRunning(b.alloc) {
			// The node's session moved or its server went away: read
			// on from where this branch got to, once the route heals.
			f.logger.Debug("job logs: allocation's stream broke; reading on", "alloc", b.alloc, "error", err)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, branchRetryMax)
			continue
		}
		f.logger.Debug("job logs: allocation's stream failed", "alloc", b.alloc, "task", b.task, "error", err)
		f.send(jobChunk{rec: &rec, err: errorText(err)})
		return
	}
}

// How long a followed branch waits before reading on after its call
// broke: from branchRetryMin, doubling, at most branchRetryMax.
const (
	branchRetryMin = 100 * time.Millisecond
	branchRetryMax = 2 * time.Second
)

// transient reports whether a branch's call failed for a reason that
// passes: no path to the node yet, a server or session gone, overload.
func transient(err error) bool {
	code := structs.StatusCode(err)
	return code >= 500 || code == http.StatusTooManyRequests || errors.Is(err, structs.ErrNoPathToNode)
}

// stillRunning reports whether the allocation may still write its log:
// it is known and has not finished on its node.
func (f *jobFanout) stillRunning(allocID string) bool {
	al, err := f.s.State().Alloc(allocID)
	return err == nil && al != nil && !al.ClientTerminal()
}

// read opens the allocation's routed logs call and sends its records,
// moving b.after past each frame sent.
func (f *jobFanout) read(rec *logRecords, b *jobBranch) error {
	if err := f.a.streams.acquire(); err != nil {
		return err
	}
	defer f.a.streams.release()
	req := f.o.req
	req.AllocID, req.Task = b.alloc, b.task
	if b.after != "" {
		// Resumed: from where the stream stood, whatever lines or since
		// asked of the first read.
		req.After, req.Tail, req.Lines, req.Since = b.after, false, 0, time.Time{}
	}
	rt, err := f.a.backend.route(f.ctx, server.Target{AllocID: b.alloc}, structs.MethodFsLogs, &req)
	if err != nil {
		return err
	}
	st, err := rt.stream(f.ctx, structs.MethodFsLogs, &req)
	if err != nil {
		return err
	}
	defer st.Close()
	defer context.AfterFunc(f.ctx, func() { st.Close() })()
	if _, err := firstFrame(st); err != nil {
		return err
	}
	ended := false
	for {
		m, err := st.RecvMsg()
		if errors.Is(err, io.EOF) {
			if f.o.follow && !ended {
				return errors.New("the allocation's stream ended before its task")
			}
			return nil
		}
		if err != nil {
			return err
		}
		if m.Raw() {
			m.Release()
			return errors.New("raw message on a line-mode log stream")
		}
		fr := getJobFrame()
		err = m.Decode(fr)
		m.Release()
		if err != nil {
			putJobFrame(fr)
			return err
		}
		ended = fr.TaskEnd != nil
		if len(fr.Data) > 0 && fr.FileEvent == "" {
			b.after = structs.LogPos{File: structs.LogFileIndex(fr.File), Offset: fr.Offset}.String()
		}
		if !f.send(jobChunk{rec: rec, fr: fr}) {
			return nil
		}
	}
}

// send hands a chunk to the writer; false once ctx ended.
func (f *jobFanout) send(c jobChunk) bool {
	select {
	case f.out <- c:
		return true
	case <-f.ctx.Done():
		putJobFrame(c.fr)
		return false
	}
}

// errorText is the message of a branch's failure, as the API shows it.
func errorText(err error) string {
	var se *structs.Error
	if errors.As(err, &se) {
		return se.Message
	}
	return err.Error()
}

// jobFramePool recycles the frames branches hand the writer.
var jobFramePool = sync.Pool{New: func() any { return new(structs.StreamFrame) }}

func getJobFrame() *structs.StreamFrame { return jobFramePool.Get().(*structs.StreamFrame) }

func putJobFrame(fr *structs.StreamFrame) {
	if fr == nil || cap(fr.Data) > 1<<20 {
		return
	}
	*fr = structs.StreamFrame{Data: fr.Data[:0], Stamps: fr.Stamps[:0]}
	jobFramePool.Put(fr)
}

// writeJobLogs writes the branches' chunks as they come, flushing when
// none is waiting, with the form's heartbeat while idle, until every
// branch (and the follow's watch) has ended or the caller has gone. In
// SSE form each line and end record carries the stream's cursor as it
// stands with that record as its id (joblogs_cursor.go).
func (a *Agent) writeJobLogs(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, f *jobFanout, done <-chan struct{}) {
	beat, every := f.o.rec.heartbeat()
	var hbc <-chan time.Time
	if beat != nil {
		hb := time.NewTicker(every)
		defer hb.Stop()
		hbc = hb.C
	}
	// Under HTTPS the TLS records of a chunk and its flush leave in one
	// socket write.
	write := func(b []byte, flush bool) error {
		return rpc.WithBatch(r.Context(), func() error {
			_, err := w.Write(b)
			a.streamed.frames.Add(uint64(len(b)))
			if err == nil && flush {
				err = rc.Flush()
			}
			return err
		})
	}
	cursor := f.o.resume.running()
	var buf []byte
	chunk := func(c jobChunk) error {
		if c.fr == nil {
			buf = c.rec.appendError(buf[:0], c.err)
		} else {
			if c.rec.format == formatSSE {
				alloc := c.rec.alloc
				c.rec.idFor = func(b []byte, pos string) []byte {
					cursor.set(alloc, pos)
					return cursor.appendTo(b)
				}
			}
			buf = c.rec.appendFrame(buf[:0], c.fr)
			putJobFrame(c.fr)
		}
		if len(buf) == 0 {
			return nil
		}
		err := write(buf, len(f.out) == 0)
		if cap(buf) > 1<<20 {
			buf = nil
		}
		return err
	}
	for {
		select {
		case c := <-f.out:
			if chunk(c) != nil {
				return // the caller went away
			}
		case <-hbc:
			if write(beat, true) != nil {
				return
			}
		case <-done:
			for { // what the branches sent before they ended
				select {
				case c := <-f.out:
					if chunk(c) != nil {
						return
					}
				default:
					return
				}
			}
		case <-f.ctx.Done():
			return
		}
	}
}
