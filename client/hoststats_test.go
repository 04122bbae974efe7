package client

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/mem"

	"tether/structs"
)

const pctTolerance = 1e-6

func newTestCollector(t testing.TB, interval time.Duration) *HostStatsCollector {
	t.Helper()
	return NewHostStatsCollector(hclog.NewNullLogger(), t.TempDir(), interval)
}

// waitForSample blocks until the collector holds a sample with a timestamp
// after ts, or fails the test at the deadline.
func waitForSample(t *testing.T, c *HostStatsCollector, ts int64, deadline <-chan time.Time) *structs.HostStats {
	t.Helper()
	for {
		ch := c.updated()
		if hs := c.latest.Load(); hs != nil && hs.Timestamp > ts {
			return copyHostStats(hs)
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no sample newer than %d before the deadline", ts)
		}
	}
}

// cpuCountOK reports whether n is the expected number of CPU entries:
// runtime.NumCPU, or the logical count gopsutil sees when the process's
// affinity is narrower than the host.
func cpuCountOK(n int) bool {
	if n == runtime.NumCPU() {
		return true
	}
	logical, err := cpu.Counts(true)
	return err == nil && n == logical
}

func TestHostStatsLatestBeforeRun(t *testing.T) {
	c := newTestCollector(t, time.Hour)
	start := time.Now()
	hs := c.Latest()
	if hs == nil {
		t.Fatal("Latest returned nil")
	}

	if hs.Memory == nil || hs.Memory.Total == 0 {
		t.Fatalf("Memory = %+v, want Total > 0", hs.Memory)
	}
	if m := hs.Memory; m.Used > m.Total || m.Free > m.Total || m.Available > m.Total {
		t.Errorf("Memory fields exceed Total: %+v", m)
	}

	if !cpuCountOK(len(hs.CPU)) {
		t.Fatalf("len(CPU) = %d, want runtime.NumCPU() = %d", len(hs.CPU), runtime.NumCPU())
	}
	var ticks float64
	for i, s := range hs.CPU {
		if s.CPU != "cpu"+strconv.Itoa(i) {
			t.Errorf("CPU[%d].CPU = %q, want cpu%d", i, s.CPU, i)
		}
		if math.Abs(s.Idle+s.TotalPercent-100) > pctTolerance {
			t.Errorf("%s: Idle %v + TotalPercent %v != 100", s.CPU, s.Idle, s.TotalPercent)
		}
		if s.Total != s.TotalPercent {
			t.Errorf("%s: Total %v != TotalPercent %v", s.CPU, s.Total, s.TotalPercent)
		}
		for name, v := range map[string]float64{"User": s.User, "System": s.System, "Idle": s.Idle, "TotalPercent": s.TotalPercent} {
			if v < 0 || v > 100 || math.IsNaN(v) {
				t.Errorf("%s: %s = %v out of [0,100]", s.CPU, name, v)
			}
		}
		if s.User+s.System > s.TotalPercent+pctTolerance {
			t.Errorf("%s: User %v + System %v > TotalPercent %v", s.CPU, s.User, s.System, s.TotalPercent)
		}
		ticks += s.TotalTicks
	}
	if math.Abs(ticks-hs.CPUTicksConsumed) > 1e-6 {
		t.Errorf("CPUTicksConsumed = %v, want Σ TotalTicks = %v", hs.CPUTicksConsumed, ticks)
	}
	if hs.CPUTicksConsumed < 0 || hs.CPUTicksConsumed > c.CPUTotalTicks()+1e-6 {
		t.Errorf("CPUTicksConsumed = %v outside [0, %v]", hs.CPUTicksConsumed, c.CPUTotalTicks())
	}

	if hs.DiskStats == nil {
		t.Error("DiskStats is nil, want a non-nil slice")
	}
	for _, d := range hs.DiskStats {
		if d.Mountpoint == "" || d.Used > d.Size || d.UsedPercent < 0 || d.UsedPercent > 100 {
			t.Errorf("bad disk entry %+v", d)
		}
	}

	a := hs.AllocDirStats
	if a == nil || a.Size == 0 {
		t.Fatalf("AllocDirStats = %+v, want Size > 0", a)
	}
	if a.Device != "" || a.Mountpoint != "" {
		t.Errorf("AllocDirStats Device/Mountpoint = %q/%q, want empty", a.Device, a.Mountpoint)
	}
	if a.Used > a.Size || a.Available > a.Size || a.UsedPercent < 0 || a.UsedPercent > 100 {
		t.Errorf("AllocDirStats not sane: %+v", a)
	}

	if hs.DeviceStats == nil || len(hs.DeviceStats) != 0 {
		t.Errorf("DeviceStats = %#v, want empty non-nil", hs.DeviceStats)
	}
	if hs.Uptime == 0 {
		t.Error("Uptime = 0")
	}
	ts := time.Unix(0, hs.Timestamp)
	if ts.Before(start.Add(-time.Minute)) || ts.After(time.Now()) {
		t.Errorf("Timestamp %v not within the last minute", ts)
	}
}

