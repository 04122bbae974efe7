package client

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tether/structs"
)

func TestTaskStatsMemory(t *testing.T) {
	// tail keeps its whole input when it has no newline; the sleep keeps
	// the pipe open so tail never sees EOF and holds ~50 MB.
	h := startTestTask(t, shTask(`(head -c 50000000 /dev/zero; sleep 1000) | tail`))
	before := time.Now()

	var u *structs.TaskResourceUsage
	waitCond(t, 20*time.Second, func() bool {
		var err error
		u, err = h.Stats()
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		return u.ResourceUsage.MemoryStats.RSS > 20<<20
	}, "task RSS never above 20 MB")

	ru := u.ResourceUsage
	if got, want := strings.Join(ru.MemoryStats.Measured, ","), "RSS,Swap"; got != want {
		t.Errorf("memory Measured = %q; want %q", got, want)
	}
	if got, want := strings.Join(ru.CpuStats.Measured, ","), "System Mode,User Mode,Percent"; got != want {
		t.Errorf("cpu Measured = %q; want %q", got, want)
	}
	if ru.CpuStats.Percent < 0 || ru.CpuStats.UserMode < 0 || ru.CpuStats.SystemMode < 0 {
		t.Errorf("cpu = %+v; want no negative figure", ru.CpuStats)
	}
	if ts := time.Unix(0, u.Timestamp); ts.Before(before.Add(-time.Second)) || ts.After(time.Now()) {
		t.Errorf("Timestamp = %v; want between %v and now", ts, before)
	}
	// sh, the subshell, head or sleep, tail: all in the group, all summed.
	if len(u.Pids) < 3 {
		t.Errorf("Pids has %d entries; want at least 3 (sh, sleep, tail)", len(u.Pids))
	}
	if _, ok := u.Pids[strconv.Itoa(h.Pid())]; !ok {
		t.Errorf("Pids lacks the main process %d", h.Pid())
	}
	var rss, swap uint64
	var pct float64
	for _, p := range u.Pids {
		rss += p.MemoryStats.RSS
		swap += p.MemoryStats.Swap
		pct += p.CpuStats.Percent
	}
	if rss != ru.MemoryStats.RSS || swap != ru.MemoryStats.Swap {
		t.Errorf("sum over Pids = RSS %d Swap %d; want RSS %d Swap %d", rss, swap, ru.MemoryStats.RSS, ru.MemoryStats.Swap)
	}
	if math.Abs(pct-ru.CpuStats.Percent) > 1e-6 {
		t.Errorf("sum of per-pid Percent = %v; want %v", pct, ru.CpuStats.Percent)
	}
}

func TestTaskStatsCPU(t *testing.T) {
	h := startTestTask(t, shTask(`while :; do :; done`))
	var u *structs.TaskResourceUsage
	// A busy loop uses about one core; wait until a sample shows it.
	waitCond(t, 10*time.Second, func() bool {
		var err error
		u, err = h.Stats()
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		return u.ResourceUsage.CpuStats.Percent > 30
	}, "busy task never above 30%% CPU")

	c := u.ResourceUsage.CpuStats
	// sh has one thread: it cannot use more than one core.
	if c.Percent > 100+1e-9 {
		t.Errorf("Percent = %v; want at most 100", c.Percent)
	}
	if math.Abs(c.UserMode+c.SystemMode-c.Percent) > 1e-6 {
		t.Errorf("UserMode %v + SystemMode %v != Percent %v", c.UserMode, c.SystemMode, c.Percent)
	}
	wantTicks := c.Percent / 100 * cpuTotalTicks() / float64(runtime.NumCPU())
	if math.Abs(c.TotalTicks-wantTicks) > 1e-6 {
		t.Errorf("TotalTicks = %v; want %v", c.TotalTicks, wantTicks)
	}
}

func TestTaskStatsIncludesDescendantsOutsideGroup(t *testing.T) {
	dir := t.TempDir()
	cfg := shTask(`setsid sleep 1000 & echo $! > gc.pid; wait`)
	cfg.Dir = dir
	h := startTestTask(t, cfg)
	gc := readPidFile(t, filepath.Join(dir, "gc.pid"))
	t.Cleanup(func() {
		syscall.Kill(gc, syscall.SIGKILL)
		waitCond(t, 5*time.Second, func() bool { return !processAlive(gc) }, "escaped child %d still alive", gc)
	})
	// The pid file is written before setsid may have run; wait for it.
	waitCond(t, 5*time.Second, func() bool {
		_, pgrp, ok := procState(gc)
		return ok && pgrp == gc
	}, "child %d never left the group", gc)

	u, err := h.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Pids[strconv.Itoa(gc)]; !ok {
		t.Errorf("Pids = %v; want it to contain the descendant %d", keys(u.Pids), gc)
	}
}

