package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/go-metrics/datadog"
	gmprom "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"tether/client"
)

// Defaults of the in-memory sink, as Nomad's: /v1/metrics shows the last
// finished 10s interval.
const (
	defaultInmemInterval  = 10 * time.Second
	defaultInmemRetention = time.Minute
)

// telemetry is one agent's metrics: its own go-metrics instance (never
// the package's global one, so agents in one process do not mix), a
// fanout of the in-memory sink, the Prometheus sink on the agent's own
// registry and the statsd, statsite and Datadog sinks configured, and
// the collection loop that publishes host, allocation, runtime and
// Tether's counters every collection_interval.
//
// Two instances share the sinks: m reaches every sink and carries what
// happens (calls, raft applies); snap reaches every sink but Prometheus
// and carries what is sampled (host, allocations, Tether's totals),
// which Prometheus reads at scrape time from collectors instead, so a
// series whose label values changed (node_status) or whose allocation
// went away is gone at once rather than left frozen.
type telemetry struct {
	cfg    TelemetryConfig
	logger hclog.Logger
	host   string // the host label, "" with disable_hostname

	inmem    *metrics.InmemSink
	registry *prometheus.Registry // nil unless prometheus_metrics
	m        *metrics.Metrics
	snap     *metrics.Metrics
	sinks    metrics.FanoutSink // every sink, shut down with the agent

	calls               callMetrics
	http                callMetrics // HTTP API requests (telemetry_http.go)
	flushMu             sync.Mutex  // serialises flushCalls
	httpCount, httpTime *prometheus.Desc
	callCount, callTime *prometheus.Desc

	// Sources read at collection and scrape time; nil when the agent has
	// no such role. Set before run.
	client     *client.Client
	serverSt   func() map[string]uint64
	agentStats func() map[string]uint64
	streamed   *byteCounters

	node *nodeCollector

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newTelemetry builds the sinks cfg asks for. name is the agent's name
// (the host label with use_node_name).
func newTelemetry(cfg TelemetryConfig, name string, logger hclog.Logger) (*telemetry, error) {
	t := &telemetry{cfg: cfg, logger: logger}
	if !cfg.DisableHostname {
		if cfg.UseNodeName {
			t.host = name
		} else if h, err := os.Hostname(); err == nil {
			t.host = h
		} else {
			t.host = name
		}
	}
	interval, retain := cfg.InMemoryInterval, cfg.InMemoryRetention
	if interval <= 0 {
		interval = defaultInmemInterval
	}
	if retain <= 0 {
		retain = min(max(defaultInmemRetention, interval), interval*maxInmemIntervals)
	}
	t.inmem = metrics.NewInmemSink(interval, retain)

	var ext metrics.FanoutSink
	fail := func(err error) (*telemetry, error) {
		ext.Shutdown()
		return nil, err
	}
	if a := cfg.StatsiteAddress; a != "" {
		s, err := metrics.NewStatsiteSink(a)
		if err != nil {
			return fail(fmt.Errorf("telemetry.statsite_address %q: %w", a, err))
		}
		ext = append(ext, s)
	}
	if a := cfg.StatsdAddress; a != "" {
		s, err := metrics.NewStatsdSink(a)
		if err != nil {
			return fail(fmt.Errorf("telemetry.statsd_address %q: %w", a, err))
		}
		ext = append(ext, s)
	}
	if a := cfg.DatadogAddress; a != "" {
		s, err := datadog.NewDogStatsdSink(a, t.host)
		if err != nil {
			return fail(fmt.Errorf("telemetry.datadog_address %q: %w", a, err))
		}
		s.SetTags(cfg.DatadogTags)
		ext = append(ext, s)
	}

	snapSinks := append(metrics.FanoutSink{t.inmem}, ext...)
	allSinks := snapSinks
	if cfg.PrometheusMetrics {
		t.registry = prometheus.NewRegistry()
		ps, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Registerer: t.registry, Name: "tether"})
		if err != nil {
			return fail(fmt.Errorf("telemetry: prometheus sink: %w", err))
		}
		allSinks = append(metrics.FanoutSink{ps}, snapSinks...)
	}
	t.sinks = ext

	mcfg := metrics.DefaultConfig("nomad")
	mcfg.EnableHostname = false
	mcfg.EnableHostnameLabel = t.host != ""
	mcfg.HostName = t.host
	// Runtime metrics come from the collection loop, which stops with
	// the agent (go-metrics' own loop never stops).
	mcfg.EnableRuntimeMetrics = false
	mcfg.FilterDefault = cfg.filterDefault()
	for _, f := range cfg.PrefixFilter {
		switch f[0] {
		case '+':
			mcfg.AllowedPrefixes = append(mcfg.AllowedPrefixes, f[1:])
		case '-':
			mcfg.BlockedPrefixes = append(mcfg.BlockedPrefixes, f[1:])
		}
	}
	var err error
	if t.m, err = metrics.New(mcfg, allSinks); err != nil {
		return fail(fmt.Errorf("telemetry: %w", err))
	}
	if t.snap, err = metrics.New(mcfg, snapSinks); err != nil {
		return fail(fmt.Errorf("telemetry: %w", err))
	}
	t.calls.on = true
	t.callCount, t.callTime = callDescs(t.host)
	t.http = newHTTPMetrics()
	t.httpCount, t.httpTime = httpDescs(t.host)
	return t, nil
}