func TestHostStatsJSONKeys(t *testing.T) {
	hs := newTestCollector(t, time.Hour).Latest()
	b, err := json.Marshal(hs)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Memory", "CPU", "DiskStats", "AllocDirStats", "DeviceStats", "Uptime", "Timestamp", "CPUTicksConsumed"} {
		if _, ok := top[k]; !ok {
			t.Errorf("missing top-level key %q in %s", k, b)
		}
	}
	if got := string(top["DeviceStats"]); got != "[]" {
		t.Errorf(`"DeviceStats" = %s, want []`, got)
	}
	if got := string(top["DiskStats"]); got == "null" {
		t.Error(`"DiskStats" is null`)
	}

	checkKeys := func(what string, raw json.RawMessage, keys ...string) {
		t.Helper()
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: missing key %q in %s", what, k, raw)
			}
		}
		if len(m) != len(keys) {
			t.Errorf("%s: %d keys, want %d: %s", what, len(m), len(keys), raw)
		}
	}
	diskKeys := []string{"Device", "Mountpoint", "Size", "Used", "Available", "UsedPercent", "InodesUsedPercent"}
	checkKeys("Memory", top["Memory"], "Total", "Available", "Used", "Free")
	checkKeys("AllocDirStats", top["AllocDirStats"], diskKeys...)

	var cpus []json.RawMessage
	if err := json.Unmarshal(top["CPU"], &cpus); err != nil {
		t.Fatal(err)
	}
	if len(cpus) == 0 {
		t.Fatal("CPU is empty")
	}
	for _, c := range cpus {
		checkKeys("CPU entry", c, "CPU", "User", "System", "Idle", "Total", "TotalPercent", "TotalTicks")
	}
	var disks []json.RawMessage
	if err := json.Unmarshal(top["DiskStats"], &disks); err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		checkKeys("DiskStats entry", d, diskKeys...)
	}
}

func TestHostStatsRunUpdatesTimestamp(t *testing.T) {
	c := newTestCollector(t, 10*time.Millisecond)
	first := c.Latest()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.After(10 * time.Second)
	second := waitForSample(t, c, first.Timestamp, deadline)
	// And again, driven by the ticker rather than Run's initial collection.
	third := waitForSample(t, c, second.Timestamp, deadline)
	if third.Timestamp <= first.Timestamp {
		t.Fatalf("timestamp did not advance: %d then %d", first.Timestamp, third.Timestamp)
	}
}

func TestHostStatsRunStopsOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cancelFirst   bool
		waitForSample bool
	}{
		{name: "already cancelled", cancelFirst: true},
		{name: "cancelled while running", waitForSample: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCollector(t, 10*time.Millisecond)
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancelFirst {
				cancel()
			}
			done := make(chan struct{})
			go func() { defer close(done); c.Run(ctx) }()
			if tc.waitForSample {
				waitForSample(t, c, 0, time.After(10*time.Second))
			}
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after ctx was cancelled")
			}
		})
	}
}

func TestHostStatsConcurrentLatest(t *testing.T) {
	c := newTestCollector(t, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				hs := c.Latest()
				// Callers own their copy: writing to it must not race with
				// the collector or other readers.
				hs.Memory.Total = 0
				for _, s := range hs.CPU {
					s.Idle = -1
				}
				hs.AllocDirStats.Size = 0
				hs.CPU = append(hs.CPU, &structs.HostCPUStats{})
				_ = c.CPUTotalTicks()
			}
		}()
	}
	// Let several collections happen while the readers run.
	deadline := time.After(10 * time.Second)
	var ts int64
	for range 5 {
		ts = waitForSample(t, c, ts, deadline).Timestamp
	}
	close(stop)
	wg.Wait()
	cancel()
	<-done

	hs := c.Latest()
	if hs.Memory.Total == 0 || hs.AllocDirStats.Size == 0 || !cpuCountOK(len(hs.CPU)) {
		t.Fatalf("stored sample was modified through a copy: %+v", hs)
	}
	for _, s := range hs.CPU {
		if s.Idle < 0 {
			t.Fatal("stored CPU entry was modified through a copy")
		}
	}
}

