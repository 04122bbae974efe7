package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"

	"tether/structs"
)

const (
	// defaultHostStatsInterval is the collection interval used when the
	// caller passes a non-positive one (Nomad's telemetry.collection_interval
	// default).
	defaultHostStatsInterval = time.Second

	// partitionRefreshInterval is how long the list of mounted partitions is
	// reused before it is read again. Mounts change rarely; reading and
	// parsing mountinfo every second is wasted work.
	partitionRefreshInterval = 60 * time.Second

	// fallbackCPUMHz is the per-core clock assumed when the host reports no
	// frequency at all (some VMs), so compute is never zero.
	fallbackCPUMHz = 1000.0
)

// HostStatsCollector samples host statistics on an interval (never per
// call). The latest sample is served by Latest; Run keeps it fresh.
type HostStatsCollector struct {
	logger   hclog.Logger
	allocDir string
	interval time.Duration

	// cpuTotalCompute is the cpu_total_compute override in MHz; 0 means
	// detect.
	cpuTotalCompute atomic.Int64

	// collectMu serialises collections; it guards every field below it up
	// to latest.
	collectMu    sync.Mutex
	prevCPU      map[string]cpu.TimesStat
	partitions   []disk.PartitionStat
	partitionsAt time.Time

	// latest is the most recent sample. Stored samples are never mutated.
	latest atomic.Pointer[structs.HostStats]

	// notifyMu guards notify, a channel closed (and replaced) whenever a new
	// sample is stored, so waiters need not poll.
	notifyMu sync.Mutex
	notify   chan struct{}

	// json is the JSON of the latest sample, for every node serving it.
	json statsJSONCache
}

// NewHostStatsCollector returns a collector that samples the host, and the
// filesystem holding allocDir, every interval once Run is called. A
// non-positive interval means one second. A nil logger discards logs.
func NewHostStatsCollector(logger hclog.Logger, allocDir string, interval time.Duration) *HostStatsCollector {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if interval <= 0 {
		interval = defaultHostStatsInterval
	}
	return &HostStatsCollector{
		logger:   logger,
		allocDir: allocDir,
		interval: interval,
		prevCPU:  make(map[string]cpu.TimesStat),
		notify:   make(chan struct{}),
	}
}

// Run collects a sample immediately and then every interval until ctx is
// done, at which point it returns. Collection errors are logged and do not
// stop the loop.
func (c *HostStatsCollector) Run(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	c.collectLogged()

	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			c.collectLogged()
		}
	}
}

func (c *HostStatsCollector) collectLogged() {
	if err := c.Collect(); err != nil {
		c.logger.Warn("error collecting host stats", "error", err)
	}
}

// Collect takes one sample now and makes it the latest. A sample is stored
// even when some measurements fail (the failed parts are zero or empty); the
// returned error describes those failures.
func (c *HostStatsCollector) Collect() error {
	c.collectMu.Lock()
	defer c.collectMu.Unlock()
	return c.collectLocked()
}

// Latest returns a deep copy of the latest sample. If no sample has been
// taken yet it collects one synchronously first. It never returns nil.
func (c *HostStatsCollector) Latest() *structs.HostStats {
	if hs := c.latest.Load(); hs != nil {
		return copyHostStats(hs)
	}
	c.collectMu.Lock()
	if c.latest.Load() == nil {
		if err := c.collectLocked(); err != nil {
			c.logger.Warn("error collecting host stats", "error", err)
		}
	}
	c.collectMu.Unlock()
	return copyHostStats(c.latest.Load())
}

// CPUTotalTicks returns the host's total CPU compute in MHz: the number of
// logical cores times the highest core frequency, or the cpu_total_compute
// override when one is set.
func (c *HostStatsCollector) CPUTotalTicks() float64 {
	if v := c.cpuTotalCompute.Load(); v > 0 {
		return float64(v)
	}
	return detectCPU().totalMHz()
}

// SetCPUTotalCompute sets the cpu_total_compute override in MHz. Zero or a
// negative value restores detection.
func (c *HostStatsCollector) SetCPUTotalCompute(mhz int) {
	if mhz < 0 {
		mhz = 0
	}
	c.cpuTotalCompute.Store(int64(mhz))
}

// updated returns a channel that is closed when the next sample is stored.
func (c *HostStatsCollector) updated() <-chan struct{} {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	return c.notify
}

func (c *HostStatsCollector) publish(hs *structs.HostStats) {
	c.latest.Store(hs)
	c.notifyMu.Lock()
	close(c.notify)
	c.notify = make(chan struct{})
	c.notifyMu.Unlock()
}

