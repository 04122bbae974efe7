package main

import (
	"context"
	"io"
	"net/url"
	"strconv"

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
                   line. Until interrupted (exit 0).
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
	if jsonOut {
		params["format"] = "ndjson"
	}
	if maxAllocs != 0 {
		params["max_allocs"] = strconv.FormatInt(maxAllocs, 10)
	}
	ctx, stop := interruptContext()
	defer stop()
	if err := m.copyJobLogs(ctx, c, id, params); err != nil && ctx.Err() == nil {
		m.apiError("reading job logs", err)
		return 1
	}
	return 0 // the end, or Ctrl-C
}

// copyJobLogs writes the job's log stream to stdout as it arrives: the
// server has tagged, stamped and merged it.
func (m *meta) copyJobLogs(ctx context.Context, c *nomad.Client, id string, params map[string]string) error {
	q := (&nomad.QueryOptions{Params: params}).WithContext(ctx)
	body, err := c.Raw().Response("/v1/job/"+url.PathEscape(id)+"/logs", q)
	if err != nil {
		return err
	}
	defer body.Close()
	// Each read (a chunk the server flushed) is written at once.
	_, err = io.Copy(m.stdout, body)
	return err
}