func TestHostStatsCollectConcurrent(t *testing.T) {
	c := newTestCollector(t, time.Hour)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if err := c.Collect(); err != nil {
					t.Error(err)
				}
				_ = c.Latest()
			}
		}()
	}
	wg.Wait()
}

func TestHostStatsCPUPercents(t *testing.T) {
	zero := cpu.TimesStat{}
	base := cpu.TimesStat{CPU: "cpu0", User: 100, System: 50, Idle: 800, Nice: 10, Iowait: 20, Irq: 5, Softirq: 5, Steal: 10}
	add := func(t cpu.TimesStat, f func(*cpu.TimesStat)) cpu.TimesStat { f(&t); return t }

	tests := []struct {
		name                      string
		prev, cur                 cpu.TimesStat
		idle, user, system, total float64
	}{
		{
			name: "since boot (zero prev)",
			prev: zero,
			cur:  cpu.TimesStat{User: 30, System: 10, Idle: 60},
			idle: 60, user: 30, system: 10, total: 40,
		},
		{
			name: "all busy fields count toward total",
			prev: base,
			cur: add(base, func(t *cpu.TimesStat) {
				t.User += 10
				t.System += 10
				t.Nice += 5
				t.Iowait += 5
				t.Irq += 5
				t.Softirq += 5
				t.Steal += 5
				t.Guest += 3
				t.GuestNice += 2
				t.Idle += 50
			}),
			idle: 50, user: 10, system: 10, total: 50,
		},
		{
			name: "fully idle",
			prev: base,
			cur:  add(base, func(t *cpu.TimesStat) { t.Idle += 4 }),
			idle: 100, user: 0, system: 0, total: 0,
		},
		{
			name: "fully busy",
			prev: base,
			cur:  add(base, func(t *cpu.TimesStat) { t.User += 3; t.System += 1 }),
			idle: 0, user: 75, system: 25, total: 100,
		},
		{
			name: "no time passed (NaN) is idle",
			prev: base,
			cur:  base,
			idle: 100, user: 0, system: 0, total: 0,
		},
		{
			name: "zero both (NaN) is idle",
			prev: zero,
			cur:  zero,
			idle: 100, user: 0, system: 0, total: 0,
		},
		{
			name: "counters went backwards (negative) is idle",
			prev: base,
			cur:  add(base, func(t *cpu.TimesStat) { t.User -= 10; t.Idle += 20 }),
			idle: 100, user: 0, system: 0, total: 0,
		},
		{
			name: "total went backwards (negative delta total) is idle",
			prev: base,
			cur:  zero,
			idle: 100, user: 0, system: 0, total: 0,
		},
		{
			name: "infinite counter is idle",
			prev: base,
			cur:  add(base, func(t *cpu.TimesStat) { t.User = math.Inf(1) }),
			idle: 100, user: 0, system: 0, total: 0,
		},
		{
			name: "NaN counter is idle",
			prev: base,
			cur:  add(base, func(t *cpu.TimesStat) { t.Idle = math.NaN() }),
			idle: 100, user: 0, system: 0, total: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idle, user, system, total := cpuPercents(tc.prev, tc.cur)
			got := [4]float64{idle, user, system, total}
			want := [4]float64{tc.idle, tc.user, tc.system, tc.total}
			for i := range got {
				if math.Abs(got[i]-want[i]) > pctTolerance {
					t.Fatalf("cpuPercents = (idle, user, system, total) %v, want %v", got, want)
				}
			}
			if math.Abs(idle+total-100) > pctTolerance {
				t.Errorf("idle %v + total %v != 100", idle, total)
			}
		})
	}
}

