package client

import (
	"net"
	"sync/atomic"

	metrics "github.com/hashicorp/go-metrics"

	"tether/structs"
)

// nodeCounters count the node's odd paths, read by Stats.
type nodeCounters struct {
	logRotations atomic.Uint64 // task log files rotated
	pathsRefused atomic.Uint64 // fs paths refused: escapes of the alloc dir, malformed paths
}

// Stats returns the node's counters for the agent's metrics: totals since
// start, except the levels "session_connected" (1 while the node holds a
// registered session) and "allocations" (runners on the node).
func (c *Client) Stats() map[string]uint64 {
	connected := uint64(0)
	if c.Connected() {
		connected = 1
	}
	return map[string]uint64{
		"node_log_rotations":       c.counters.logRotations.Load(),
		"node_paths_refused":       c.counters.pathsRefused.Load(),
		"node_acl_stale_used":      c.acl.staleUsed.Load(),
		"node_acl_cache_evictions": c.acl.evictions.Load(),
		"node_kill_escalations":    rawExecCounters.killEscalations.Load(),
		"node_output_cut_off":      rawExecCounters.outputCutOff.Load(),
		"node_output_write_errors": rawExecCounters.outputWriteErrs.Load() + mockCounters.outputWriteErrs.Load(),
		"node_wait_failures":       rawExecCounters.waitFailures.Load(),
		"session_connected":        connected,
	}
}

// MetricSample is one value of the node's host or allocation metrics, in
// Nomad's names (without the "nomad" prefix) and labels.
type MetricSample struct {
	// Name is the key, e.g. {"client", "host", "cpu", "user"}.
	Name []string

	// Labels are the sample's labels, never shared with another sample
	// (cap == len, so a caller may append).
	Labels []metrics.Label

	// Value is a gauge's value; for a counter (Counter set) the increase
	// since the last sample of the series.
	Value float64

	// Counter marks a counter.
	Counter bool
}

// nodeStatusInitializing is a node's status before it first registers.
const nodeStatusInitializing = "initializing"

// MetricSamples returns the node's metrics now: with node, the host's
// (nomad.client.host.*, uptime) and the allocated and unallocated
// resources; with allocs, every running task's CPU and memory
// (nomad.client.allocs.*). Labels carry the node's current status only.
// A counter's Value is its increase: one per sample for the _count
// series beside total_ticks, the task's starts for allocs.running since
// prev (the totals of the previous call, keyed by task; updated).
func (c *Client) MetricSamples(node, allocs bool, prevStarts map[string]uint64) []MetricSample {
	var out []MetricSample
	if node {
		out = c.hostSamples(out)
	}
	if allocs {
		out = c.allocSamples(out, prevStarts)
	}
	return out
}

func (c *Client) nodeLabels(extra ...metrics.Label) []metrics.Label {
	status := structs.NodeStatusReady
	select {
	case <-c.conn.registered:
	default:
		status = nodeStatusInitializing
	}
	class := c.cfg.NodeClass
	if class == "" {
		class = "none"
	}
	pool := c.cfg.NodePool
	if pool == "" {
		pool = "default"
	}
	l := make([]metrics.Label, 0, 6+len(extra))
	l = append(l, extra...)
	l = append(l,
		metrics.Label{Name: "node_id", Value: c.id.NodeID},
		metrics.Label{Name: "datacenter", Value: c.cfg.Datacenter},
		metrics.Label{Name: "node_class", Value: class},
		metrics.Label{Name: "node_pool", Value: pool},
		metrics.Label{Name: "node_status", Value: status},
		metrics.Label{Name: "node_scheduling_eligibility", Value: structs.NodeSchedulingEligible},
	)
	return l
}

func gauge(out []MetricSample, labels []metrics.Label, v float64, name ...string) []MetricSample {
	return append(out, MetricSample{Name: name, Labels: labels[:len(labels):len(labels)], Value: v})
}

