package main

import (
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
	"github.com/ryanuber/columnize"
)

func allocCommands(m *meta) map[string]cli.Command {
	cmds := map[string]cli.Command{
		"alloc": &group{synopsis: "Allocation commands", help: "Usage: tether alloc <subcommand> [options] [args]"},
		"alloc status": &command{m: m, synopsis: "Show an allocation, its tasks and their events",
			help: `
Usage: tether alloc status [options] <allocation>

  Shows an allocation (a unique ID prefix is enough): its placement, its
  tasks' resources and events.

Options:
  -stats      Show the tasks' resource usage.
  -verbose    Full IDs and absolute times.
  -json       Print the API's JSON.
  -t <tmpl>   Format the output with a Go template.
`,
			flags: complete.Flags{"-stats": complete.PredictNothing, "-verbose": complete.PredictNothing,
				"-json": complete.PredictNothing, "-t": complete.PredictAnything},
			args: predictIDs(m, "allocs"),
			run:  runAllocStatus,
		},
		"alloc stop": &command{m: m, synopsis: "Stop an allocation and let the scheduler replace it",
			help: `
Usage: tether alloc stop [options] <allocation>

  Stops an allocation; the scheduler replaces it.

Options:
  -detach     Return the evaluation ID at once.
`,
			flags: complete.Flags{"-detach": complete.PredictNothing},
			args:  predictIDs(m, "allocs"),
			run:   runAllocStop,
		},
	}
	for k, v := range allocStreamCommands(m) {
		cmds[k] = v
	}
	return cmds
}

// resolveAlloc finds the one allocation whose ID starts with prefix.
func (m *meta) resolveAlloc(c *nomad.Client, prefix string) (*nomad.Allocation, bool) {
	if len(prefix) < 2 {
		m.ui.Error(errIDTooShort.Error())
		return nil, false
	}
	allocs, _, err := c.Allocations().PrefixList(sanitizeUUIDPrefix(prefix))
	if err != nil {
		m.apiError("querying allocations", err)
		return nil, false
	}
	switch {
	case len(allocs) == 0:
		m.ui.Error(fmt.Sprintf("No allocation(s) with prefix or id %q found", prefix))
		return nil, false
	case len(allocs) > 1:
		exact := false
		for _, a := range allocs {
			if a.ID == prefix {
				allocs, exact = []*nomad.AllocationListStub{a}, true
				break
			}
		}
		if !exact {
			m.ui.Error(fmt.Sprintf("Prefix matched multiple allocations\n\n%s", formatAllocStubs(allocs, true)))
			return nil, false
		}
	}
	a, _, err := c.Allocations().Info(allocs[0].ID, nil)
	if err != nil {
		m.apiError("querying allocation", err)
		return nil, false
	}
	return a, true
}

func formatAllocStubs(allocs []*nomad.AllocationListStub, verbose bool) string {
	now := time.Now()
	rows := []string{"ID|Node ID|Task Group|Version|Desired|Status|Created|Modified"}
	if verbose {
		rows[0] = "ID|Eval ID|Node ID|Node Name|Task Group|Version|Desired|Status|Created|Modified"
	}
	for _, a := range allocs {
		if verbose {
			rows = append(rows, fmt.Sprintf("%s|%s|%s|%s|%s|%d|%s|%s|%s|%s", a.ID, a.EvalID, a.NodeID, a.NodeName,
				a.TaskGroup, a.JobVersion, a.DesiredStatus, a.ClientStatus, formatUnixNano(a.CreateTime), formatUnixNano(a.ModifyTime)))
			continue
		}
		rows = append(rows, fmt.Sprintf("%s|%s|%s|%d|%s|%s|%s|%s", shortID(a.ID, false), shortID(a.NodeID, false),
			a.TaskGroup, a.JobVersion, a.DesiredStatus, a.ClientStatus,
			prettyTimeDiff(time.Unix(0, a.CreateTime), now), prettyTimeDiff(time.Unix(0, a.ModifyTime), now)))
	}
	return formatList(rows)
}