// start registers the collectors and starts the collection loop; stop
// ends it.
func (t *telemetry) start() error {
	if t.client != nil && (t.cfg.PublishNodeMetrics || t.cfg.PublishAllocationMetrics) {
		t.node = newNodeCollector(t.client, t.cfg.PublishNodeMetrics, t.cfg.PublishAllocationMetrics, t.host, t.allowed)
	}
	if t.registry != nil {
		var errs []error
		if t.node != nil {
			errs = append(errs, t.registry.Register(t.node))
		}
		errs = append(errs, t.registry.Register(&tetherCollector{t: t}))
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("telemetry: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	interval := t.cfg.CollectionInterval
	if interval <= 0 {
		interval = time.Second
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.collect()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				t.collect()
			}
		}
	}()
	return nil
}

// stop ends the collection loop and flushes and closes the external
// sinks.
func (t *telemetry) stop() {
	if t.cancel != nil {
		t.cancel()
	}
	t.wg.Wait()
	t.sinks.Shutdown()
}

// collect publishes one round: runtime metrics, the node's host and
// allocation metrics, and Tether's totals.
func (t *telemetry) collect() {
	t.m.EmitRuntimeStats()
	if t.node != nil {
		for _, s := range t.node.sample() {
			if s.Counter {
				if s.Value > 0 {
					t.snap.IncrCounterWithLabels(s.Name, float32(s.Value), s.Labels)
				}
				continue
			}
			t.snap.SetGaugeWithLabels(s.Name, float32(s.Value), s.Labels)
		}
	}
	for _, st := range t.tetherStats() {
		t.snap.SetGaugeWithLabels([]string{"tether", st.name}, float32(st.value), nil)
		if alias, ok := nomadAliases[st.name]; ok {
			t.snap.SetGaugeWithLabels(alias, float32(st.value), nil)
		}
	}
	t.flushCalls()
	if t.streamed != nil {
		for _, k := range t.streamed.kinds() {
			t.snap.SetGaugeWithLabels(keyBytesStreamed, float32(k.bytes), []metrics.Label{{Name: "kind", Value: k.kind}})
		}
	}
}

// flushCalls sends the call and request counts gathered since the last
// flush to the interval sinks. The collection loop runs it, and so does
// GET /v1/metrics before it reads the in-memory sink, so that a request
// counted a moment ago is in the answer.
func (t *telemetry) flushCalls() {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	t.calls.flush(t.snap)
	t.http.flush(t.snap)
}

// keyBytesStreamed is nomad.tether.bytes_streamed{kind}.
var keyBytesStreamed = []string{"tether", "bytes_streamed"}

// tetherStat is one of Tether's own totals.
type tetherStat struct {
	name    string
	value   uint64
	counter bool
}

// tetherStats reads Tether's counters and gauges: the server's
// (server.Stats), the node's (client.Stats) and the agent's own.
func (t *telemetry) tetherStats() []tetherStat {
	var out []tetherStat
	add := func(m map[string]uint64) {
		for k, v := range m {
			out = append(out, tetherStat{name: k, value: v, counter: !tetherGauges[k]})
		}
	}
	if t.serverSt != nil {
		add(t.serverSt())
	}
	if t.client != nil {
		add(t.client.Stats())
	}
	if t.agentStats != nil {
		add(t.agentStats())
	}
	return out
}

// tetherGauges are the keys of Stats maps that are levels, not totals.
var tetherGauges = map[string]bool{
	"sessions":          true,
	"heartbeat_timers":  true,
	"data_connections":  true,
	"admission_nodes":   true,
	"streams_open":      true,
	"session_connected": true,
}

// nomadAliases are Tether's levels that Nomad publishes under its own
// name, published under both (gauges).
var nomadAliases = map[string][]string{
	"heartbeat_timers": {"nomad", "heartbeat", "active"}, // nomad.nomad.heartbeat.active
}

// tetherCollector exports Tether's totals to Prometheus at scrape time:
// nomad_tether_<key>, a counter or a gauge.
type tetherCollector struct{ t *telemetry }

