package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
)

func jobCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"job": &group{synopsis: "Job commands", help: "Usage: tether job <subcommand> [options] [args]"},
		"status": &command{m: m, synopsis: "List the jobs (or show one job)",
			help: `
Usage: tether status [options] [job]

  Lists the jobs, or shows one job (as "tether job status").

Options:
  -verbose    Full IDs and absolute times.
  -json       Print the API's JSON.
  -t <tmpl>   Format the output with a Go template.
`,
			flags: jobStatusFlags,
			args:  predictIDs(m, "jobs"),
			run:   runJobStatus,
		},
		"job run": &command{m: m, synopsis: "Register a job from a JSON or HCL file",
			help: `
Usage: tether job run [options] <file.json|file.hcl|->

  Registers the job of the file: the API's JSON (a job, or {"Job": ...}
  as "job run -output" prints it), or HCL, which the server parses
  (PUT /v1/jobs/parse). "-" reads the file from stdin.

Options:
  -detach     Print the evaluation ID and return at once.
`,
			flags: complete.Flags{"-detach": complete.PredictNothing},
			args:  complete.PredictFiles("*"),
			run:   runJobRun,
		},
		"job status": &command{m: m, synopsis: "List jobs or show one job with its allocations",
			help: `
Usage: tether job status [options] [job]

  Lists the jobs, or shows one job (a unique ID prefix is enough) with
  its allocations.

Options:
  -verbose    Full IDs and absolute times.
  -json       Print the API's JSON.
  -t <tmpl>   Format the output with a Go template.
`,
			flags: jobStatusFlags,
			args:  predictIDs(m, "jobs"),
			run:   runJobStatus,
		},
		"job stop": &command{m: m, synopsis: "Stop a job's allocations, or purge the job",
			help: `
Usage: tether job stop [options] <job>

  Stops a job's allocations and, with -purge, removes the job.

Options:
  -purge      Remove the job from the state.
  -detach     Print the evaluation ID and return at once.
`,
			flags: complete.Flags{"-purge": complete.PredictNothing, "-detach": complete.PredictNothing},
			args:  predictIDs(m, "jobs"),
			run:   runJobStop,
		},
		"job allocs": &command{m: m, synopsis: "List the allocations of a job",
			help: `
Usage: tether job allocs [options] <job>

Options:
  -all        Allocations of earlier versions of the job too.
  -verbose    Full IDs and absolute times.
  -json       Print the API's JSON.
  -t <tmpl>   Format the output with a Go template.
`,
			flags: complete.Flags{"-all": complete.PredictNothing, "-verbose": complete.PredictNothing,
				"-json": complete.PredictNothing, "-t": complete.PredictAnything},
			args: predictIDs(m, "jobs"),
			run:  runJobAllocs,
		},
	}
}

// jobStatusFlags are the flags of "status" and "job status".
var jobStatusFlags = complete.Flags{"-verbose": complete.PredictNothing, "-json": complete.PredictNothing, "-t": complete.PredictAnything}

// resolveJob finds the job whose ID is id or, failing that, the one job
// whose ID starts with it.
func (m *meta) resolveJob(c *nomad.Client, id string) (string, bool) {
	jobs, _, err := c.Jobs().PrefixList(id)
	if err != nil {
		m.apiError("querying jobs", err)
		return "", false
	}
	for _, j := range jobs {
		if j.ID == id {
			return id, true
		}
	}
	switch len(jobs) {
	case 0:
		m.ui.Error(fmt.Sprintf("No job(s) with prefix or id %q found", id))
		return "", false
	case 1:
		return jobs[0].ID, true
	}
	m.ui.Error(fmt.Sprintf("Prefix matched multiple jobs\n\n%s", formatJobList(jobs)))
	return "", false
}

func formatJobList(jobs []*nomad.JobListStub) string {
	rows := []string{"ID|Type|Priority|Status|Submit Date"}
	for _, j := range jobs {
		rows = append(rows, fmt.Sprintf("%s|%s|%d|%s|%s", j.ID, j.Type, j.Priority, j.Status,
			formatUnixNano(j.SubmitTime)))
	}
	return formatList(rows)
}