func (c *Client) hostSamples(out []MetricSample) []MetricSample {
	hs := c.stats.latest.Load()
	if hs == nil {
		hs = c.stats.Latest()
	}
	base := c.nodeLabels()
	if m := hs.Memory; m != nil {
		out = gauge(out, base, float64(m.Total), "client", "host", "memory", "total")
		out = gauge(out, base, float64(m.Available), "client", "host", "memory", "available")
		out = gauge(out, base, float64(m.Used), "client", "host", "memory", "used")
		out = gauge(out, base, float64(m.Free), "client", "host", "memory", "free")
	}
	out = gauge(out, base, float64(hs.Uptime), "client", "uptime")
	for _, cpu := range hs.CPU {
		l := c.nodeLabels(metrics.Label{Name: "cpu", Value: cpu.CPU})
		out = gauge(out, l, cpu.TotalPercent, "client", "host", "cpu", "total")
		out = gauge(out, l, cpu.User, "client", "host", "cpu", "user")
		out = gauge(out, l, cpu.System, "client", "host", "cpu", "system")
		out = gauge(out, l, cpu.Idle, "client", "host", "cpu", "idle")
		out = gauge(out, l, cpu.TotalPercent, "client", "host", "cpu", "total_percent")
		out = gauge(out, l, cpu.TotalTicks, "client", "host", "cpu", "total_ticks")
		out = append(out, MetricSample{Name: []string{"client", "host", "cpu", "total_ticks", "count"},
			Labels: slicesClip(l), Value: 1, Counter: true})
	}
	for _, d := range hs.DiskStats {
		l := c.nodeLabels(metrics.Label{Name: "disk", Value: d.Device})
		out = gauge(out, l, float64(d.Size), "client", "host", "disk", "size")
		out = gauge(out, l, float64(d.Used), "client", "host", "disk", "used")
		out = gauge(out, l, float64(d.Available), "client", "host", "disk", "available")
		out = gauge(out, l, d.UsedPercent, "client", "host", "disk", "used_percent")
		out = gauge(out, l, d.InodesUsedPercent, "client", "host", "disk", "inodes_percent")
	}

	// Allocated: what the node's non-terminal allocations reserve.
	var cpu, memMB, diskMB int64
	for _, ar := range c.allocs.all() {
		a := ar.alloc()
		if a == nil || a.ClientTerminal() || a.TerminalStatus() {
			continue
		}
		if r := a.Resources; r != nil {
			cpu += int64(r.CPU)
			memMB += int64(r.MemoryMB)
			diskMB += int64(r.DiskMB)
		}
	}
	out = gauge(out, base, float64(cpu), "client", "allocated", "cpu")
	out = gauge(out, base, float64(memMB), "client", "allocated", "memory")
	out = gauge(out, base, float64(memMB), "client", "allocated", "max_memory")
	out = gauge(out, base, float64(diskMB), "client", "allocated", "disk")
	if nr := c.fp.NodeResources; nr != nil {
		out = gauge(out, base, float64(max(nr.Cpu.CpuShares-cpu, 0)), "client", "unallocated", "cpu")
		out = gauge(out, base, float64(max(nr.Memory.MemoryMB-memMB, 0)), "client", "unallocated", "memory")
		out = gauge(out, base, float64(max(nr.Disk.DiskMB-diskMB, 0)), "client", "unallocated", "disk")
	}
	for _, n := range c.networks() {
		// Tether reserves no bandwidth: all of it is unallocated.
		out = gauge(out, c.nodeLabels(metrics.Label{Name: "device", Value: n.device}), float64(n.mbits),
			"client", "unallocated", "network")
	}
	return out
}

