package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
)

func nodeCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"node":      &group{synopsis: "Node commands", help: "Usage: tether node <subcommand> [options] [args]"},
		"node meta": &group{synopsis: "Read and write a node's dynamic metadata", help: "Usage: tether node meta <read|apply> [options]"},
		"node status": &command{m: m, synopsis: "List nodes or show one node",
			help: `
Usage: tether node status [options] [node]

  Lists the nodes, or shows one node (a unique ID prefix is enough).

Options:
  -self       Show the node of the agent the address points at.
  -stats      Show host resource usage of the node.
  -verbose    Full IDs and the node's attributes.
  -json       Print the API's JSON.
  -t <tmpl>   Format the output with a Go template.
`,
			flags: complete.Flags{"-self": complete.PredictNothing, "-stats": complete.PredictNothing,
				"-verbose": complete.PredictNothing, "-json": complete.PredictNothing, "-t": complete.PredictAnything},
			args: predictIDs(m, "nodes"),
			run:  runNodeStatus,
		},
		"node meta read": &command{m: m, synopsis: "Read a node's metadata",
			help: `
Usage: tether node meta read [-node-id ID] [-json]

  Prints the node's metadata: all, dynamic and static. Without -node-id,
  the node of the agent the address points at.
`,
			flags: complete.Flags{"-node-id": predictIDs(m, "nodes"), "-json": complete.PredictNothing},
			run:   runNodeMetaRead,
		},
		"node meta apply": &command{m: m, synopsis: "Set or unset a node's dynamic metadata",
			help: `
Usage: tether node meta apply [-node-id ID] [-unset k1,k2] key=value ...

  Sets dynamic metadata keys of a node and unsets the keys of -unset.
`,
			flags: complete.Flags{"-node-id": predictIDs(m, "nodes"), "-unset": complete.PredictAnything},
			run:   runNodeMetaApply,
		},
	}
}

// predictIDs completes node, allocation or job IDs from the API.
func predictIDs(m *meta, kind string) complete.Predictor {
	return complete.PredictFunc(func(a complete.Args) []string {
		c, err := m.client()
		if err != nil {
			return nil
		}
		var out []string
		switch kind {
		case "nodes":
			l, _, err := c.Nodes().PrefixList(sanitizeUUIDPrefix(a.Last))
			if err == nil {
				for _, n := range l {
					out = append(out, n.ID)
				}
			}
		case "allocs":
			l, _, err := c.Allocations().PrefixList(sanitizeUUIDPrefix(a.Last))
			if err == nil {
				for _, x := range l {
					out = append(out, x.ID)
				}
			}
		case "jobs":
			l, _, err := c.Jobs().PrefixList(a.Last)
			if err == nil {
				for _, j := range l {
					out = append(out, j.ID)
				}
			}
		}
		return out
	})
}

// resolveNodeID finds the ID of the one node whose ID starts with
// prefix. An ambiguous prefix lists the candidates.
func (m *meta) resolveNodeID(c *nomad.Client, prefix string) (string, bool) {
	if len(prefix) < 2 {
		m.ui.Error(errIDTooShort.Error())
		return "", false
	}
	nodes, _, err := c.Nodes().PrefixList(sanitizeUUIDPrefix(prefix))
	if err != nil {
		m.apiError("querying nodes", err)
		return "", false
	}
	for _, n := range nodes {
		if n.ID == prefix {
			return n.ID, true
		}
	}
	switch len(nodes) {
	case 0:
		m.ui.Error(fmt.Sprintf("No node(s) with prefix %q found", prefix))
		return "", false
	case 1:
		return nodes[0].ID, true
	}
	m.ui.Error(fmt.Sprintf("Prefix matched multiple nodes\n\n%s", formatNodeList(nodes, true)))
	return "", false
}

// resolveNode finds the one node whose ID starts with prefix and reads it.
func (m *meta) resolveNode(c *nomad.Client, prefix string) (*nomad.Node, bool) {
	id, ok := m.resolveNodeID(c, prefix)
	if !ok {
		return nil, false
	}
	node, _, err := c.Nodes().Info(id, nil)
	if err != nil {
		m.apiError("querying node info", err)
		return nil, false
	}
	return node, true
}

