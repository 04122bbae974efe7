package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tether/structs"
)

// Task stats are measured over the task's process tree by reading /proc:
// this host has no usable cgroup v2 hierarchy, and without a helper
// process per task there is nothing else that already tracks the tree.
//
// One scan of /proc (one read of /proc/<pid>/stat per process on the host)
// yields a process table that all tasks share: sampling N tasks costs one
// scan, plus one /proc/<pid>/statm read per task process (for an exact
// RSS, see readStatmRSS) and one /proc/<pid>/status read (for VmSwap) only
// while the host has swap in use, not N scans. See procTableMaxAge for when
// a table is reused.

// Measured field names, as Nomad's executor reports them.
var (
	taskMeasuredMemStats = []string{"RSS", "Swap"}
	taskMeasuredCPUStats = []string{"System Mode", "User Mode", "Percent"}
)

// cpuTotalTicks returns the host's total CPU compute in MHz, from which a
// task's TotalTicks is derived (Percent/100 × cpuTotalTicks()/NumCPU). The
// default assumes 1000 MHz per core; the agent may point it at the host
// stats collector's figure. Set it before any task starts.
var cpuTotalTicks = func() float64 { return float64(runtime.NumCPU()) * 1000 }

// procTableMaxAge is how old a shared process table may be and still be
// used for a sample. A table is never used twice for the same task, nor for
// a task started after the table was read, so a collector that samples
// every task once a second does one scan per round, however many tasks
// there are; the sample lags by at most this much.
var procTableMaxAge = 250 * time.Millisecond

// ErrTaskNotRunning is returned by TaskHandle.Stats once the task exited.
var ErrTaskNotRunning = errors.New("task not running")

// statsMinWindow is the shortest window CPU percentages are measured over.
// /proc CPU times and start times count in clock ticks (10ms), so a window
// of a few milliseconds would swing between 0% and several hundred percent;
// callers sampling faster than this get figures over a longer window.
const statsMinWindow = 200 * time.Millisecond

// taskStatsState is a handle's memory of earlier samples, against which CPU
// percentages are computed.
type taskStatsState struct {
	mu      sync.Mutex
	tableID uint64 // ID of the table of the last sample; 0 = none
	// newest and older are the last two baselines, at least
	// statsMinWindow apart; nil if not taken yet.
	newest, older *statsBaseline
}

// baseline returns the baseline a sample taken at now (boot clock) is
// measured against: the newest one at least statsMinWindow old, nil meaning
// "since each process started". record says whether the sample is to become
// the newest baseline: only when it is that far from the last one, so the
// two kept are always a window apart.
func (st *taskStatsState) baseline(now time.Duration) (base *statsBaseline, record bool) {
	switch {
	case st.newest == nil:
		return nil, true
	case now-st.newest.at >= statsMinWindow:
		return st.newest, true
	default:
		return st.older, false
	}
}

// statsBaseline is the CPU times of a task's processes at one sample.
type statsBaseline struct {
	at  time.Duration // boot clock of the sample
	cpu map[int]procCPU
}

// procCPU is one process's cumulative CPU time, in clock ticks.
type procCPU struct {
	start        uint64 // start time, ticks after boot; tells reused PIDs apart
	utime, stime uint64
}

// Stats returns the task's resource usage, summed over its process group and
// every descendant (also those that left the group). CPU figures are
// percentages of one core over the time since the previous call, or since a
// process started for processes not seen before; calls less than 200ms
// apart are measured against an older sample instead (see statsMinWindow).
// It is safe for concurrent use.
func (h *TaskHandle) Stats() (*structs.TaskResourceUsage, error) {
	select {
	case <-h.done:
		return nil, ErrTaskNotRunning
	default:
	}
	st := &h.stats
	st.mu.Lock()
	defer st.mu.Unlock()

	table, err := sharedProcTable(st.tableID, h.startedAt)
	if err != nil {
		return nil, fmt.Errorf("failed to sample task %q: %w", h.name, err)
	}
	st.tableID = table.id

	base, record := st.baseline(table.boot)
	var prev map[int]procCPU
	var prevAt time.Duration
	if base != nil {
		prev, prevAt = base.cpu, base.at
	}
	usage, cur := table.taskUsage(h.pid, prev, prevAt)
	if record {
		st.older, st.newest = st.newest, &statsBaseline{at: table.boot, cpu: cur}
	}
	return usage, nil
}

