package integration

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var benchTasks = flag.Bool("bench-tasks", false, "run the per-task cost benchmark (make bench)")

// procRSS returns a process's resident set size in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestBenchTasks prints the node agent's RSS and CPU with 0, 10 and 100
// trivial running tasks (each its own allocation), measured on real
// processes. No helper process runs per task. Measurement only: it runs
// with -bench-tasks and asserts nothing about time.
func TestBenchTasks(t *testing.T) {
	if !*benchTasks {
		t.Skip("measurement only: set -bench-tasks to run (make bench does)")
	}
	pair := startProcPair(t)
	serverURL, pid := pair.serverURL, pair.node.cmd.Process.Pid

	measure := func(label string) string {
		// Sample RSS, then CPU over a fixed window.
		rss0 := procRSS(pid)
		c0 := procCPU(pid)
		<-time.After(5 * time.Second) // the measurement window itself
		c1 := procCPU(pid)
		return fmt.Sprintf("%-10s node RSS %6.1f MiB  CPU %5.2f%% of one core", label, float64(rss0)/(1<<20), float64(c1-c0)/float64(5*time.Second)*100)
	}
	var lines []string
	lines = append(lines, measure("0 tasks"))
	baseRSS := procRSS(pid)
	for _, n := range []int{10, 100} {
		body := fmt.Sprintf(`{"Job":{"ID":"idle","Type":"service","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Count":%d,"Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/sleep","args":["100000"]},"Resources":{"CPU":10,"MemoryMB":10}}]}]}}`, n)
		code, resp, _ := do(t, "POST", serverURL+"/v1/jobs", strings.NewReader(body))
		if code != 200 {
			t.Fatalf("register: %d %s", code, resp)
		}
		waitFor(t, 60*time.Second, fmt.Sprintf("%d running", n), func() (bool, error) {
			_, b, err := tryGet(serverURL + "/v1/job/idle/allocations")
			return strings.Count(b, `"ClientStatus":"running"`) == n, err
		})
		line := measure(fmt.Sprintf("%d tasks", n))
		per := float64(procRSS(pid)-baseRSS) / float64(n) / 1024
		lines = append(lines, fmt.Sprintf("%s  (+%.0f KiB RSS per task)", line, per))
	}
	t.Log("\n" + strings.Join(lines, "\n"))
}
