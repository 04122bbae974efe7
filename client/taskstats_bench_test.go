package client

import "testing"

// startSleepTasks starts n `sleep 1000` tasks that b's cleanup kills.
func startSleepTasks(b *testing.B, n int) []*TaskHandle {
	b.Helper()
	hs := make([]*TaskHandle, n)
	for i := range hs {
		hs[i] = startTestTask(b, &TaskConfig{Name: "sleep", Command: "sleep", Args: []string{"1000"}})
	}
	return hs
}

// BenchmarkTaskStats measures one sample of one running task. Every call
// scans /proc: a handle never reuses the table of its previous sample.
func BenchmarkTaskStats(b *testing.B) {
	h := startSleepTasks(b, 1)[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Stats(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTaskStats100 measures one sample of each of 100 running tasks,
// as a collector round does: one /proc scan shared by all 100.
func BenchmarkTaskStats100(b *testing.B) {
	hs := startSleepTasks(b, 100)
	b.ReportAllocs()
	for b.Loop() {
		for _, h := range hs {
			if _, err := h.Stats(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkTaskStats100Unshared is BenchmarkTaskStats100 with the shared
// process table disabled (one /proc scan per task), to show what sharing
// saves.
func BenchmarkTaskStats100Unshared(b *testing.B) {
	hs := startSleepTasks(b, 100)
	old := procTableMaxAge
	procTableMaxAge = 0
	b.Cleanup(func() { procTableMaxAge = old })
	b.ReportAllocs()
	for b.Loop() {
		for _, h := range hs {
			if _, err := h.Stats(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkProcTableScan measures one scan of /proc alone.
func BenchmarkProcTableScan(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := scanProcTable(); err != nil {
			b.Fatal(err)
		}
	}
}
