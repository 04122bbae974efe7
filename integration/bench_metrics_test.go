package integration

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/agent"
)

// BenchmarkMetrics_ForwardedStats measures what telemetry costs a small
// forwarded call: GET /v1/client/stats?node_id= through a server, on two
// in-process clusters of one server and one node each, one with
// telemetry off (DisableTelemetry) and one with everything on
// (prometheus_metrics, publish_node_metrics, publish_allocation_metrics,
// the default 1s collection). Every iteration makes one call on each, in
// turn, so both see the same machine; "on/off" is the ratio of their
// throughputs (1 means free; the target is at least 0.98), the median
// over chunks of 500 iterations, "on/off-total" the ratio of the whole
// run. The sub-benchmarks run 1 and 8 callers.
//
//	go test -run '^$' -bench BenchmarkMetrics_ForwardedStats -benchtime 20000x ./integration/
func BenchmarkMetrics_ForwardedStats(b *testing.B) {
	start := func(name string, on bool) string {
		tele := func(c *agent.Config) {
			c.LogLevel = "WARN"
			if !on {
				c.DisableTelemetry = true
				return
			}
			c.Telemetry.PrometheusMetrics = true
			c.Telemetry.PublishNodeMetrics = true
			c.Telemetry.PublishAllocationMetrics = true
		}
		scfg := baseConfig(b, name+"-server")
		scfg.Server.Enabled, scfg.Server.BootstrapExpect = true, 1
		tele(scfg)
		srv := startAgent(b, scfg)
		ncfg := baseConfig(b, name+"-node")
		ncfg.Client.Enabled = true
		ncfg.Client.Servers = []string{srv.RPCAddr()}
		tele(ncfg)
		node := startAgent(b, ncfg)
		select {
		case <-node.Client().Registered():
		case <-time.After(15 * time.Second):
			b.Fatalf("node %s did not register", name)
		}
		return srv.URL() + "/v1/client/stats?node_id=" + node.Client().NodeID()
	}
	urls := [2]string{start("off", false), start("on", true)}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(url string) error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	for _, u := range urls { // warm both: connections, caches
		for range 200 {
			if err := get(u); err != nil {
				b.Fatal(err)
			}
		}
	}

	// Calls are grouped in chunks of chunkCalls iterations; "on/off" is
	// the median of the chunks' ratios, so a burst of load from elsewhere
	// on the machine moves one chunk, not the result.
	const chunkCalls = 500
	for _, callers := range []int{1, 8} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			chunks := b.N/chunkCalls + 1
			spent := make([][2]atomic.Int64, chunks) // nanoseconds in calls, off and on, per chunk
			var next atomic.Int64
			var failed atomic.Value
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < callers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						// Alternate which side goes first, so neither
						// always follows the other.
						for k := range 2 {
							side := (int(i) + k) % 2
							t0 := time.Now()
							if err := get(urls[side]); err != nil {
								failed.Store(err)
								return
							}
							spent[int(i-1)/chunkCalls][side].Add(int64(time.Since(t0)))
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			var off, on float64
			var ratios []float64
			for c := range spent {
				o, n := float64(spent[c][0].Load()), float64(spent[c][1].Load())
				off, on = off+o, on+n
				if o > 0 && n > 0 && (c+1)*chunkCalls <= b.N {
					ratios = append(ratios, o/n)
				}
			}
			if len(ratios) == 0 {
				ratios = append(ratios, off/on)
			}
			sort.Float64s(ratios)
			b.ReportMetric(off/float64(b.N), "off-ns/call")
			b.ReportMetric(on/float64(b.N), "on-ns/call")
			b.ReportMetric(ratios[len(ratios)/2], "on/off")
			b.ReportMetric(off/on, "on/off-total")
		})
	}
}