func (c *Client) allocSamples(out []MetricSample, prevStarts map[string]uint64) []MetricSample {
	seen := make(map[string]bool)
	for _, ar := range c.allocs.all() {
		a := ar.alloc()
		if a == nil {
			continue
		}
		for name, tr := range ar.tasks {
			key := a.ID + "/" + name
			starts := tr.starts.Load()
			if prevStarts != nil {
				seen[key] = true
				d := starts - prevStarts[key]
				prevStarts[key] = starts
				out = append(out, MetricSample{Name: []string{"client", "allocs", "running"},
					Labels: c.taskLabels(a, name), Value: float64(d), Counter: true})
			}
			if tr.snapshot().State != structs.TaskStateRunning {
				continue
			}
			u := tr.lastStats()
			if u == nil || u.ResourceUsage == nil {
				continue
			}
			l := c.taskLabels(a, name)
			if ms := u.ResourceUsage.MemoryStats; ms != nil {
				out = gauge(out, l, float64(ms.RSS), "client", "allocs", "memory", "rss")
				out = gauge(out, l, float64(ms.Swap), "client", "allocs", "memory", "swap")
				out = gauge(out, l, float64(ms.Usage), "client", "allocs", "memory", "usage")
				out = gauge(out, l, float64(ms.Cache), "client", "allocs", "memory", "cache")
				out = gauge(out, l, float64(ms.MaxUsage), "client", "allocs", "memory", "max_usage")
				out = gauge(out, l, float64(ms.KernelUsage), "client", "allocs", "memory", "kernel_usage")
				out = gauge(out, l, float64(ms.KernelMaxUsage), "client", "allocs", "memory", "kernel_max_usage")
			}
			if cs := u.ResourceUsage.CpuStats; cs != nil {
				out = gauge(out, l, cs.Percent, "client", "allocs", "cpu", "total_percent")
				out = gauge(out, l, cs.SystemMode, "client", "allocs", "cpu", "system")
				out = gauge(out, l, cs.UserMode, "client", "allocs", "cpu", "user")
				out = gauge(out, l, cs.TotalTicks, "client", "allocs", "cpu", "total_ticks")
				out = gauge(out, l, float64(cs.ThrottledPeriods), "client", "allocs", "cpu", "throttled_periods")
				out = gauge(out, l, float64(cs.ThrottledTime), "client", "allocs", "cpu", "throttled_time")
				out = append(out, MetricSample{Name: []string{"client", "allocs", "cpu", "total_ticks", "count"},
					Labels: slicesClip(l), Value: 1, Counter: true})
			}
			if r := taskResources(a, tr.task); r != nil {
				out = gauge(out, l, float64(r.MemoryMB)*1024*1024, "client", "allocs", "memory", "allocated")
				out = gauge(out, l, float64(r.CPU), "client", "allocs", "cpu", "allocated")
			}
		}
	}
	for k := range prevStarts {
		if !seen[k] {
			delete(prevStarts, k)
		}
	}
	return out
}

func taskResources(a *structs.Allocation, t *structs.Task) *structs.Resources {
	if r, ok := a.TaskResources[t.Name]; ok && r != nil {
		return r
	}
	return t.Resources
}

func (c *Client) taskLabels(a *structs.Allocation, task string) []metrics.Label {
	ns := a.Namespace
	if ns == "" {
		ns = "default"
	}
	return []metrics.Label{
		{Name: "job", Value: a.JobID},
		{Name: "task_group", Value: a.TaskGroup},
		{Name: "alloc_id", Value: a.ID},
		{Name: "task", Value: task},
		{Name: "namespace", Value: ns},
	}
}

func slicesClip(l []metrics.Label) []metrics.Label { return l[:len(l):len(l)] }

// netIface is a network interface and its speed.
type netIface struct {
	device string
	mbits  int
}

// networks lists the host's interfaces that are up, not loopback and
// have an address, with their speed (linkSpeed, as the fingerprint reads
// it), read once.
func (c *Client) networks() []netIface {
	c.netOnce.Do(func() {
		ifaces, err := net.Interfaces()
		if err != nil {
			return
		}
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			if addrs, err := ifc.Addrs(); err != nil || len(addrs) == 0 {
				continue
			}
			c.nets = append(c.nets, netIface{device: ifc.Name, mbits: linkSpeed(ifc.Name)})
		}
	})
	return c.nets
}