// collectLocked takes a sample; c.collectMu must be held.
func (c *HostStatsCollector) collectLocked() error {
	var errs []error
	now := time.Now()
	hs := &structs.HostStats{
		Memory:        &structs.HostMemoryStats{},
		CPU:           []*structs.HostCPUStats{},
		DiskStats:     []*structs.HostDiskStats{},
		AllocDirStats: &structs.HostDiskStats{},
		DeviceStats:   []*structs.DeviceGroupStats{},
		Timestamp:     now.UnixNano(),
	}

	if vm, err := mem.VirtualMemory(); err != nil {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	} else {
		hs.Memory = memoryStats(vm)
	}

	if times, err := cpu.Times(true); err != nil {
		errs = append(errs, fmt.Errorf("cpu times: %w", err))
	} else {
		hs.CPU, hs.CPUTicksConsumed = cpuStats(c.prevCPU, times, c.CPUTotalTicks())
		prev := make(map[string]cpu.TimesStat, len(times))
		for _, t := range times {
			prev[t.CPU] = t
		}
		c.prevCPU = prev
	}

	if err := c.refreshPartitions(now); err != nil {
		errs = append(errs, fmt.Errorf("disk partitions: %w", err))
	}
	for i := range c.partitions {
		p := &c.partitions[i]
		u, err := disk.Usage(p.Mountpoint)
		if err != nil {
			c.logger.Trace("skipping unreadable partition", "mountpoint", p.Mountpoint, "error", err)
			continue
		}
		ds := diskStats(u)
		ds.Device = p.Device
		ds.Mountpoint = p.Mountpoint
		hs.DiskStats = append(hs.DiskStats, ds)
	}

	if u, err := disk.Usage(c.allocDir); err != nil {
		errs = append(errs, fmt.Errorf("alloc dir %q usage: %w", c.allocDir, err))
	} else {
		hs.AllocDirStats = diskStats(u)
	}

	if up, err := host.Uptime(); err != nil {
		errs = append(errs, fmt.Errorf("uptime: %w", err))
	} else {
		hs.Uptime = up
	}

	c.publish(hs)
	return errors.Join(errs...)
}

// refreshPartitions re-reads the partition list when it is older than
// partitionRefreshInterval. On error the previous list is kept.
func (c *HostStatsCollector) refreshPartitions(now time.Time) error {
	if !c.partitionsAt.IsZero() && now.Sub(c.partitionsAt) < partitionRefreshInterval {
		return nil
	}
	parts, err := disk.Partitions(false)
	// Retry after the full interval either way: a host whose mount table
	// cannot be read is not going to start allowing it a second later.
	c.partitionsAt = now
	if err != nil {
		return err
	}
	c.partitions = parts
	return nil
}

// memoryStats converts gopsutil's memory sample. Used follows Nomad:
// Total − Free − Buffers − Cached − SReclaimable. gopsutil v4 folds
// SReclaimable into Cached on Linux and reports Used as Total − Available, so
// Used is recomputed there.
func memoryStats(vm *mem.VirtualMemoryStat) *structs.HostMemoryStats {
	return &structs.HostMemoryStats{
		Total:     vm.Total,
		Available: vm.Available,
		Used:      memoryUsed(runtime.GOOS, vm),
		Free:      vm.Free,
	}
}

func memoryUsed(goos string, vm *mem.VirtualMemoryStat) uint64 {
	if goos != "linux" {
		return vm.Used
	}
	// On Linux, vm.Cached already includes SReclaimable.
	reclaimable := vm.Free + vm.Buffers + vm.Cached
	if reclaimable > vm.Total {
		return vm.Used
	}
	return vm.Total - reclaimable
}

// diskStats converts a statfs-based usage sample; Device and Mountpoint are
// left empty.
func diskStats(u *disk.UsageStat) *structs.HostDiskStats {
	return &structs.HostDiskStats{
		Size:              u.Total,
		Used:              u.Used,
		Available:         u.Free,
		UsedPercent:       finiteOrZero(u.UsedPercent),
		InodesUsedPercent: finiteOrZero(u.InodesUsedPercent),
	}
}