func TestHostStatsCPUStats(t *testing.T) {
	prev := map[string]cpu.TimesStat{
		"cpu0": {CPU: "cpu0", User: 10, Idle: 90},
		"cpu1": {CPU: "cpu1", User: 10, Idle: 90},
	}
	tests := []struct {
		name       string
		prev       map[string]cpu.TimesStat
		cur        []cpu.TimesStat
		totalTicks float64
		wantPct    []float64 // TotalPercent per CPU
		wantTicks  []float64
		consumed   float64
	}{
		{
			name:       "empty",
			cur:        nil,
			totalTicks: 4000,
		},
		{
			name: "two cpus against previous",
			prev: prev,
			cur: []cpu.TimesStat{
				{CPU: "cpu0", User: 60, Idle: 140}, // 50 busy / 100 → 50%
				{CPU: "cpu1", User: 10, Idle: 190}, // idle → 0%
			},
			totalTicks: 4000, // 2000 MHz per CPU
			wantPct:    []float64{50, 0},
			wantTicks:  []float64{1000, 0},
			consumed:   1000,
		},
		{
			name: "unknown cpu compares against zero",
			prev: prev,
			cur: []cpu.TimesStat{
				{CPU: "cpu0", User: 35, Idle: 165}, // 25 busy / 100 → 25%
				{CPU: "cpu7", User: 75, Idle: 25},  // since boot → 75%
			},
			totalTicks: 2000,
			wantPct:    []float64{25, 75},
			wantTicks:  []float64{250, 750},
			consumed:   1000,
		},
		{
			name:       "nil prev (first sample)",
			cur:        []cpu.TimesStat{{CPU: "cpu0", System: 1, Idle: 3}},
			totalTicks: 1000,
			wantPct:    []float64{25},
			wantTicks:  []float64{250},
			consumed:   250,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, consumed := cpuStats(tc.prev, tc.cur, tc.totalTicks)
			if got == nil {
				t.Fatal("cpuStats returned nil slice")
			}
			if len(got) != len(tc.cur) {
				t.Fatalf("len = %d, want %d", len(got), len(tc.cur))
			}
			for i, s := range got {
				if s.CPU != tc.cur[i].CPU {
					t.Errorf("[%d].CPU = %q, want %q", i, s.CPU, tc.cur[i].CPU)
				}
				if math.Abs(s.TotalPercent-tc.wantPct[i]) > pctTolerance || s.Total != s.TotalPercent {
					t.Errorf("[%d] TotalPercent/Total = %v/%v, want %v", i, s.TotalPercent, s.Total, tc.wantPct[i])
				}
				if math.Abs(s.TotalTicks-tc.wantTicks[i]) > 1e-6 {
					t.Errorf("[%d] TotalTicks = %v, want %v", i, s.TotalTicks, tc.wantTicks[i])
				}
			}
			if math.Abs(consumed-tc.consumed) > 1e-6 {
				t.Errorf("consumed = %v, want %v", consumed, tc.consumed)
			}
		})
	}
}

