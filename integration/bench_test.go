package integration

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var benchForwarding = flag.Bool("bench-forwarding", false, "run the forwarding benchmark (make bench)")

// TestBenchForwarding prints p50/p99 latency and req/s of the small client
// calls, direct on the node agent and via the server, at concurrency 1 and
// 8, with the via-server/direct ratio and each process's CPU per call. It
// runs real processes of the built binary. It is a measurement, not a
// test: it runs only with -bench-forwarding and asserts nothing about time.
func TestBenchForwarding(t *testing.T) {
	if !*benchForwarding {
		t.Skip("measurement only: set -bench-forwarding to run (make bench does)")
	}
	pair := startProcPair(t)
	serverURL, nodeURL, sp, cp, nodeID := pair.serverURL, pair.nodeURL, pair.server, pair.node, pair.nodeID

	n := 2000
	if v := os.Getenv("TETHER_BENCH_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	reps := 5
	if v := os.Getenv("TETHER_BENCH_REPS"); v != "" {
		reps, _ = strconv.Atoi(v)
	}

	// One sample is one run of n requests; direct and via-server runs
	// alternate, reps times, and each figure is the median of its samples
	// (the ratio is the median of the per-repetition ratios), so a burst
	// of load from elsewhere on the machine moves one sample, not the
	// result.
	type sample struct {
		rps             float64
		p50, p99        time.Duration
		srvCPU, nodeCPU time.Duration
		errs            int
	}
	measure := func(url string, c int) sample {
		s0, n0 := procCPU(sp.cmd.Process.Pid), procCPU(cp.cmd.Process.Pid)
		lat, elapsed, errs := runLoad(hc, url, n, c)
		s1, n1 := procCPU(sp.cmd.Process.Pid), procCPU(cp.cmd.Process.Pid)
		return sample{rps: float64(n) / elapsed.Seconds(), p50: pct(lat, 50), p99: pct(lat, 99),
			srvCPU: (s1 - s0) / time.Duration(n), nodeCPU: (n1 - n0) / time.Duration(n), errs: errs}
	}
	median := func(xs []float64) float64 {
		sort.Float64s(xs)
		return xs[len(xs)/2]
	}
	medianOf := func(ss []sample, f func(sample) float64) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return median(xs)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nmedians of %d alternating runs of %d requests\n", reps, n)
	fmt.Fprintf(&b, "%-20s %3s %10s %9s %9s %12s %12s %6s\n", "scenario", "c", "req/s", "p50", "p99", "server CPU", "node CPU", "errors")
	var ratios strings.Builder
	for _, ep := range []string{"stats", "metadata"} {
		for _, c := range []int{1, 8} {
			var direct, via []sample
			var perRep []float64
			for i := 0; i < reps; i++ {
				for _, base := range []string{nodeURL, serverURL} {
					url := base + "/v1/client/" + ep + "?node_id=" + nodeID
					if i == 0 {
						runLoad(hc, url, 200, c) // warm up connections
					}
					if base == nodeURL {
						direct = append(direct, measure(url, c))
					} else {
						via = append(via, measure(url, c))
					}
				}
				perRep = append(perRep, via[i].rps/direct[i].rps)
			}
			for _, row := range []struct {
				name string
				ss   []sample
			}{{ep + "-direct", direct}, {ep + "-via-server", via}} {
				errs := 0
				for _, s := range row.ss {
					errs += s.errs
				}
				dur := func(f func(sample) time.Duration) time.Duration {
					return time.Duration(medianOf(row.ss, func(s sample) float64 { return float64(f(s)) }))
				}
				fmt.Fprintf(&b, "%-20s %3d %10.0f %9s %9s %10dµs %10dµs %6d\n", row.name, c,
					medianOf(row.ss, func(s sample) float64 { return s.rps }),
					dur(func(s sample) time.Duration { return s.p50 }).Round(time.Microsecond),
					dur(func(s sample) time.Duration { return s.p99 }).Round(time.Microsecond),
					dur(func(s sample) time.Duration { return s.srvCPU }).Microseconds(),
					dur(func(s sample) time.Duration { return s.nodeCPU }).Microseconds(), errs)
			}
			sort.Float64s(perRep)
			fmt.Fprintf(&ratios, "%s c=%d via-server/direct throughput ratio: %.2f (runs %.2f–%.2f)\n",
				ep, c, median(append([]float64(nil), perRep...)), perRep[0], perRep[len(perRep)-1])
		}
	}
	b.WriteString(ratios.String())
	t.Log(b.String())
}

// procPair is a server process and a node process of the built binary,
// on loopback ports, from Nomad-shaped config files.
type procPair struct {
	serverURL, nodeURL string
	server, node       *proc
	nodeID             string
	nodeDataDir        string
}

// pairFiles are the loopback ports and directories of a one-server,
// one-node pair of processes; write makes their config files.
type pairFiles struct {
	ports              []int // server http, rpc, serf; node http, rpc, serf
	serverDir, nodeDir string
}

func newPairFiles(t *testing.T) *pairFiles {
	return &pairFiles{ports: freePorts(t, 6), serverDir: t.TempDir(), nodeDir: t.TempDir()}
}

// write writes the server's and the node's config files (raw_exec
// enabled), each followed by its extra text (a tls block, say).
func (f *pairFiles) write(t *testing.T, extraServer, extraNode string) (serverCfg, nodeCfg string) {
	t.Helper()
	p := f.ports
	serverCfg = writeFile(t, f.serverDir, "server.hcl", fmt.Sprintf(`
data_dir = %q
bind_addr = "127.0.0.1"
log_level = "WARN"
ports { http = %d  rpc = %d  serf = %d }
server { enabled = true  bootstrap_expect = 1 }
%s`, f.serverDir, p[0], p[1], p[2], extraServer))
	nodeCfg = writeFile(t, f.nodeDir, "client.hcl", fmt.Sprintf(`
data_dir = %q
bind_addr = "127.0.0.1"
log_level = "WARN"
ports { http = %d  rpc = %d  serf = %d }
client { enabled = true  servers = ["127.0.0.1:%d"] }
plugin "raw_exec" { config { enabled = true } }
%s`, f.nodeDir, p[3], p[4], p[5], p[1], extraNode))
	return serverCfg, nodeCfg
}

// startProcPair starts a server and a node (raw_exec enabled) as real
// processes and waits until the node is ready.
func startProcPair(t *testing.T) *procPair {
	t.Helper()
	f := newPairFiles(t)
	serverCfg, clientCfg := f.write(t, "", "")
	p := &procPair{
		serverURL:   fmt.Sprintf("http://127.0.0.1:%d", f.ports[0]),
		nodeURL:     fmt.Sprintf("http://127.0.0.1:%d", f.ports[3]),
		nodeDataDir: f.nodeDir,
	}
	p.server = startProc(t, serverCfg)
	waitFor(t, 20*time.Second, "server up", func() (bool, error) {
		code, _, err := tryGet(p.serverURL + "/v1/status/leader")
		return code == 200, err
	})
	p.node = startProc(t, clientCfg)
	p.nodeID = waitForOneReadyNode(t, p.serverURL)
	return p
}

// runLoad sends n GETs with c workers and returns each latency.
func runLoad(hc *http.Client, url string, n, c int) ([]time.Duration, time.Duration, int) {
	lat := make([]time.Duration, n)
	var next, errs int
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				t0 := time.Now()
				resp, err := hc.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), errs
}

func pct(lat []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := (len(s)*p + 99) / 100
	if idx < 1 {
		idx = 1
	}
	return s[idx-1]
}

// procCPU returns a process's user+system CPU time from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}