func finiteOrZero(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// cpuStats computes per-CPU usage of cur against prev (keyed by CPU name; a
// missing entry counts as all zeros, i.e. averages since boot) and the sum
// of ticks consumed. totalTicks is the host's total compute in MHz, shared
// evenly among the CPUs in cur.
func cpuStats(prev map[string]cpu.TimesStat, cur []cpu.TimesStat, totalTicks float64) ([]*structs.HostCPUStats, float64) {
	out := make([]*structs.HostCPUStats, 0, len(cur))
	if len(cur) == 0 {
		return out, 0
	}
	ticksPerCPU := totalTicks / float64(len(cur))
	var consumed float64
	for _, t := range cur {
		idle, user, system, total := cpuPercents(prev[t.CPU], t)
		ticks := total / 100 * ticksPerCPU
		consumed += ticks
		out = append(out, &structs.HostCPUStats{
			CPU:          t.CPU,
			User:         user,
			System:       system,
			Idle:         idle,
			Total:        total,
			TotalPercent: total,
			TotalTicks:   ticks,
		})
	}
	return out, consumed
}

// cpuBusy is the non-idle time of t.
func cpuBusy(t cpu.TimesStat) float64 {
	return t.User + t.System + t.Nice + t.Iowait + t.Irq + t.Softirq +
		t.Steal + t.Guest + t.GuestNice
}

// cpuPercents returns the idle, user, system and busy (total) percentages of
// one CPU between two cumulative samples. If no time passed, time went
// backwards, or any result is NaN, infinite or negative (a counter went
// backwards) the CPU is reported as fully idle.
func cpuPercents(prev, cur cpu.TimesStat) (idle, user, system, total float64) {
	prevBusy, curBusy := cpuBusy(prev), cpuBusy(cur)
	deltaTotal := (curBusy + cur.Idle) - (prevBusy + prev.Idle)

	idle = (cur.Idle - prev.Idle) / deltaTotal * 100
	user = (cur.User - prev.User) / deltaTotal * 100
	system = (cur.System - prev.System) / deltaTotal * 100
	total = (curBusy - prevBusy) / deltaTotal * 100

	if !(deltaTotal > 0) {
		return 100, 0, 0, 0
	}
	for _, v := range [...]float64{idle, user, system, total} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return 100, 0, 0, 0
		}
	}
	return idle, user, system, total
}

// copyHostStats deep-copies a sample.
func copyHostStats(in *structs.HostStats) *structs.HostStats {
	out := *in
	if in.Memory != nil {
		m := *in.Memory
		out.Memory = &m
	}
	if in.AllocDirStats != nil {
		a := *in.AllocDirStats
		out.AllocDirStats = &a
	}
	if in.CPU != nil {
		out.CPU = make([]*structs.HostCPUStats, len(in.CPU))
		for i, s := range in.CPU {
			if s != nil {
				v := *s
				out.CPU[i] = &v
			}
		}
	}
	if in.DiskStats != nil {
		out.DiskStats = make([]*structs.HostDiskStats, len(in.DiskStats))
		for i, s := range in.DiskStats {
			if s != nil {
				v := *s
				out.DiskStats[i] = &v
			}
		}
	}
	if in.DeviceStats != nil {
		out.DeviceStats = make([]*structs.DeviceGroupStats, len(in.DeviceStats))
		for i, g := range in.DeviceStats {
			if g == nil {
				continue
			}
			v := *g
			if g.InstanceStats != nil {
				v.InstanceStats = make(map[string]*structs.DeviceStats, len(g.InstanceStats))
				for k, d := range g.InstanceStats {
					if d != nil {
						dv := *d
						v.InstanceStats[k] = &dv
					} else {
						v.InstanceStats[k] = nil
					}
				}
			}
			out.DeviceStats[i] = &v
		}
	}
	return &out
}

// cpuFacts is what is detected about the host's CPUs, once per process.
type cpuFacts struct {
	cores int     // logical cores
	mhz   float64 // highest per-core frequency, never zero
	model string
}

func (f cpuFacts) totalMHz() float64 {
	return float64(f.cores) * f.mhz
}

// detectCPU reads the CPU count, frequency and model once; frequencies do
// not change in a way Nomad accounts for, and /proc/cpuinfo is costly.
var detectCPU = sync.OnceValue(func() cpuFacts {
	f := cpuFacts{cores: runtime.NumCPU()}
	if n, err := cpu.Counts(true); err == nil && n > 0 {
		f.cores = n
	}
	if infos, err := cpu.Info(); err == nil {
		for _, in := range infos {
			if in.Mhz > f.mhz && !math.IsInf(in.Mhz, 0) {
				f.mhz = in.Mhz
			}
			if f.model == "" && in.ModelName != "" {
				f.model = in.ModelName
			}
		}
	}
	if !(f.mhz > 0) {
		f.mhz = fallbackCPUMHz
	}
	return f
})