// formatNodeList is the table of nodes; verbose adds full IDs, the
// nodes' addresses and versions.
func formatNodeList(nodes []*nomad.NodeListStub, verbose bool) string {
	head := "ID|Node Pool|DC|Name|Class"
	if verbose {
		head += "|Address|Version"
	}
	rows := []string{head + "|Drain|Eligibility|Status"}
	for _, n := range nodes {
		row := fmt.Sprintf("%s|%s|%s|%s|%s", shortID(n.ID, verbose), orNone(n.NodePool), n.Datacenter, n.Name, orNone(n.NodeClass))
		if verbose {
			row += "|" + orNone(n.Address) + "|" + orNone(n.Version)
		}
		rows = append(rows, fmt.Sprintf("%s|%v|%s|%s", row, n.Drain, n.SchedulingEligibility, n.Status))
	}
	return formatList(rows)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// selfNodeID asks the agent the address points at for its node ID.
func (m *meta) selfNodeID(c *nomad.Client) (string, bool) {
	self, err := c.Agent().Self()
	if err != nil {
		m.apiError("querying agent info", err)
		return "", false
	}
	id := self.Stats["client"]["node_id"]
	if id == "" {
		m.ui.Error("Not running in client mode")
		return "", false
	}
	return id, true
}

func runNodeStatus(m *meta, args []string) int {
	fs := m.flagSet("node status")
	var self, stats, verbose, jsonOut bool
	var tmpl string
	fs.BoolVar(&self, "self", false, "")
	fs.BoolVar(&stats, "stats", false, "")
	fs.BoolVar(&verbose, "verbose", false, "")
	fs.BoolVar(&jsonOut, "json", false, "")
	fs.StringVar(&tmpl, "t", "", "")
	if !m.parse(fs, args) {
		return cli.RunResultHelp
	}
	args = fs.Args()
	if len(args) > 1 || (self && len(args) == 1) {
		m.ui.Error("This command takes either one argument or -self")
		return cli.RunResultHelp
	}
	c, err := m.client()
	if err != nil {
		m.ui.Error(err.Error())
		return 1
	}
	if len(args) == 0 && !self {
		nodes, _, err := c.Nodes().List(nil)
		if err != nil {
			m.apiError("querying node status", err)
			return 1
		}
		if done, code := m.formatOut(jsonOut, tmpl, nodes); done {
			return code
		}
		if len(nodes) == 0 {
			return 0
		}
		m.ui.Output(formatNodeList(nodes, verbose))
		return 0
	}
	var node *nomad.Node
	if self {
		id, ok := m.selfNodeID(c)
		if !ok {
			return 1
		}
		n, _, err := c.Nodes().Info(id, nil)
		if err != nil {
			m.apiError("querying node info", err)
			return 1
		}
		node = n
	} else {
		n, ok := m.resolveNode(c, args[0])
		if !ok {
			return 1
		}
		node = n
	}
	if done, code := m.formatOut(jsonOut, tmpl, node); done {
		return code
	}
	return m.printNode(c, node, stats, verbose)
}

func (m *meta) printNode(c *nomad.Client, node *nomad.Node, stats, verbose bool) int {
	now := time.Now()
	rows := []string{
		"ID|" + node.ID,
		"Name|" + node.Name,
		"Node Pool|" + orNone(node.NodePool),
		"Class|" + orNone(node.NodeClass),
		"DC|" + node.Datacenter,
		fmt.Sprintf("Drain|%v", node.Drain),
		"Eligibility|" + node.SchedulingEligibility,
		"Status|" + node.Status,
		"CSI Controllers|<none>",
		"CSI Drivers|<none>",
	}
	var hostStats *nomad.HostStats
	if hs, err := c.Nodes().Stats(node.ID, nil); err == nil {
		hostStats = hs
		rows = append(rows, "Uptime|"+(time.Duration(hs.Uptime)*time.Second).String())
	}
	var drivers []string
	for name, d := range node.Drivers {
		if d.Detected && d.Healthy {
			drivers = append(drivers, name)
		}
	}
	sort.Strings(drivers)
	if !verbose {
		rows = append(rows, "Host Volumes|<none>", "Host Networks|<none>", "CSI Volumes|<none>",
			"Driver Status|"+orNone(strings.Join(drivers, ",")))
	}
	m.ui.Output(formatKV(rows))

	if verbose {
		names := make([]string, 0, len(node.Drivers))
		for n := range node.Drivers {
			names = append(names, n)
		}
		sort.Strings(names)
		dr := []string{"Driver|Detected|Healthy|Message|Time"}
		for _, n := range names {
			d := node.Drivers[n]
			dr = append(dr, fmt.Sprintf("%s|%v|%v|%s|%s", n, d.Detected, d.Healthy, orNone(d.HealthDescription), formatTime(d.UpdateTime)))
		}
		m.ui.Output("\nDrivers\n" + formatList(dr))
	}

	ev := []string{"Time|Subsystem|Message"}
	if verbose {
		ev[0] += "|Details"
	}
	for i := len(node.Events) - 1; i >= 0; i-- {
		e := node.Events[i]
		row := fmt.Sprintf("%s|%s|%s", formatTime(e.Timestamp), e.Subsystem, e.Message)
		if verbose {
			row += "|" + orNone(formatDetails(e.Details))
		}
		ev = append(ev, row)
	}
	m.ui.Output("\nNode Events\n" + formatList(ev))

	allocs, _, err := c.Nodes().Allocations(node.ID, nil)
	if err != nil {
		m.apiError("querying node allocations", err)
		return 1
	}
	m.printNodeResources(c, node, allocs, hostStats, stats)
	m.ui.Output("\nAllocations")
	ar := []string{"ID|Node ID|Task Group|Version|Desired|Status|Created|Modified"}
	if verbose {
		ar[0] = "ID|Eval ID|Node ID|Task Group|Version|Desired|Status|Created|Modified"
	}
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
	for _, a := range allocs {
		if verbose {
			ar = append(ar, fmt.Sprintf("%s|%s|%s|%s|%d|%s|%s|%s|%s", a.ID, a.EvalID, a.NodeID, a.TaskGroup,
				version(a.Job), a.DesiredStatus, a.ClientStatus, formatUnixNano(a.CreateTime), formatUnixNano(a.ModifyTime)))
		} else {
			ar = append(ar, fmt.Sprintf("%s|%s|%s|%d|%s|%s|%s|%s", shortID(a.ID, false), shortID(a.NodeID, false), a.TaskGroup,
				version(a.Job), a.DesiredStatus, a.ClientStatus,
				prettyTimeDiff(time.Unix(0, a.CreateTime), now), prettyTimeDiff(time.Unix(0, a.ModifyTime), now)))
		}
	}
	if len(ar) == 1 {
		m.ui.Output("No allocations placed")
	} else {
		m.ui.Output(formatList(ar))
	}
	if verbose {
		m.ui.Output("\nAttributes\n" + formatMap(node.Attributes))
		if len(node.Meta) > 0 {
			m.ui.Output("\nMeta\n" + formatMap(node.Meta))
		}
	}
	return 0
}

func version(j *nomad.Job) uint64 {
	if j == nil || j.Version == nil {
		return 0
	}
	return *j.Version
}

func formatDetails(d map[string]string) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+d[k])
	}
	return strings.Join(parts, ", ")
}