func TestHostStatsMemoryUsed(t *testing.T) {
	tests := []struct {
		name string
		goos string
		vm   mem.VirtualMemoryStat
		want uint64
	}{
		{
			name: "linux formula",
			goos: "linux",
			// Cached already includes SReclaimable (gopsutil v4).
			vm:   mem.VirtualMemoryStat{Total: 1000, Free: 100, Buffers: 50, Cached: 250, Sreclaimable: 50, Available: 500, Used: 500},
			want: 600,
		},
		{
			name: "linux underflow falls back to gopsutil",
			goos: "linux",
			vm:   mem.VirtualMemoryStat{Total: 100, Free: 80, Buffers: 30, Cached: 30, Used: 7},
			want: 7,
		},
		{
			name: "other OS uses gopsutil",
			goos: "darwin",
			vm:   mem.VirtualMemoryStat{Total: 1000, Free: 100, Buffers: 50, Cached: 250, Used: 444},
			want: 444,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := memoryUsed(tc.goos, &tc.vm); got != tc.want {
				t.Fatalf("memoryUsed = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestHostStatsMemoryMatchesProc checks the Linux Used formula against
// /proc/meminfo read directly: Total − Free − Buffers − Cached − SReclaimable.
func TestHostStatsMemoryMatchesProc(t *testing.T) {
	f, err := os.Open("/proc/meminfo") // Tether's nodes run Linux
	if err != nil {
		t.Fatal(err)
	}
	kb := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 {
			v, _ := strconv.ParseUint(fields[1], 10, 64)
			kb[strings.TrimSuffix(fields[0], ":")] = v * 1024
		}
	}
	f.Close()
	want := kb["MemTotal"] - kb["MemFree"] - kb["Buffers"] - kb["Cached"] - kb["SReclaimable"]

	vm, err := mem.VirtualMemory()
	if err != nil {
		t.Fatal(err)
	}
	got := memoryStats(vm)
	if got.Total != kb["MemTotal"] {
		t.Errorf("Total = %d, want MemTotal %d", got.Total, kb["MemTotal"])
	}
	// Memory moves between the two reads; allow 2% of the total.
	if diff := math.Abs(float64(got.Used) - float64(want)); diff > 0.02*float64(got.Total) {
		t.Errorf("Used = %d, want ≈ %d (diff %.0f)", got.Used, want, diff)
	}
}

func TestHostStatsDiskStatsNaN(t *testing.T) {
	got := diskStats(&disk.UsageStat{Total: 10, Used: 4, Free: 6, UsedPercent: math.NaN(), InodesUsedPercent: math.Inf(1)})
	want := structs.HostDiskStats{Size: 10, Used: 4, Available: 6}
	if *got != want {
		t.Fatalf("diskStats = %+v, want %+v", *got, want)
	}
}

func TestHostStatsAllocDirError(t *testing.T) {
	c := NewHostStatsCollector(nil, filepath.Join(t.TempDir(), "missing"), 0)
	if c.interval != time.Second {
		t.Errorf("interval = %v, want 1s default", c.interval)
	}
	if err := c.Collect(); err == nil {
		t.Error("Collect with a missing alloc dir returned no error")
	}
	hs := c.Latest()
	if hs.AllocDirStats == nil || *hs.AllocDirStats != (structs.HostDiskStats{}) {
		t.Errorf("AllocDirStats = %+v, want zero struct", hs.AllocDirStats)
	}
	if hs.Memory.Total == 0 || len(hs.CPU) == 0 {
		t.Error("other stats missing when only the alloc dir failed")
	}
}

func TestHostStatsCPUTotalTicks(t *testing.T) {
	c := newTestCollector(t, time.Hour)
	detected := c.CPUTotalTicks()
	if detected <= 0 {
		t.Fatalf("detected CPUTotalTicks = %v", detected)
	}
	tests := []struct {
		name string
		set  int
		want float64
	}{
		{"override", 12345, 12345},
		{"zero restores detection", 0, detected},
		{"negative restores detection", -5, detected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.SetCPUTotalCompute(tc.set)
			if got := c.CPUTotalTicks(); got != tc.want {
				t.Fatalf("CPUTotalTicks = %v, want %v", got, tc.want)
			}
		})
	}

	// The override feeds the per-CPU ticks.
	c.SetCPUTotalCompute(1000)
	hs := c.Latest()
	for _, s := range hs.CPU {
		want := s.TotalPercent / 100 * 1000 / float64(len(hs.CPU))
		if math.Abs(s.TotalTicks-want) > 1e-6 {
			t.Errorf("%s TotalTicks = %v, want %v", s.CPU, s.TotalTicks, want)
		}
	}
}

func TestHostStatsCopyIsDeep(t *testing.T) {
	in := &structs.HostStats{
		Memory:        &structs.HostMemoryStats{Total: 1},
		CPU:           []*structs.HostCPUStats{{CPU: "cpu0", Idle: 1}},
		DiskStats:     []*structs.HostDiskStats{{Device: "d", Size: 1}},
		AllocDirStats: &structs.HostDiskStats{Size: 1},
		DeviceStats: []*structs.DeviceGroupStats{{
			Name:          "g",
			InstanceStats: map[string]*structs.DeviceStats{"i": {}},
		}},
		Uptime: 3,
	}
	out := copyHostStats(in)
	out.Memory.Total = 9
	out.CPU[0].Idle = 9
	out.DiskStats[0].Size = 9
	out.AllocDirStats.Size = 9
	out.DeviceStats[0].Name = "x"
	out.DeviceStats[0].InstanceStats["j"] = nil
	if in.Memory.Total != 1 || in.CPU[0].Idle != 1 || in.DiskStats[0].Size != 1 ||
		in.AllocDirStats.Size != 1 || in.DeviceStats[0].Name != "g" || len(in.DeviceStats[0].InstanceStats) != 1 {
		t.Fatalf("copy shares memory with the original: %+v", in)
	}
	if out.Uptime != 3 {
		t.Errorf("Uptime not copied")
	}
}