// SumResourceUsage returns the allocation-level usage: the sum of the tasks'
// usage. Measured lists are merged in a stable order (tasks by name, then
// order of first appearance). Nil entries are skipped; the result is never
// nil.
func SumResourceUsage(tasks map[string]*structs.TaskResourceUsage) *structs.ResourceUsage {
	out := &structs.ResourceUsage{
		MemoryStats: &structs.MemoryStats{},
		CpuStats:    &structs.CpuStats{},
	}
	names := make([]string, 0, len(tasks))
	for name := range tasks {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := tasks[name]
		if t == nil || t.ResourceUsage == nil {
			continue
		}
		addResourceUsage(out, t.ResourceUsage)
	}
	return out
}

// addResourceUsage adds in to out.
func addResourceUsage(out, in *structs.ResourceUsage) {
	if m := in.MemoryStats; m != nil {
		o := out.MemoryStats
		o.RSS += m.RSS
		o.Cache += m.Cache
		o.Swap += m.Swap
		o.Usage += m.Usage
		o.MaxUsage += m.MaxUsage
		o.KernelUsage += m.KernelUsage
		o.KernelMaxUsage += m.KernelMaxUsage
		o.Measured = unionStrings(o.Measured, m.Measured)
	}
	if c := in.CpuStats; c != nil {
		o := out.CpuStats
		o.SystemMode += c.SystemMode
		o.UserMode += c.UserMode
		o.TotalTicks += c.TotalTicks
		o.ThrottledPeriods += c.ThrottledPeriods
		o.ThrottledTime += c.ThrottledTime
		o.Percent += c.Percent
		o.Measured = unionStrings(o.Measured, c.Measured)
	}
	out.DeviceStats = append(out.DeviceStats, in.DeviceStats...)
}

// unionStrings appends to a the elements of b it does not have yet.
func unionStrings(a, b []string) []string {
outer:
	for _, s := range b {
		for _, have := range a {
			if have == s {
				continue outer
			}
		}
		a = append(a, s)
	}
	return a
}

// procStat is what one read of /proc/<pid>/stat gives.
type procStat struct {
	ppid, pgrp   int
	utime, stime uint64 // clock ticks
	start        uint64 // clock ticks after boot
	threads      uint64
	rssPages     uint64
}

// procTable is a snapshot of every process on the host.
type procTable struct {
	id       uint64        // increases with every scan; never 0
	boot     time.Duration // boot clock when the scan began
	wall     time.Time     // wall clock when the scan began
	procs    map[int]procStat
	byPgrp   map[int][]int
	children map[int][]int
	// swapUsed is whether any swap was in use at the scan. If not, no
	// process has VmSwap and reading /proc/<pid>/status (the costliest
	// read of a sample) is skipped.
	swapUsed bool
}

// procTables is the shared, most recent process table.
var procTables struct {
	mu     sync.Mutex // held while scanning, so concurrent samplers share one scan
	table  *procTable
	lastID uint64
}

// sharedProcTable returns the shared table, scanning /proc again unless the
// current table is younger than procTableMaxAge, is not the one the caller
// used last (usedID), and was read after notBefore (boot clock).
func sharedProcTable(usedID uint64, notBefore time.Duration) (*procTable, error) {
	procTables.mu.Lock()
	defer procTables.mu.Unlock()
	if t := procTables.table; t != nil && t.id != usedID && t.boot >= notBefore &&
		bootClock()-t.boot < procTableMaxAge {
		return t, nil
	}
	t, err := scanProcTable()
	if err != nil {
		return nil, err
	}
	procTables.lastID++
	t.id = procTables.lastID
	procTables.table = t
	return t, nil
}

// scanProcTable reads /proc/<pid>/stat of every process.
func scanProcTable() (*procTable, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("failed to read /proc: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("failed to read /proc: %w", err)
	}
	t := &procTable{
		boot:     bootClock(),
		wall:     time.Now(),
		procs:    make(map[int]procStat, len(names)),
		byPgrp:   make(map[int][]int),
		children: make(map[int][]int),
	}
	var si syscall.Sysinfo_t
	t.swapUsed = syscall.Sysinfo(&si) != nil || si.Totalswap != si.Freeswap
	buf := make([]byte, 4096)
	for _, name := range names {
		pid, ok := parsePid(name)
		if !ok {
			continue
		}
		data, err := readSmallFile("/proc/"+name+"/stat", buf)
		if err != nil {
			continue // exited since the listing
		}
		ps, ok := parseProcStat(data)
		if !ok || ps.pgrp == 0 {
			continue // kernel threads have no group
		}
		t.procs[pid] = ps
		t.byPgrp[ps.pgrp] = append(t.byPgrp[ps.pgrp], pid)
		t.children[ps.ppid] = append(t.children[ps.ppid], pid)
	}
	return t, nil
}