func TestTaskStatsAfterExit(t *testing.T) {
	h := startTestTask(t, shTask(`exit 0`))
	waitResult(t, h, 10*time.Second)
	if u, err := h.Stats(); u != nil || !errors.Is(err, ErrTaskNotRunning) {
		t.Errorf("Stats after exit = %v, %v; want nil, ErrTaskNotRunning", u, err)
	}
}

// TestTaskStatsConcurrent samples two tasks from eight goroutines from
// the moment they start. Every sample must show memory: the tasks' shells
// are live, exec'd processes, and their RSS is read exactly (statm), not
// from stat's batched counter, which is 0 right after an exec.
func TestTaskStatsConcurrent(t *testing.T) {
	hs := []*TaskHandle{
		startTestTask(t, shTask(`while :; do sleep 0.05; done`)),
		startTestTask(t, shTask(`while :; do sleep 0.05; done`)),
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hs[g%len(hs)]
			for range 20 {
				u, err := h.Stats()
				if err != nil {
					t.Errorf("Stats: %v", err)
					return
				}
				if u.ResourceUsage.MemoryStats.RSS == 0 {
					t.Errorf("RSS = 0; want > 0")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestTaskStatsPercentMath(t *testing.T) {
	hz := clockTicks()
	ticksPerCore := cpuTotalTicks() / float64(runtime.NumCPU())
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	// PIDs above any pid_max, so no real /proc entry is read.
	const leader, child, gone = 9000001, 9000002, 9000003
	table := &procTable{
		boot: sec(20),
		procs: map[int]procStat{
			leader: {ppid: 1, pgrp: leader, utime: uint64(3 * hz), stime: uint64(1 * hz), start: uint64(5 * hz), threads: 1, rssPages: 10},
			child:  {ppid: leader, pgrp: leader, utime: uint64(2 * hz), stime: 0, start: uint64(16 * hz), threads: 1, rssPages: 5},
		},
		byPgrp:   map[int][]int{leader: {leader, child}},
		children: map[int][]int{1: {leader}, leader: {child}},
	}
	cases := []struct {
		name             string
		prev             map[int]procCPU
		prevAt           time.Duration
		wantUser, wantSy float64
	}{
		{
			// Since start: leader 3s user over 15s, child 2s over 4s.
			name:     "first sample",
			wantUser: 3.0/15*100 + 2.0/4*100,
			wantSy:   1.0 / 15 * 100,
		},
		{
			// Leader: 1s user, 0.5s system over the last 2s; child is new.
			name: "against previous",
			prev: map[int]procCPU{
				leader: {start: uint64(5 * hz), utime: uint64(2 * hz), stime: uint64(0.5 * hz)},
				gone:   {start: uint64(1 * hz), utime: 100, stime: 100},
			},
			prevAt:   sec(18),
			wantUser: 1.0/2*100 + 2.0/4*100,
			wantSy:   0.5 / 2 * 100,
		},
		{
			// Same PID, other start time: measured since its start.
			name: "reused pid",
			prev: map[int]procCPU{
				leader: {start: uint64(1 * hz), utime: uint64(10 * hz)},
			},
			prevAt:   sec(18),
			wantUser: 3.0/15*100 + 2.0/4*100,
			wantSy:   1.0 / 15 * 100,
		},
		{
			// One tick in 5ms would be 200%; a one-thread process is
			// capped at 100%, split as measured. The child's 2s over 4s
			// stays 50%.
			name: "capped at one core per thread",
			prev: map[int]procCPU{
				leader: {start: uint64(5 * hz), utime: uint64(3*hz) - 1, stime: uint64(1 * hz)},
			},
			prevAt:   sec(19.995),
			wantUser: 100 + 2.0/4*100,
		},
		{
			// Counters lower than before never give negative figures.
			name: "counter went backwards",
			prev: map[int]procCPU{
				leader: {start: uint64(5 * hz), utime: uint64(9 * hz), stime: uint64(9 * hz)},
				child:  {start: uint64(16 * hz), utime: uint64(9 * hz)},
			},
			prevAt: sec(18),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, cur := table.taskUsage(leader, tc.prev, tc.prevAt)
			c := u.ResourceUsage.CpuStats
			if math.Abs(c.UserMode-tc.wantUser) > 1e-9 || math.Abs(c.SystemMode-tc.wantSy) > 1e-9 {
				t.Errorf("UserMode, SystemMode = %v, %v; want %v, %v", c.UserMode, c.SystemMode, tc.wantUser, tc.wantSy)
			}
			if want := tc.wantUser + tc.wantSy; math.Abs(c.Percent-want) > 1e-9 {
				t.Errorf("Percent = %v; want %v", c.Percent, want)
			}
			if want := c.Percent / 100 * ticksPerCore; math.Abs(c.TotalTicks-want) > 1e-9 {
				t.Errorf("TotalTicks = %v; want %v", c.TotalTicks, want)
			}
			if got, want := u.ResourceUsage.MemoryStats.RSS, uint64(15*os.Getpagesize()); got != want {
				t.Errorf("RSS = %d; want %d", got, want)
			}
			if got := fmt.Sprint(keys(u.Pids)); got != fmt.Sprint([]string{"9000001", "9000002"}) {
				t.Errorf("Pids = %s; want [9000001 9000002]", got)
			}
			if len(cur) != 2 || cur[leader].utime != table.procs[leader].utime {
				t.Errorf("kept CPU times = %+v; want the two current processes", cur)
			}
		})
	}
}

func TestTaskStatsBaseline(t *testing.T) {
	older := &statsBaseline{at: 1 * time.Second}
	newest := &statsBaseline{at: 1*time.Second + statsMinWindow}
	cases := []struct {
		name       string
		newest     *statsBaseline
		older      *statsBaseline
		now        time.Duration
		wantBase   *statsBaseline
		wantRecord bool
	}{
		{"first sample", nil, nil, 5 * time.Second, nil, true},
		{"second sample soon after first", older, nil, older.at + time.Millisecond, nil, false},
		{"second sample a window later", older, nil, older.at + statsMinWindow, older, true},
		{"sample soon after newest", newest, older, newest.at + 5*time.Millisecond, older, false},
		{"sample a window after newest", newest, older, newest.at + time.Second, newest, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &taskStatsState{newest: tc.newest, older: tc.older}
			base, record := st.baseline(tc.now)
			if base != tc.wantBase || record != tc.wantRecord {
				t.Errorf("baseline(%v) = %p, %v; want %p, %v", tc.now, base, record, tc.wantBase, tc.wantRecord)
			}
		})
	}
}

func TestTaskStatsMembers(t *testing.T) {
	table := &procTable{
		byPgrp: map[int][]int{
			100: {100, 101, 102},
			200: {200},
			300: {300, 301},
			400: {400},
		},
		children: map[int][]int{
			1:   {100, 200, 300},
			100: {101, 102},
			102: {300}, // left the group (setsid) but still a descendant
			300: {301},
			200: {400}, // unrelated tree
		},
	}
	cases := []struct {
		pgid int
		want []int
	}{
		{100, []int{100, 101, 102, 300, 301}},
		{200, []int{200, 400}},
		{300, []int{300, 301}},
		{999, nil},
	}
	for _, tc := range cases {
		if got := table.members(tc.pgid); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("members(%d) = %v; want %v", tc.pgid, got, tc.want)
		}
	}
}

func TestTaskStatsParseProcStat(t *testing.T) {
	cases := []struct {
		name   string
		line   string
		want   procStat
		wantOK bool
	}{
		{
			name:   "plain",
			line:   "42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 5000000 321 18446744073709551615 1 1 0 0 0\n",
			want:   procStat{ppid: 1, pgrp: 42, utime: 7, stime: 3, threads: 1, start: 12345, rssPages: 321},
			wantOK: true,
		},
		{
			name:   "comm with spaces and parens",
			line:   "43 (a) b (c)) R 42 40 40 0 -1 0 0 0 0 0 11 12 0 0 20 0 1 0 99 1 2 3",
			want:   procStat{ppid: 42, pgrp: 40, utime: 11, stime: 12, threads: 1, start: 99, rssPages: 2},
			wantOK: true,
		},
		{
			name:   "rss is the last field",
			line:   "44 (x) S 1 44 44 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 6 7\n",
			want:   procStat{ppid: 1, pgrp: 44, utime: 1, stime: 2, threads: 1, start: 5, rssPages: 7},
			wantOK: true,
		},
		{name: "truncated", line: "45 (x) S 1 45 45 0", wantOK: false},
		{name: "no comm", line: "46 x S 1", wantOK: false},
		{name: "garbage number", line: "47 (x) S 1 4x7 47 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 6 7", wantOK: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseProcStat([]byte(tc.line))
			if ok != tc.wantOK || (ok && got != tc.want) {
				t.Errorf("parseProcStat = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestTaskStatsParseStatmRSS(t *testing.T) {
	cases := []struct {
		name   string
		statm  string
		want   uint64
		wantOK bool
	}{
		{"live", "2830 426 352 28 0 112 0\n", 426, true},
		{"zombie", "0 0 0 0 0 0 0\n", 0, true},
		{"one field", "2830\n", 0, false},
		{"garbled", "2830 x 352\n", 0, false},
		{"empty", "", 0, false},
	}
	for _, tc := range cases {
		got, ok := parseStatmRSS([]byte(tc.statm))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: parseStatmRSS = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
	if got, ok := readStatmRSS(os.Getpid(), make([]byte, 4096)); !ok || got == 0 {
		t.Errorf("readStatmRSS(self) = %d, %v; want the test binary's resident pages", got, ok)
	}
	if _, ok := readStatmRSS(9000001, make([]byte, 4096)); ok {
		t.Errorf("readStatmRSS of a PID above pid_max succeeded")
	}
}

func TestTaskStatsParseVmSwap(t *testing.T) {
	cases := []struct {
		name   string
		status string
		want   uint64
	}{
		{"swapped", "Name:\tx\nVmRSS:\t  100 kB\nVmSwap:\t    12 kB\nThreads:\t1\n", 12 * 1024},
		{"last line without newline", "Name:\tx\nVmSwap:\t0 kB", 0},
		{"kernel thread", "Name:\tkthreadd\nThreads:\t1\n", 0},
		{"garbled", "Name:\tx\nVmSwap:\tlots\n", 0},
	}
	for _, tc := range cases {
		if got := parseVmSwap([]byte(tc.status)); got != tc.want {
			t.Errorf("%s: parseVmSwap = %d; want %d", tc.name, got, tc.want)
		}
	}
	// The agent's own status parses (its VmSwap is most likely 0).
	if got := readVmSwap(os.Getpid(), make([]byte, 4096)); got > 1<<40 {
		t.Errorf("readVmSwap(self) = %d; want a plausible size", got)
	}
}

func TestSumResourceUsage(t *testing.T) {
	task := func(rss, swap uint64, pct float64, mem, cpu []string) *structs.TaskResourceUsage {
		return &structs.TaskResourceUsage{ResourceUsage: &structs.ResourceUsage{
			MemoryStats: &structs.MemoryStats{RSS: rss, Swap: swap, Measured: mem},
			CpuStats:    &structs.CpuStats{Percent: pct, UserMode: pct / 2, SystemMode: pct / 2, TotalTicks: pct * 10, Measured: cpu},
		}}
	}
	cases := []struct {
		name     string
		tasks    map[string]*structs.TaskResourceUsage
		wantRSS  uint64
		wantSwap uint64
		wantPct  float64
		wantMem  string
		wantCPU  string
	}{
		{name: "none", tasks: nil},
		{
			name: "nil entries skipped",
			tasks: map[string]*structs.TaskResourceUsage{
				"a": nil,
				"b": {},
				"c": task(10, 1, 5, []string{"RSS"}, []string{"Percent"}),
			},
			wantRSS: 10, wantSwap: 1, wantPct: 5, wantMem: "RSS", wantCPU: "Percent",
		},
		{
			name: "union in task name order",
			tasks: map[string]*structs.TaskResourceUsage{
				"web":   task(100, 0, 50, []string{"Swap", "RSS"}, []string{"User Mode", "Percent"}),
				"db":    task(200, 20, 25, []string{"RSS", "Cache"}, []string{"System Mode", "Percent"}),
				"proxy": task(1, 2, 1, []string{"RSS"}, []string{"Throttled Periods"}),
			},
			wantRSS: 301, wantSwap: 22, wantPct: 76,
			wantMem: "RSS,Cache,Swap",
			wantCPU: "System Mode,Percent,Throttled Periods,User Mode",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Several runs: map order must not matter.
			for range 5 {
				got := SumResourceUsage(tc.tasks)
				m, c := got.MemoryStats, got.CpuStats
				if m.RSS != tc.wantRSS || m.Swap != tc.wantSwap {
					t.Errorf("RSS, Swap = %d, %d; want %d, %d", m.RSS, m.Swap, tc.wantRSS, tc.wantSwap)
				}
				if c.Percent != tc.wantPct || c.UserMode+c.SystemMode != tc.wantPct || c.TotalTicks != tc.wantPct*10 {
					t.Errorf("cpu = %+v; want Percent %v", c, tc.wantPct)
				}
				if got := strings.Join(m.Measured, ","); got != tc.wantMem {
					t.Errorf("memory Measured = %q; want %q", got, tc.wantMem)
				}
				if got := strings.Join(c.Measured, ","); got != tc.wantCPU {
					t.Errorf("cpu Measured = %q; want %q", got, tc.wantCPU)
				}
			}
		})
	}
}

func TestSumResourceUsageDoesNotAlias(t *testing.T) {
	measured := []string{"RSS"}
	tasks := map[string]*structs.TaskResourceUsage{"a": {ResourceUsage: &structs.ResourceUsage{
		MemoryStats: &structs.MemoryStats{Measured: measured[:1:1]},
	}}}
	got := SumResourceUsage(tasks)
	got.MemoryStats.Measured[0] = "changed"
	if measured[0] != "RSS" {
		t.Errorf("task's Measured changed to %q through the sum", measured[0])
	}
}

// keys returns the sorted keys of a Pids map.
func keys(m map[string]*structs.ResourceUsage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