func runAllocStatus(m *meta, args []string) int {
	var stats, verbose, jsonOut bool
	var tmpl string
	c, rest, code := m.start("alloc status", args, oneArg("<allocation>"), func(fs *flagSetT) {
		fs.BoolVar(&stats, "stats", false, "")
		fs.BoolVar(&verbose, "verbose", false, "")
		fs.BoolVar(&jsonOut, "json", false, "")
		fs.StringVar(&tmpl, "t", "", "")
	})
	if c == nil {
		return code
	}
	a, ok := m.resolveAlloc(c, rest[0])
	if !ok {
		return 1
	}
	if done, code := m.formatOut(jsonOut, tmpl, a); done {
		return code
	}
	now := time.Now()
	created := prettyTimeDiff(time.Unix(0, a.CreateTime), now)
	modified := prettyTimeDiff(time.Unix(0, a.ModifyTime), now)
	if verbose {
		created, modified = formatUnixNano(a.CreateTime), formatUnixNano(a.ModifyTime)
	}
	basic := []string{
		"ID|" + a.ID,
		"Eval ID|" + shortID(a.EvalID, verbose),
		"Name|" + a.Name,
		"Node ID|" + shortID(a.NodeID, verbose),
		"Node Name|" + a.NodeName,
		"Job ID|" + a.JobID,
		fmt.Sprintf("Job Version|%d", version(a.Job)),
		"Client Status|" + a.ClientStatus,
		"Client Description|" + orNone(a.ClientDescription),
		"Desired Status|" + a.DesiredStatus,
		"Desired Description|" + orNone(a.DesiredDescription),
		"Created|" + created,
		"Modified|" + modified,
	}
	if a.DeploymentID != "" {
		basic = append(basic, "Deployment ID|"+shortID(a.DeploymentID, verbose))
	}
	if verbose && a.Metrics != nil {
		// How the scheduler placed it, when the server reports it.
		basic = append(basic,
			fmt.Sprintf("Evaluated Nodes|%d", a.Metrics.NodesEvaluated),
			fmt.Sprintf("Filtered Nodes|%d", a.Metrics.NodesFiltered),
			fmt.Sprintf("Exhausted Nodes|%d", a.Metrics.NodesExhausted),
			"Allocation Time|"+a.Metrics.AllocationTime.String(),
			fmt.Sprintf("Failures|%d", a.Metrics.CoalescedFailures))
	}
	m.ui.Output(formatKV(basic))

	var usage *nomad.AllocResourceUsage
	if stats || a.ClientStatus == "running" {
		if u, err := c.Allocations().Stats(a, nil); err == nil {
			usage = u
		} else if stats {
			m.apiError("querying allocation stats", err)
		}
	}
	names := make([]string, 0, len(a.TaskStates))
	for n := range a.TaskStates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		st := a.TaskStates[name]
		m.ui.Output(fmt.Sprintf("\nTask %q is %q", name, st.State))
		m.printTaskResources(a, name, usage, stats)
		restarts := fmt.Sprintf("%d", st.Restarts)
		last := "N/A"
		if !st.LastRestart.IsZero() {
			last = formatTime(st.LastRestart)
		}
		m.ui.Output("\nTask Events:\n" + formatKV([]string{
			"Started At|" + formatTime(st.StartedAt),
			"Finished At|" + formatTime(st.FinishedAt),
			"Total Restarts|" + restarts,
			"Last Restart|" + last,
		}))
		ev := []string{"Time|Type|Description"}
		for i := len(st.Events) - 1; i >= 0; i-- {
			e := st.Events[i]
			ev = append(ev, fmt.Sprintf("%s|%s|%s", formatUnixNano(e.Time), e.Type, orNone(e.DisplayMessage)))
		}
		m.ui.Output("\nRecent Events:\n" + formatList(ev))
	}
	return 0
}