// printNodeResources prints what the node's allocations were given, what
// they use and what the host uses; with stats, the host's CPU, memory and
// disk statistics.
func (m *meta) printNodeResources(c *nomad.Client, node *nomad.Node, allocs []*nomad.Allocation, hs *nomad.HostStats, stats bool) {
	var totalCPU, totalMem, totalDisk int64
	if r := node.NodeResources; r != nil {
		totalCPU = r.Cpu.CpuShares
		totalMem = r.Memory.MemoryMB
		totalDisk = r.Disk.DiskMB
	}
	var cpu, mem, disk int64
	var running []*nomad.Allocation
	for _, a := range allocs {
		if a.ClientTerminalStatus() || a.ServerTerminalStatus() {
			continue
		}
		if a.ClientStatus == "running" {
			running = append(running, a)
		}
		if ar := a.AllocatedResources; ar != nil {
			for _, t := range ar.Tasks {
				cpu += t.Cpu.CpuShares
				mem += t.Memory.MemoryMB
			}
			disk += ar.Shared.DiskMB
		}
	}
	mb := func(v int64) string { return humanBytes(uint64(max(v, 0)) << 20) }
	m.ui.Output("\nAllocated Resources\n" + formatList([]string{
		"CPU|Memory|Disk",
		fmt.Sprintf("%d/%d MHz|%s/%s|%s/%s", cpu, totalCPU, mb(mem), mb(totalMem), mb(disk), mb(totalDisk)),
	}))
	if used, ok := allocUsage(c, running); ok {
		m.ui.Output("\nAllocation Resource Utilization\n" + formatList([]string{
			"CPU|Memory",
			fmt.Sprintf("%d/%d MHz|%s/%s", int64(used.cpu), totalCPU, humanBytes(used.rss), mb(totalMem)),
		}))
	}
	if hs == nil {
		return
	}
	var diskUsed, diskSize uint64
	for _, d := range hs.DiskStats {
		diskUsed += d.Used
		diskSize += d.Size
	}
	var memUsed, memTotal uint64
	if hs.Memory != nil {
		memUsed, memTotal = hs.Memory.Used, hs.Memory.Total
	}
	m.ui.Output("\nHost Resource Utilization\n" + formatList([]string{
		"CPU|Memory|Disk",
		fmt.Sprintf("%d/%d MHz|%s/%s|%s/%s", int64(hs.CPUTicksConsumed), totalCPU, humanBytes(memUsed), humanBytes(memTotal),
			humanBytes(diskUsed), humanBytes(diskSize)),
	}))
	if stats {
		m.printHostStats(hs)
	}
}

// usage is what allocations use: CPU in MHz and resident memory.
type usage struct {
	cpu float64
	rss uint64
}

