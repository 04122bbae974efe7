package integration

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var benchClusterFlag = flag.Bool("bench-cluster", false, "run the cluster benchmark (forwarding hops, raft write rate, node failover)")

// TestBenchCluster measures, on 3 server and 3 node processes: stats
// latency through the node's own server (0 extra hops) and through
// another server (1 extra hop) in the same run; job registrations per
// second (raft writes) through the leader and through a follower; and the
// time from kill -9 of a node's server until the node answers through the
// others again (median of 5). It is a measurement, not a test: it runs
// only with -bench-cluster and asserts nothing about time.
func TestBenchCluster(t *testing.T) {
	if !*benchClusterFlag {
		t.Skip("measurement only: set -bench-cluster to run (make bench does)")
	}
	c := startProcCluster(t)
	ids := c.nodeIDs(c.all())
	node0 := ids["node0"]
	holder := func() int {
		var self struct {
			Stats map[string]map[string]string `json:"stats"`
		}
		_, body, _ := tryGet(c.nodeURLs[0] + "/v1/agent/self")
		if json.Unmarshal([]byte(body), &self) != nil {
			return -1
		}
		for i, r := range c.serverRPCs {
			if self.Stats["client"]["server"] == r {
				return i
			}
		}
		return -1
	}
	var h int
	waitFor(t, 10*time.Second, "node0's server", func() (bool, error) { h = holder(); return h >= 0, nil })

	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	n := 2000
	report := func(name string, lat []time.Duration, total time.Duration) time.Duration {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("%-34s n=%d p50=%v p99=%v %.0f req/s", name, len(lat), p50, p99, float64(len(lat))/total.Seconds())
		return p50
	}
	run := func(url string) ([]time.Duration, time.Duration) {
		lat := make([]time.Duration, 0, n)
		start := time.Now()
		for i := 0; i < n; i++ {
			s := time.Now()
			resp, err := hc.Get(url)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET %s: %v %v", url, resp, err)
			}
			_, _ = io_Discard(resp)
			lat = append(lat, time.Since(s))
		}
		return lat, time.Since(start)
	}
	other := (h + 1) % 3
	for round := 0; round < 2; round++ { // the first round warms up
		l0, d0 := run(c.serverURLs[h] + "/v1/client/stats?node_id=" + node0)
		l1, d1 := run(c.serverURLs[other] + "/v1/client/stats?node_id=" + node0)
		if round == 1 {
			p0 := report("stats, 0 extra hops (node's server)", l0, d0)
			p1 := report("stats, 1 extra hop (other server)", l1, d1)
			t.Logf("extra hop p50 ratio: %.2fx (+%v)", float64(p1)/float64(p0), p1-p0)
		}
	}

	// Raft write rate: job registrations that cannot be placed (pending),
	// each one job upsert plus a status write.
	leader := c.waitStable(c.all())
	li := 0
	for i, r := range c.serverRPCs {
		if r == leader {
			li = i
		}
	}
	var seq atomic.Int64
	register := func(url string, total, conc int) float64 {
		var wg sync.WaitGroup
		var fails atomic.Int64
		start := time.Now()
		per := total / conc
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					id := fmt.Sprintf("bench-%d", seq.Add(1))
					body := fmt.Sprintf(`{"Job":{"ID":%q,"Datacenters":["nowhere"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`, id)
					req, _ := http.NewRequest("PUT", url+"/v1/jobs", strings.NewReader(body))
					resp, err := hc.Do(req)
					if err != nil || resp.StatusCode != 200 {
						fails.Add(1)
					}
					if resp != nil {
						_, _ = io_Discard(resp)
					}
				}
			}()
		}
		wg.Wait()
		if f := fails.Load(); f > 0 {
			t.Fatalf("%d registrations failed", f)
		}
		return float64(per*conc) / time.Since(start).Seconds()
	}
	for _, conc := range []int{1, 8} {
		t.Logf("job registrations via leader,   c=%d: %.0f/s", conc, register(c.serverURLs[li], 200, conc))
		t.Logf("job registrations via follower, c=%d: %.0f/s", conc, register(c.serverURLs[(li+1)%3], 200, conc))
	}

	// Failover: kill -9 the server node0 is attached to; time until node0
	// answers through a survivor; restart the server; 5 times.
	var times []time.Duration
	for trial := 0; trial < 5; trial++ {
		waitFor(t, 20*time.Second, "node0's server", func() (bool, error) { h = holder(); return h >= 0, nil })
		via := (h + 1) % 3
		killed := time.Now()
		c.servers[h].kill()
		for {
			code, _, _ := tryGet(c.serverURLs[via] + "/v1/client/stats?node_id=" + node0)
			if code == 200 {
				break
			}
			if time.Since(killed) > 30*time.Second {
				t.Fatalf("node0 unreachable 30s after its server's kill")
			}
			<-time.After(5 * time.Millisecond) // polling interval of the measurement
		}
		d := time.Since(killed)
		times = append(times, d)
		t.Logf("failover trial %d: srv%d killed, node0 answers via srv%d after %v", trial, h, via, d.Round(time.Millisecond))
		c.servers[h] = startProc(t, c.serverCfgs[h])
		c.waitStable(c.all())
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("failover after kill -9 of the node's server: median %v (min %v, max %v)", times[2].Round(time.Millisecond),
		times[0].Round(time.Millisecond), times[4].Round(time.Millisecond))
}

// io_Discard drains and closes a response body.
func io_Discard(resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	var buf [4096]byte
	var n int64
	for {
		m, err := resp.Body.Read(buf[:])
		n += int64(m)
		if err != nil {
			return n, nil
		}
	}
}