func (m *meta) printTaskResources(a *nomad.Allocation, task string, usage *nomad.AllocResourceUsage, stats bool) {
	var cpuMax, memMax int64
	if a.AllocatedResources != nil {
		if tr := a.AllocatedResources.Tasks[task]; tr != nil {
			cpuMax, memMax = tr.Cpu.CpuShares, tr.Memory.MemoryMB
		}
	}
	var diskMB int64
	if a.AllocatedResources != nil {
		diskMB = a.AllocatedResources.Shared.DiskMB
	}
	var cpu float64
	var rss, swap uint64
	var cs *nomad.CpuStats
	if usage != nil {
		if tu := usage.Tasks[task]; tu != nil && tu.ResourceUsage != nil {
			if tu.ResourceUsage.CpuStats != nil {
				cs = tu.ResourceUsage.CpuStats
				cpu = cs.TotalTicks
			}
			if ms := tu.ResourceUsage.MemoryStats; ms != nil {
				rss, swap = ms.RSS, ms.Swap
			}
		}
	}
	m.ui.Output("Task Resources:\n" + columnize.SimpleFormat([]string{
		"CPU|Memory|Disk|Addresses",
		fmt.Sprintf("%d/%d MHz|%s/%s|%s| ", int64(cpu), cpuMax, humanBytes(rss), humanBytes(uint64(memMax)<<20),
			humanBytes(uint64(diskMB)<<20)),
	}))
	if stats {
		m.ui.Output("\nMemory Stats\n" + formatList([]string{"RSS|Swap", humanBytes(rss) + "|" + humanBytes(swap)}))
		var p, sys, user float64
		if cs != nil {
			p, sys, user = cs.Percent, cs.SystemMode, cs.UserMode
		}
		m.ui.Output("\nCPU Stats\n" + formatList([]string{"Percent|System Mode|User Mode",
			fmt.Sprintf("%.2f%%|%.2f%%|%.2f%%", p, sys, user)}))
	}
}

func runAllocStop(m *meta, args []string) int {
	var detach bool
	c, rest, code := m.start("alloc stop", args, oneArg("<allocation>"), func(fs *flagSetT) {
		fs.BoolVar(&detach, "detach", false, "")
	})
	if c == nil {
		return code
	}
	a, ok := m.resolveAlloc(c, rest[0])
	if !ok {
		return 1
	}
	resp, err := c.Allocations().Stop(a, nil)
	if err != nil {
		m.apiError("stopping allocation", err)
		return 1
	}
	if detach || resp.EvalID == "" {
		m.ui.Output(resp.EvalID)
		return 0
	}
	return m.monitorEval(c, resp.EvalID)
}

// monitorEval waits for an evaluation to finish and prints its outcome.
func (m *meta) monitorEval(c *nomad.Client, evalID string) int {
	m.ui.Output(fmt.Sprintf("==> Monitoring evaluation %q", shortID(evalID, false)))
	var index uint64
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		ev, qm, err := c.Evaluations().Info(evalID, &nomad.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second})
		if err != nil {
			m.apiError("reading evaluation", err)
			return 1
		}
		index = qm.LastIndex
		switch ev.Status {
		case "complete":
			allocs, _, err := c.Evaluations().Allocations(evalID, nil)
			if err == nil {
				for _, a := range allocs {
					m.ui.Output(fmt.Sprintf("    Allocation %q created: node %q, group %q", shortID(a.ID, false), shortID(a.NodeID, false), a.TaskGroup))
				}
			}
			m.ui.Output(fmt.Sprintf("    Evaluation status changed: %q\n==> Evaluation %q finished with status %q", ev.Status, shortID(evalID, false), ev.Status))
			return 0
		case "failed", "canceled":
			m.ui.Output(fmt.Sprintf("==> Evaluation %q finished with status %q", shortID(evalID, false), ev.Status))
			if ev.StatusDescription != "" {
				m.ui.Output("    " + ev.StatusDescription)
			}
			return 2
		}
		if qm.LastIndex == 0 {
			time.Sleep(200 * time.Millisecond) // a server without blocking queries: poll
		}
	}
	m.ui.Error(fmt.Sprintf("Evaluation %q did not finish in time", evalID))
	return 1
}