func runJobStatus(m *meta, args []string) int {
	var verbose, jsonOut bool
	var tmpl string
	c, rest, code := m.start("job status", args, argsRule{0, 1, "This command takes at most one argument: [job]"}, func(fs *flagSetT) {
		fs.BoolVar(&verbose, "verbose", false, "")
		fs.BoolVar(&jsonOut, "json", false, "")
		fs.StringVar(&tmpl, "t", "", "")
	})
	if c == nil {
		return code
	}
	if len(rest) == 0 {
		jobs, _, err := c.Jobs().List(nil)
		if err != nil {
			m.apiError("querying jobs", err)
			return 1
		}
		if done, code := m.formatOut(jsonOut, tmpl, jobs); done {
			return code
		}
		if len(jobs) == 0 {
			m.ui.Output("No running jobs")
			return 0
		}
		m.ui.Output(formatJobList(jobs))
		return 0
	}
	id, ok := m.resolveJob(c, rest[0])
	if !ok {
		return 1
	}
	job, _, err := c.Jobs().Info(id, nil)
	if err != nil {
		m.apiError("querying job", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, tmpl, job); done {
		return code
	}
	m.ui.Output(formatKV([]string{
		"ID|" + str(job.ID),
		"Name|" + str(job.Name),
		"Submit Date|" + formatUnixNano(int64v(job.SubmitTime)),
		"Type|" + str(job.Type),
		fmt.Sprintf("Priority|%d", intv(job.Priority)),
		"Datacenters|" + strings.Join(job.Datacenters, ","),
		"Namespace|" + str(job.Namespace),
		"Node Pool|" + orNone(str(job.NodePool)),
		"Status|" + str(job.Status),
		fmt.Sprintf("Periodic|%v", job.Periodic != nil),
		fmt.Sprintf("Parameterized|%v", job.ParameterizedJob != nil),
	}))
	if sum, _, err := c.Jobs().Summary(id, nil); err == nil && sum != nil {
		rows := []string{"Task Group|Queued|Starting|Running|Failed|Complete|Lost|Unknown"}
		groups := make([]string, 0, len(sum.Summary))
		for g := range sum.Summary {
			groups = append(groups, g)
		}
		sort.Strings(groups)
		for _, g := range groups {
			s := sum.Summary[g]
			rows = append(rows, fmt.Sprintf("%s|%d|%d|%d|%d|%d|%d|%d", g, s.Queued, s.Starting, s.Running,
				s.Failed, s.Complete, s.Lost, s.Unknown))
		}
		m.ui.Output("\nSummary\n" + formatList(rows))
	}
	allocs, _, err := c.Jobs().Allocations(id, false, nil)
	if err != nil {
		m.apiError("querying job allocations", err)
		return 1
	}
	m.ui.Output("\nAllocations")
	if len(allocs) == 0 {
		m.ui.Output("No allocations placed")
		return 0
	}
	sortStubs(allocs)
	m.ui.Output(formatAllocStubs(allocs, verbose))
	return 0
}

func sortStubs(allocs []*nomad.AllocationListStub) {
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func intv(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func int64v(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func runJobAllocs(m *meta, args []string) int {
	var all, verbose, jsonOut bool
	var tmpl string
	c, rest, code := m.start("job allocs", args, oneArg("<job>"), func(fs *flagSetT) {
		fs.BoolVar(&all, "all", false, "")
		fs.BoolVar(&verbose, "verbose", false, "")
		fs.BoolVar(&jsonOut, "json", false, "")
		fs.StringVar(&tmpl, "t", "", "")
	})
	if c == nil {
		return code
	}
	id, ok := m.resolveJob(c, rest[0])
	if !ok {
		return 1
	}
	allocs, _, err := c.Jobs().Allocations(id, all, nil)
	if err != nil {
		m.apiError("querying job allocations", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, tmpl, allocs); done {
		return code
	}
	if len(allocs) == 0 {
		m.ui.Output("No allocations placed")
		return 0
	}
	sortStubs(allocs)
	m.ui.Output(formatAllocStubs(allocs, verbose))
	return 0
}

func runJobStop(m *meta, args []string) int {
	var purge, detach bool
	c, rest, code := m.start("job stop", args, oneArg("<job>"), func(fs *flagSetT) {
		fs.BoolVar(&purge, "purge", false, "")
		fs.BoolVar(&detach, "detach", false, "")
	})
	if c == nil {
		return code
	}
	id, ok := m.resolveJob(c, rest[0])
	if !ok {
		return 1
	}
	evalID, _, err := c.Jobs().Deregister(id, purge, nil)
	if err != nil {
		m.apiError("deregistering job", err)
		return 1
	}
	if detach || evalID == "" {
		m.ui.Output(evalID)
		return 0
	}
	return m.monitorEval(c, evalID)
}

func runJobRun(m *meta, args []string) int {
	fs := m.flagSet("job run")
	var detach bool
	fs.BoolVar(&detach, "detach", false, "")
	if !m.parse(fs, args) {
		return cli.RunResultHelp
	}
	if fs.NArg() != 1 {
		m.ui.Error("This command takes one argument: <file>")
		return cli.RunResultHelp
	}
	path := fs.Arg(0)
	body, err := m.readFileArg(path)
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error reading job file: %v", err))
		return 1
	}
	c, err := m.client()
	if err != nil {
		m.ui.Error(err.Error())
		return 1
	}
	job, ok := m.parseJobFile(c, path, body)
	if !ok {
		return 1
	}
	resp, _, err := c.Jobs().Register(job, nil)
	if err != nil {
		m.apiError("submitting job", err)
		return 1
	}
	if detach || resp.EvalID == "" {
		m.ui.Output("Job registration successful")
		if resp.EvalID != "" {
			m.ui.Output("Evaluation ID: " + resp.EvalID)
		}
		return 0
	}
	return m.monitorEval(c, resp.EvalID)
}

// parseJobFile decodes the API's JSON (a bare job or {"Job": ...}) or,
// for anything that is not JSON, asks the server to parse it as HCL.
func (m *meta) parseJobFile(c *nomad.Client, path string, body []byte) (*nomad.Job, bool) {
	trimmed := bytes.TrimSpace(body)
	isJSON := strings.EqualFold(filepath.Ext(path), ".json") || bytes.HasPrefix(trimmed, []byte("{"))
	if isJSON {
		var wrapped struct{ Job *nomad.Job }
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		if err := dec.Decode(&wrapped); err != nil {
			m.ui.Error(fmt.Sprintf("Error parsing job file %s: %v", path, jsonErrPos(trimmed, err)))
			return nil, false
		}
		if wrapped.Job != nil {
			return wrapped.Job, true
		}
		var job nomad.Job
		if err := json.Unmarshal(trimmed, &job); err != nil {
			m.ui.Error(fmt.Sprintf("Error parsing job file %s: %v", path, jsonErrPos(trimmed, err)))
			return nil, false
		}
		if job.ID == nil && job.Name == nil {
			m.ui.Error(fmt.Sprintf("Error parsing job file %s: no job found (want a job or {\"Job\": ...})", path))
			return nil, false
		}
		return &job, true
	}
	// Text only goes to the server's HCL parser: a binary file would come
	// back as one error per byte.
	if len(trimmed) == 0 {
		m.ui.Error(fmt.Sprintf("Error parsing job file %s: the file is empty", path))
		return nil, false
	}
	if off := binaryAt(body); off >= 0 {
		line, col := lineCol(body, int64(off))
		m.ui.Error(fmt.Sprintf("Error parsing job file %s: line %d, column %d: not JSON or HCL: binary data", path, line, col))
		return nil, false
	}
	job, err := c.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: string(body), Canonicalize: false})
	if err != nil {
		// The server names the text it parsed "input.hcl": name the file.
		var ue nomad.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == 400 && ue.HasBody() {
			msg := strings.ReplaceAll(strings.TrimSpace(ue.Body()), "input.hcl:", path+":")
			m.ui.Error("Error parsing job file " + path + ":\n" + firstLines(byPosition(msg), maxParseErrors))
			return nil, false
		}
		m.apiError("parsing job file "+path, err)
		return nil, false
	}
	return job, true
}

// jsonErrPos adds the line and column to a JSON syntax error.
func jsonErrPos(data []byte, err error) error {
	var off int64 = -1
	switch e := err.(type) {
	case *json.SyntaxError:
		off = e.Offset
	case *json.UnmarshalTypeError:
		off = e.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	line, col := lineCol(data, off)
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}

// lineCol is the line and column (from 1, in bytes) of offset off of data.
func lineCol(data []byte, off int64) (int, int) {
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// binaryAt is the offset of the first byte that is not UTF-8 text (a NUL
// or an invalid sequence), or -1.
func binaryAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == 0 || r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// diagPos is the position a parser's error line starts with:
// "file:line,col-col: ...".
var diagPos = regexp.MustCompile(`^[^\n]*?:(\d+),(\d+)`)

// byPosition orders the parser's errors by line and column (the server
// reports them in no order). A line with no position stays with the
// error before it; lines before the first error stay first.
func byPosition(msg string) string {
	type entry struct {
		line, col int
		text      string
	}
	var entries []entry
	for _, l := range strings.Split(msg, "\n") {
		m := diagPos.FindStringSubmatch(l)
		if m == nil && len(entries) > 0 {
			entries[len(entries)-1].text += "\n" + l
			continue
		}
		e := entry{text: l}
		if m != nil {
			e.line, _ = strconv.Atoi(m[1])
			e.col, _ = strconv.Atoi(m[2])
		}
		entries = append(entries, e)
	}
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		return a.line < b.line || a.line == b.line && a.col < b.col
	})
	texts := make([]string, len(entries))
	for i, e := range entries {
		texts[i] = e.text
	}
	return strings.Join(texts, "\n")
}

// maxParseErrors is how many of the parser's errors job run prints.
const maxParseErrors = 10

// firstLines is the first n lines of s, and how many more there were.
func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n... and %d more", len(lines)-n)
}