// members returns the processes of group pgid and all their descendants,
// in increasing PID order.
func (t *procTable) members(pgid int) []int {
	seen := make(map[int]bool)
	queue := append([]int(nil), t.byPgrp[pgid]...)
	var out []int
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, pid)
		queue = append(queue, t.children[pid]...)
	}
	sort.Ints(out)
	return out
}

// taskUsage computes the usage of group pgid (and descendants) in this
// table against the previous sample: prev holds each process's CPU times at
// boot clock prevAt (nil for none). It also returns the CPU times to keep
// for the next sample.
func (t *procTable) taskUsage(pgid int, prev map[int]procCPU, prevAt time.Duration) (*structs.TaskResourceUsage, map[int]procCPU) {
	hz := clockTicks()
	numCPU := runtime.NumCPU()
	ticksPerCore := cpuTotalTicks() / float64(numCPU)
	pageSize := uint64(os.Getpagesize())
	members := t.members(pgid)

	cur := make(map[int]procCPU, len(members))
	pids := make(map[string]*structs.ResourceUsage, len(members))
	total := newTaskResourceUsage()
	buf := make([]byte, 4096)
	for _, pid := range members {
		ps := t.procs[pid]
		c := procCPU{start: ps.start, utime: ps.utime, stime: ps.stime}
		cur[pid] = c

		// A process not seen before (or a reused PID) is measured since it
		// started.
		base := procCPU{}
		since := time.Duration(float64(ps.start) / hz * float64(time.Second))
		if p, ok := prev[pid]; ok && p.start == ps.start {
			base, since = p, prevAt
		}
		wall := (t.boot - since).Seconds()
		user := finitePercent(tickDelta(c.utime, base.utime) / hz / wall * 100)
		system := finitePercent(tickDelta(c.stime, base.stime) / hz / wall * 100)
		// Tick rounding over a short window can exceed what the process's
		// threads could use; cap at that, keeping the user/system split.
		if limit := float64(max(1, min(ps.threads, uint64(numCPU)))) * 100; user+system > limit {
			scale := limit / (user + system)
			user, system = user*scale, system*scale
		}

		u := newTaskResourceUsage()
		u.MemoryStats.RSS = ps.rssPages * pageSize
		if pages, ok := readStatmRSS(pid, buf); ok {
			u.MemoryStats.RSS = pages * pageSize
		}
		if t.swapUsed {
			u.MemoryStats.Swap = readVmSwap(pid, buf)
		}
		u.CpuStats.UserMode = user
		u.CpuStats.SystemMode = system
		u.CpuStats.Percent = user + system
		u.CpuStats.TotalTicks = u.CpuStats.Percent / 100 * ticksPerCore
		pids[strconv.Itoa(pid)] = u

		total.MemoryStats.RSS += u.MemoryStats.RSS
		total.MemoryStats.Swap += u.MemoryStats.Swap
		total.CpuStats.UserMode += user
		total.CpuStats.SystemMode += system
		total.CpuStats.Percent += u.CpuStats.Percent
	}
	total.CpuStats.TotalTicks = total.CpuStats.Percent / 100 * ticksPerCore
	return &structs.TaskResourceUsage{
		ResourceUsage: total,
		Timestamp:     t.wall.UnixNano(),
		Pids:          pids,
	}, cur
}

// newTaskResourceUsage returns a zero usage with the Measured lists of a
// process-tree measurement.
func newTaskResourceUsage() *structs.ResourceUsage {
	return &structs.ResourceUsage{
		MemoryStats: &structs.MemoryStats{Measured: append([]string(nil), taskMeasuredMemStats...)},
		CpuStats:    &structs.CpuStats{Measured: append([]string(nil), taskMeasuredCPUStats...)},
	}
}

// tickDelta returns cur-prev as a float, 0 if the counter went backwards.
func tickDelta(cur, prev uint64) float64 {
	if cur < prev {
		return 0
	}
	return float64(cur - prev)
}

