package agent

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"

	"tether/structs"
)

// inmemNames returns the names of the gauges and counters in the
// in-memory sink's current interval.
func inmemNames(t *testing.T, tm *telemetry) []string {
	t.Helper()
	data := tm.inmem.Data()
	cur := data[len(data)-1]
	var names []string
	for _, g := range cur.Gauges {
		names = append(names, g.Name)
	}
	for _, c := range cur.Counters {
		names = append(names, c.Name)
	}
	for _, s := range cur.Samples {
		names = append(names, s.Name)
	}
	return names
}

// TestTelemetry_PrefixFilter: prefix_filter and filter_default decide
// per name, in the go-metrics sinks and in the collectors alike.
func TestTelemetry_PrefixFilter(t *testing.T) {
	cases := []struct {
		name    string
		filter  []string
		def     *bool
		present []string
		absent  []string
	}{
		{name: "everything", present: []string{"nomad.runtime.num_goroutines", "nomad.tether.streams_open"}},
		{name: "block runtime", filter: []string{"-nomad.runtime"},
			present: []string{"nomad.tether.streams_open"}, absent: []string{"nomad.runtime.num_goroutines"}},
		{name: "allow only tether", filter: []string{"+nomad.tether"}, def: boolp(false),
			present: []string{"nomad.tether.streams_open"}, absent: []string{"nomad.runtime.num_goroutines"}},
		{name: "longest prefix wins", filter: []string{"-nomad.tether", "+nomad.tether.streams_open"},
			present: []string{"nomad.tether.streams_open"}, absent: []string{"nomad.tether.streams_refused"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := newTelemetry(TelemetryConfig{PrefixFilter: tc.filter, FilterDefault: tc.def, PrometheusMetrics: true},
				"agent1", hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer tm.stop()
			tm.agentStats = func() map[string]uint64 { return map[string]uint64{"streams_open": 1, "streams_refused": 2} }
			tm.collect()
			names := inmemNames(t, tm)
			for _, n := range tc.present {
				if !slices.Contains(names, n) {
					t.Errorf("%s missing from the in-memory sink: %v", n, names)
				}
				if !tm.allowed(n) {
					t.Errorf("allowed(%q) = false; want true", n)
				}
			}
			for _, n := range tc.absent {
				if slices.Contains(names, n) {
					t.Errorf("%s in the in-memory sink; want it filtered", n)
				}
				if tm.allowed(n) {
					t.Errorf("allowed(%q) = true; want false", n)
				}
			}
		})
	}
}

// TestTelemetry_ExternalSinks: with statsd_address, datadog_address or
// statsite_address set, the collection reaches such a listener too (the
// sinks flush on their own timers).
func TestTelemetry_ExternalSinks(t *testing.T) {
	cases := []struct {
		name, network string
		set           func(*TelemetryConfig, string)
		want          string
	}{
		{"statsd", "udp", func(c *TelemetryConfig, a string) { c.StatsdAddress = a }, "nomad.runtime.num_goroutines:"},
		{"datadog", "udp", func(c *TelemetryConfig, a string) { c.DatadogAddress = a; c.DatadogTags = []string{"env:test"} },
			"nomad.runtime.num_goroutines:"},
		{"statsite", "tcp", func(c *TelemetryConfig, a string) { c.StatsiteAddress = a }, "nomad.runtime.num_goroutines:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var addr string
			var read func(deadline time.Time) ([]byte, error)
			buf := make([]byte, 64<<10)
			if tc.network == "udp" {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				addr = pc.LocalAddr().String()
				read = func(deadline time.Time) ([]byte, error) {
					pc.SetReadDeadline(deadline)
					n, _, err := pc.ReadFrom(buf)
					return buf[:n], err
				}
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				addr = ln.Addr().String()
				conns := make(chan net.Conn, 1)
				go func() {
					if c, err := ln.Accept(); err == nil {
						conns <- c
					}
				}()
				var conn net.Conn
				read = func(deadline time.Time) ([]byte, error) {
					if conn == nil {
						select {
						case conn = <-conns:
						case <-time.After(time.Until(deadline)):
							return nil, errors.New("no connection")
						}
					}
					conn.SetReadDeadline(deadline)
					n, err := conn.Read(buf)
					return buf[:n], err
				}
				t.Cleanup(func() {
					if conn != nil {
						conn.Close()
					}
				})
			}
			cfg := TelemetryConfig{DisableHostname: true}
			tc.set(&cfg, addr)
			tm, err := newTelemetry(cfg, "agent1", hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer tm.stop()
			tm.collect()
			var got strings.Builder
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(got.String(), tc.want) {
				b, err := read(deadline)
				if err != nil {
					t.Fatalf("no runtime gauge from the %s sink (got %q): %v", tc.name, got.String(), err)
				}
				got.Write(b)
			}
			if tc.name == "datadog" && !strings.Contains(got.String(), "env:test") {
				t.Errorf("datadog metrics lack the configured tag: %q", got.String())
			}
		})
	}
}

// TestCallMetrics: the outcome label of each kind of error; one series
// per (method, outcome, hops); no allocation per call; the collection
// flush sends the new calls and their mean to the sinks, and Prometheus
// gets a counter and a histogram.
func TestCallMetrics(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{structs.BadRequest("bad"), "4xx"},
		{structs.NewError(503, "No cluster leader"), "5xx"},
		{errors.New("boom"), "error"},
	}
	for _, tc := range cases {
		if got := outcomes[outcome(tc.err)]; got != tc.want {
			t.Errorf("outcome(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}

	cm := &callMetrics{on: true}
	start := time.Now().Add(-3 * time.Millisecond)
	for range 3 {
		cm.record("ClientStats.Stats", hopsNode, start, nil)
	}
	cm.record("ClientStats.Stats", hopsPeer, start, structs.BadRequest("x"))
	if allocs := testing.AllocsPerRun(100, func() { cm.record("ClientStats.Stats", hopsNode, start, nil) }); allocs != 0 {
		t.Errorf("record allocates %v times per call; want 0", allocs)
	}

	sink := metrics.NewInmemSink(time.Minute, time.Minute)
	m, err := metrics.New(&metrics.Config{ServiceName: "nomad", TimerGranularity: time.Millisecond, FilterDefault: true}, sink)
	if err != nil {
		t.Fatal(err)
	}
	cm.flush(m)
	cm.flush(m) // nothing new: no second increment
	data := sink.Data()
	cur := data[len(data)-1]
	var keys []string
	for k, c := range cur.Counters {
		keys = append(keys, k)
		if strings.Contains(k, "hops=1") && c.Sum != 104 {
			t.Errorf("%s sum = %v; want 104 (3, AllocsPerRun's 101)", k, c.Sum)
		}
	}
	slices.Sort(keys)
	want := []string{
		"nomad.tether.client_call.count;method=ClientStats.Stats;outcome=4xx;hops=2",
		"nomad.tether.client_call.count;method=ClientStats.Stats;outcome=ok;hops=1",
	}
	if !slices.Equal(keys, want) {
		t.Errorf("counters = %q; want %q", keys, want)
	}
	for k, s := range cur.Samples {
		if s.Count != 1 || s.Min < 3 {
			t.Errorf("%s: %d samples, min %v; want 1 sample of the mean, >= 3ms", k, s.Count, s.Min)
		}
	}

	reg := prometheus.NewRegistry()
	count, latency := callDescs("h1")
	reg.MustRegister(collectorFunc(func(ch chan<- prometheus.Metric) { cm.collect(ch, count, latency) }))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range fams {
		got[f.GetName()] = f.GetType().String()
		for _, mm := range f.GetMetric() {
			h := mm.GetHistogram()
			if h == nil || !strings.Contains(mm.String(), `value:"ok"`) {
				continue
			}
			if h.GetSampleCount() != 104 || h.GetSampleSum() < 104*3 {
				t.Errorf("histogram count %d, sum %v; want 104 calls of at least 3ms", h.GetSampleCount(), h.GetSampleSum())
			}
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() < 3 && b.GetCumulativeCount() != 0 {
					t.Errorf("bucket le=%v holds %d calls; want 0 (every call took >= 3ms)", b.GetUpperBound(), b.GetCumulativeCount())
				}
			}
		}
	}
	if got["nomad_tether_client_call_count"] != "COUNTER" || got["nomad_tether_client_call_time"] != "HISTOGRAM" {
		t.Errorf("families = %v; want a counter and a histogram", got)
	}
}

// collectorFunc is a prometheus.Collector made of a Collect function.
type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// BenchmarkCallMetrics_Record is what telemetry adds to a call's path,
// from every core at once (RunParallel) on one series, the worst case.
func BenchmarkCallMetrics_Record(b *testing.B) {
	cm := &callMetrics{on: true}
	start := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cm.record("ClientStats.Stats", hopsNode, start, nil)
		}
	})
}