// allocUsage adds up what the running allocations use, as their nodes
// report it; it reports false if one of them could not be asked.
func allocUsage(c *nomad.Client, running []*nomad.Allocation) (usage, bool) {
	var u usage
	for _, a := range running {
		st, err := c.Allocations().Stats(a, nil)
		if err != nil {
			return usage{}, false
		}
		if r := st.ResourceUsage; r != nil {
			if r.CpuStats != nil {
				u.cpu += r.CpuStats.TotalTicks
			}
			if r.MemoryStats != nil {
				u.rss += r.MemoryStats.RSS
			}
		}
	}
	return u, true
}

// printHostStats prints the host's statistics as Nomad's -stats does: a
// key = value block per CPU, one for memory and one per disk.
func (m *meta) printHostStats(hs *nomad.HostStats) {
	blocks := make([]string, 0, len(hs.CPU))
	for _, c := range hs.CPU {
		blocks = append(blocks, formatKV([]string{
			"CPU|" + c.CPU, "User|" + percent(c.User), "System|" + percent(c.System), "Idle|" + percent(c.Idle),
		}))
	}
	m.ui.Output("\nCPU Stats\n" + strings.Join(blocks, "\n\n"))
	if hs.Memory != nil {
		m.ui.Output("\nMemory Stats\n" + formatKV([]string{
			"Total|" + humanBytes(hs.Memory.Total), "Available|" + humanBytes(hs.Memory.Available),
			"Used|" + humanBytes(hs.Memory.Used), "Free|" + humanBytes(hs.Memory.Free),
		}))
	}
	blocks = blocks[:0]
	for _, d := range hs.DiskStats {
		blocks = append(blocks, formatKV([]string{
			"Device|" + d.Device, "MountPoint|" + d.Mountpoint, "Size|" + humanBytes(d.Size),
			"Used|" + humanBytes(d.Used), "Available|" + humanBytes(d.Available),
			"Used Percent|" + percent(d.UsedPercent), "Inodes Percent|" + percent(d.InodesUsedPercent),
		}))
	}
	m.ui.Output("\nDisk Stats\n" + strings.Join(blocks, "\n\n"))
}

// percent is a percentage with at most two decimals and no trailing
// zeros: "1.5%", "12%".
func percent(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + "%"
}

func runNodeMetaRead(m *meta, args []string) int {
	var nodeID string
	var jsonOut bool
	c, _, code := m.start("node meta read", args, noArgs, func(fs *flagSetT) {
		fs.StringVar(&nodeID, "node-id", "", "")
		fs.BoolVar(&jsonOut, "json", false, "")
	})
	if c == nil {
		return code
	}
	if nodeID != "" {
		id, ok := m.resolveNodeID(c, nodeID)
		if !ok {
			return 1
		}
		nodeID = id
	}
	meta, err := c.Nodes().Meta().Read(nodeID, nil)
	if err != nil {
		m.apiError("reading dynamic node metadata", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, "", meta); done {
		return code
	}
	dyn := map[string]string{}
	for k, v := range meta.Dynamic {
		if v != nil {
			dyn[k] = *v
		}
	}
	m.ui.Output("All Meta\n" + formatMap(meta.Meta))
	m.ui.Output("\nDynamic Meta\n" + formatMap(dyn))
	m.ui.Output("\nStatic Meta\n" + formatMap(meta.Static))
	return 0
}

func runNodeMetaApply(m *meta, args []string) int {
	fs := m.flagSet("node meta apply")
	var nodeID, unset string
	fs.StringVar(&nodeID, "node-id", "", "")
	fs.StringVar(&unset, "unset", "", "")
	if !m.parse(fs, args) {
		return cli.RunResultHelp
	}
	if fs.NArg() == 0 && unset == "" {
		m.ui.Error("Must specify key=value pairs or -unset")
		return cli.RunResultHelp
	}
	updates := map[string]*string{}
	for _, kv := range fs.Args() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			m.ui.Error(fmt.Sprintf("Error parsing %q: must be key=value", kv))
			return cli.RunResultHelp
		}
		updates[k] = &v
	}
	if unset != "" {
		for _, k := range strings.Split(unset, ",") {
			if k = strings.TrimSpace(k); k != "" {
				updates[k] = nil
			}
		}
	}
	c, err := m.client()
	if err != nil {
		m.ui.Error(err.Error())
		return 1
	}
	if nodeID != "" {
		id, ok := m.resolveNodeID(c, nodeID)
		if !ok {
			return 1
		}
		nodeID = id
	}
	if _, err := c.Nodes().Meta().Apply(&nomad.NodeMetaApplyRequest{NodeID: nodeID, Meta: updates}, nil); err != nil {
		m.apiError("applying dynamic node metadata", err)
		return 1
	}
	return 0
}