// readSmallFile reads a /proc file into buf with raw syscalls (no os.File,
// no poller registration) and returns the bytes read.
func readSmallFile(path string, buf []byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

// parsePid parses a /proc entry name that is a PID.
func parsePid(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n > 0
}

// parseProcStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted from the last ')'.
func parseProcStat(b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	// Fields after ")": 0 state, 1 ppid, 2 pgrp, ..., 11 utime, 12 stime,
	// ..., 17 num_threads, 18 itrealvalue, 19 starttime, 20 vsize, 21 rss.
	const (
		fPpid    = 1
		fPgrp    = 2
		fUtime   = 11
		fStime   = 12
		fThreads = 17
		fStart   = 19
		fRss     = 21
	)
	var f [fRss + 1][]byte
	rest := b[i+1:]
	for n := 0; n <= fRss; n++ {
		for len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return procStat{}, false
		}
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		f[n], rest = rest[:end], rest[end:]
	}
	var ps procStat
	var ppid, pgrp uint64
	ok := true
	for _, fld := range []struct {
		dst *uint64
		n   int
	}{
		{&ppid, fPpid}, {&pgrp, fPgrp}, {&ps.utime, fUtime}, {&ps.stime, fStime},
		{&ps.threads, fThreads}, {&ps.start, fStart}, {&ps.rssPages, fRss},
	} {
		v, vok := parseUint(bytes.TrimSpace(f[fld.n]))
		*fld.dst, ok = v, ok && vok
	}
	ps.ppid, ps.pgrp = int(ppid), int(pgrp)
	return ps, ok
}

// parseUint parses a non-negative decimal number.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// readStatmRSS returns the resident pages of process pid from
// /proc/<pid>/statm; ok is false if it could not be read (the process
// exited since the scan). A task's RSS comes from here rather than from
// the rss field of /proc/<pid>/stat the table already holds: stat reports
// the kernel's per-CPU batched counter without the batches not yet folded
// in, which lags the true figure by up to a batch (32 pages or more) per
// CPU, and reads 0 for a process that has just exec'd — most first samples
// of a new task did on this kernel (6.18). statm and status add the
// batches in. On kernels where statm is batched too this is no worse than
// stat.
func readStatmRSS(pid int, buf []byte) (uint64, bool) {
	data, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/statm", buf)
	if err != nil {
		return 0, false
	}
	return parseStatmRSS(data)
}

// parseStatmRSS returns the second field of /proc/<pid>/statm, the
// resident size in pages.
func parseStatmRSS(statm []byte) (uint64, bool) {
	i := bytes.IndexByte(statm, ' ')
	if i < 0 {
		return 0, false
	}
	f := statm[i+1:]
	if j := bytes.IndexByte(f, ' '); j >= 0 {
		f = f[:j]
	}
	return parseUint(bytes.TrimSpace(f))
}

// readVmSwap returns the VmSwap of process pid in bytes, 0 if unknown
// (exited, zombie or kernel thread).
func readVmSwap(pid int, buf []byte) uint64 {
	data, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/status", buf)
	if err != nil {
		return 0
	}
	return parseVmSwap(data)
}

// parseVmSwap returns the VmSwap line of /proc/<pid>/status in bytes, 0 if
// there is none.
func parseVmSwap(status []byte) uint64 {
	const key = "\nVmSwap:"
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return 0
	}
	line := status[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	line = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(line), []byte("kB")))
	kb, ok := parseUint(line)
	if !ok {
		return 0
	}
	return kb * 1024
}

// bootClock returns CLOCK_BOOTTIME, the clock /proc start times use.
func bootClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// Never fails on Linux ≥ 2.6.39; keep going on a monotonic clock.
		return time.Since(processEpoch)
	}
	return time.Duration(ts.Nano())
}

// processEpoch is the fallback origin of bootClock.
var processEpoch = time.Now()

// clockTicks returns USER_HZ, the unit of /proc CPU times, from the
// AT_CLKTCK entry of the agent's auxiliary vector; it is 100 on every
// mainstream architecture, which is the fallback.
var clockTicks = sync.OnceValue(func() float64 {
	const atClkTck = 17
	data, err := os.ReadFile("/proc/self/auxv")
	if err == nil && strconv.IntSize == 64 && len(data)%16 == 0 {
		// 64-bit: pairs of (key, value) uint64s, ended by key 0.
		for i := 0; i+16 <= len(data); i += 16 {
			key := binary.NativeEndian.Uint64(data[i:])
			val := binary.NativeEndian.Uint64(data[i+8:])
			if key == atClkTck && val > 0 {
				return float64(val)
			}
			if key == 0 {
				break
			}
		}
	}
	return 100
})

// finitePercent returns v, or 0 if it is negative, NaN or infinite (a
// counter went backwards or no time passed).
func finitePercent(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}