func (c *tetherCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: the keys are the Stats maps'

func (c *tetherCollector) Collect(ch chan<- prometheus.Metric) {
	var labels prometheus.Labels
	if c.t.host != "" {
		labels = prometheus.Labels{"host": c.t.host}
	}
	if c.t.allowed("nomad.tether.client_call") {
		c.t.calls.collect(ch, c.t.callCount, c.t.callTime)
	}
	if c.t.allowed("nomad.tether.http_request") {
		c.t.http.collect(ch, c.t.httpCount, c.t.httpTime)
	}
	if c.t.streamed != nil && c.t.allowed("nomad.tether.bytes_streamed") {
		d := prometheus.NewDesc("nomad_tether_bytes_streamed", "Bytes of file and log reads this agent's HTTP API wrote, by kind.",
			[]string{"kind"}, labels)
		for _, k := range c.t.streamed.kinds() {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(k.bytes), k.kind)
		}
	}
	for _, st := range c.t.tetherStats() {
		name := "nomad_tether_" + st.name
		if !c.t.allowed("nomad.tether." + st.name) {
			continue
		}
		typ := prometheus.GaugeValue
		if st.counter {
			typ = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, tetherHelp(st.name), nil, labels), typ, float64(st.value))
		if alias, ok := nomadAliases[st.name]; ok && c.t.allowed("nomad."+strings.Join(alias, ".")) {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("nomad_"+strings.Join(alias, "_"), tetherHelp(st.name), nil, labels),
				prometheus.GaugeValue, float64(st.value))
		}
	}
}

// allowed applies prefix_filter to a metric name collected outside
// go-metrics, the way go-metrics does: the longest matching prefix
// decides, else filter_default.
func (t *telemetry) allowed(name string) bool {
	best, allow := -1, t.cfg.filterDefault()
	for _, f := range t.cfg.PrefixFilter {
		p := f[1:]
		if strings.HasPrefix(name, p) && len(p) > best {
			best, allow = len(p), f[0] == '+'
		}
	}
	return allow
}

func tetherHelp(key string) string {
	if h, ok := tetherHelps[key]; ok {
		return h
	}
	return "Tether: " + strings.ReplaceAll(key, "_", " ")
}

// byteCounters count the bytes of file and log reads this agent's HTTP
// API wrote, by how they came: "local" (this agent's node's own file),
// "data" (a data connection from the node), "raw" (raw messages on an
// RPC stream), "frames" (fs/stream and logs frames, or their plain
// text, from an RPC stream).
type byteCounters struct {
	local, data, raw, frames atomic.Uint64
}

// kinds returns the counters by kind label.
func (b *byteCounters) kinds() []byteKind {
	return []byteKind{{"local", b.local.Load()}, {"data", b.data.Load()}, {"raw", b.raw.Load()}, {"frames", b.frames.Load()}}
}

type byteKind struct {
	kind  string
	bytes uint64
}

// stats returns the agent's own counters: streams open and refused.
func (a *Agent) stats() map[string]uint64 {
	return map[string]uint64{
		"streams_open":    uint64(max(a.streams.open.Load(), 0)),
		"streams_refused": a.streams.rejected.Load(),
	}
}

// tetherHelps describe Tether's totals in the Prometheus output.
var tetherHelps = map[string]string{
	"sessions":               "Node sessions on this server now.",
	"sessions_bound":         "Node sessions bound on this server (session opens).",
	"stale_sessions_dropped": "Node sessions unbound because they closed (session closes).",
	"session_rebinds":        "Node bindings moved to a newer session.",
	"node_registrations":     "Registrations nodes sent to this server.",
	"node_heartbeats":        "Heartbeats nodes sent to this server (heartbeats handled).",
	"route_cache_hits":       "Route lookups answered from the peer route cache (peer).",
	"route_cache_no_path":    "Route lookups answered 'no path' from the cache (miss).",
	"peer_queries":           "Route lookups that asked the peers.",
	"peer_query_misses":      "Peer queries no peer answered with a session (miss).",
	"stale_routes":           "Forwarded calls that hit a stale route.",
	"no_path_retries":        "Calls to a ready node that found no session and looked again after a short wait.",
	"streams_forwarded":      "Streams relayed for a peer.",
	"data_connections":       "Data connections open on this server.",
	"data_calls":             "Bulk reads made as data calls.",
	"acl_denials":            "Client calls refused for the caller's capabilities.",
	"peer_calls_refused":     "Server-to-server calls refused to non-servers (hostile requests).",
	"admission_refused_node": "Node sessions refused by the node's admission bucket.",
	"admission_refused_rate": "Node sessions refused by the server's admission rate.",
	"streams_open":           "File and log streams open on this agent's HTTP API.",
	"streams_refused":        "Streams refused with 429 over the agent's limit.",
	"node_log_rotations":     "Task log files rotated on this node.",
	"node_paths_refused":     "File system paths refused: escapes of the alloc dir, malformed paths.",
	"session_connected":      "1 while this node holds a registered session with a server.",
}
