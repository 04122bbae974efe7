package integration

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tether/agent"
)

// specNodeMetrics is the table of /work/shared/spec/operator-surface.md:
// the host and allocation metrics Nomad v1.6.5 emits, with their type
// and label names, which dashboards written for Nomad read.
var specNodeMetrics = []struct {
	name, typ, labels string
}{
	{"nomad_client_allocated_cpu", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_allocated_disk", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_allocated_max_memory", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_allocated_memory", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_allocs_cpu_allocated", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_system", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_throttled_periods", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_throttled_time", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_total_percent", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_total_ticks", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_total_ticks_count", "counter", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_cpu_user", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_memory_allocated", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_memory_rss", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_memory_swap", "gauge", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_allocs_running", "counter", "alloc_id,host,job,namespace,task,task_group"},
	{"nomad_client_host_cpu_idle", "gauge", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_cpu_system", "gauge", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_cpu_total", "gauge", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_cpu_total_percent", "gauge", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_cpu_total_ticks", "gauge", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_cpu_total_ticks_count", "counter", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_cpu_user", "gauge", "cpu,datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_disk_available", "gauge", "datacenter,disk,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_disk_inodes_percent", "gauge", "datacenter,disk,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_disk_size", "gauge", "datacenter,disk,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_disk_used", "gauge", "datacenter,disk,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_disk_used_percent", "gauge", "datacenter,disk,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_memory_available", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_memory_free", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_memory_total", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_host_memory_used", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_unallocated_cpu", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_unallocated_disk", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_unallocated_memory", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_unallocated_network", "gauge", "datacenter,device,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
	{"nomad_client_uptime", "gauge", "datacenter,host,node_class,node_id,node_pool,node_scheduling_eligibility,node_status"},
}

// withTelemetry sets a fast, fully published telemetry block.
func withTelemetry(prometheus bool) agentOpt {
	return func(c *agent.Config) {
		c.Telemetry = agent.TelemetryConfig{
			CollectionInterval:       50 * time.Millisecond,
			InMemoryInterval:         100 * time.Millisecond,
			PrometheusMetrics:        prometheus,
			PublishNodeMetrics:       true,
			PublishAllocationMetrics: true,
		}
	}
}

// scrape reads an agent's Prometheus output with the Prometheus text
// parser.
func scrape(t *testing.T, a *testAgent) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, hdr := do(t, "GET", a.URL()+"/v1/metrics?format=prometheus", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/metrics?format=prometheus = %d %q; want 200", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || !strings.Contains(ct, "version=0.0.4") {
		t.Errorf("Content-Type = %q; want text/plain; version=0.0.4", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the Prometheus output: %v\n%s", err, body)
	}
	return fams
}

func labelNames(m *dto.Metric) string {
	var names []string
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestMetrics_NodeTableAsNomad holds the node's Prometheus output to the
// spec's table: every name, its type and its label names, with a running
// mock task for the allocation metrics.
func TestMetrics_NodeTableAsNomad(t *testing.T) {
	scfg := baseConfig(t, "server1")
	scfg.Server.Enabled, scfg.Server.BootstrapExpect = true, 1
	withTelemetry(true)(scfg)
	srv := startAgent(t, scfg)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withTelemetry(true))
	api := srv.API(t)
	job := &nomad.Job{ID: ptr("metrics"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mockTask("web", map[string]any{"run_for": "1h", "stdout_string": "hello metrics\n"})}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	alloc := waitAllocsStatus(t, api, "metrics", 1, "running")[0]

	var fams map[string]*dto.MetricFamily
	waitFor(t, 15*time.Second, "allocation metrics", func() (bool, error) {
		fams = scrape(t, node)
		return fams["nomad_client_allocs_memory_rss"] != nil && fams["nomad_client_allocs_running"] != nil, nil
	})
	for _, want := range specNodeMetrics {
		f := fams[want.name]
		if f == nil {
			t.Errorf("%s: missing", want.name)
			continue
		}
		if got := strings.ToLower(f.GetType().String()); got != want.typ {
			t.Errorf("%s: type %s; want %s", want.name, got, want.typ)
		}
		for _, m := range f.GetMetric() {
			if got := labelNames(m); got != want.labels {
				t.Errorf("%s: labels %s; want %s", want.name, got, want.labels)
			}
			if strings.HasPrefix(want.name, "nomad_client_allocs_") {
				if got := labelValue(m, "alloc_id"); got != alloc.ID {
					t.Errorf("%s: alloc_id %q; want %q", want.name, got, alloc.ID)
				}
				if got := labelValue(m, "task"); got != "web" {
					t.Errorf("%s: task %q; want web", want.name, got)
				}
			} else if got := labelValue(m, "node_id"); got != node.Client().NodeID() {
				t.Errorf("%s: node_id %q; want %q", want.name, got, node.Client().NodeID())
			}
		}
	}
	if got := fams["nomad_client_allocated_cpu"].GetMetric()[0].GetGauge().GetValue(); got != 100 {
		t.Errorf("nomad_client_allocated_cpu = %v; want 100 (the task's CPU)", got)
	}
	if got := fams["nomad_client_allocs_running"].GetMetric()[0].GetCounter().GetValue(); got != 1 {
		t.Errorf("nomad_client_allocs_running = %v; want 1 (one start)", got)
	}
	for _, name := range []string{"nomad_runtime_num_goroutines", "nomad_runtime_alloc_bytes", "nomad_runtime_heap_objects"} {
		if fams[name] == nil || fams[name].GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s: missing or not a gauge", name)
		}
	}

	// A file read through the server counts its bytes there, by kind.
	waitFor(t, 10*time.Second, "the task's stdout", func() (bool, error) {
		code, body, _ := do(t, "GET", srv.URL()+"/v1/client/fs/cat/"+alloc.ID+"?path=alloc/logs/web.stdout.0", nil)
		return code == http.StatusOK && strings.Contains(body, "hello metrics"), fmt.Errorf("%d %q", code, body)
	})
	var streamed float64
	for _, m := range scrape(t, srv)["nomad_tether_bytes_streamed"].GetMetric() {
		streamed += m.GetCounter().GetValue()
	}
	if streamed < float64(len("hello metrics\n")) {
		t.Errorf("nomad_tether_bytes_streamed on the server = %v; want at least the file's %d bytes", streamed, len("hello metrics\n"))
	}

	// Stopping the job takes the allocation's series away.
	if _, _, err := api.Jobs().Deregister("metrics", false, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "allocation series gone", func() (bool, error) {
		fams = scrape(t, node)
		return fams["nomad_client_allocs_memory_rss"] == nil, nil
	})
}

// TestMetrics_NodeStatusNotStale: a node scraped while it waits for its
// server reports node_status="initializing"; once registered, only
// "ready" series exist (Nomad keeps the old one, frozen).
func TestMetrics_NodeStatusNotStale(t *testing.T) {
	ports := freePorts(t, 1)
	rpcAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	cfg := baseConfig(t, "node1")
	cfg.Client.Enabled = true
	cfg.Client.Servers = []string{rpcAddr}
	withTelemetry(true)(cfg)
	node := startAgent(t, cfg)

	statuses := func() map[string]int {
		got := map[string]int{}
		for _, m := range scrape(t, node)["nomad_client_host_memory_total"].GetMetric() {
			got[labelValue(m, "node_status")]++
		}
		return got
	}
	waitFor(t, 10*time.Second, "initializing series", func() (bool, error) {
		return statuses()["initializing"] == 1, nil
	})

	scfg := baseConfig(t, "server1")
	scfg.Server.Enabled, scfg.Server.BootstrapExpect = true, 1
	scfg.Ports.RPC = ports[0]
	startAgent(t, scfg)
	select {
	case <-node.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatal("node did not register")
	}
	waitFor(t, 10*time.Second, "ready series only", func() (bool, error) {
		got := statuses()
		return len(got) == 1 && got["ready"] == 1, nil
	})
}

// TestMetrics_JSONThroughGoClient decodes /v1/metrics with the official
// client, on a node-only agent (the client's test server polls it there)
// and on a server, and checks Tether's own call metrics after forwarded
// calls.
func TestMetrics_JSONThroughGoClient(t *testing.T) {
	scfg := baseConfig(t, "server1")
	scfg.Server.Enabled, scfg.Server.BootstrapExpect = true, 1
	withTelemetry(true)(scfg)
	srv := startAgent(t, scfg)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withTelemetry(false))
	nodeID := node.Client().NodeID()

	for i := 0; i < 3; i++ {
		if _, err := srv.API(t).Nodes().Stats(nodeID, nil); err != nil {
			t.Fatalf("forwarded stats: %v", err)
		}
	}
	gaugeNames := func(s *nomad.MetricsSummary) []string {
		var out []string
		for _, g := range s.Gauges {
			out = append(out, g.Name)
		}
		return out
	}
	cases := []struct {
		name   string
		a      *testAgent
		gauges []string
		counts []string
	}{
		{"node", node, []string{"nomad.runtime.num_goroutines", "nomad.client.host.memory.total", "nomad.tether.session_connected"}, nil},
		{"server", srv, []string{"nomad.runtime.num_goroutines", "nomad.tether.sessions"}, []string{"nomad.tether.client_call.count"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s *nomad.MetricsSummary
			waitFor(t, 10*time.Second, "metrics in the last interval", func() (bool, error) {
				var err error
				if s, _, err = tc.a.API(t).Operator().MetricsSummary(nil); err != nil {
					return false, err
				}
				names := gaugeNames(s)
				for _, g := range tc.gauges {
					if !slices.Contains(names, g) {
						return false, nil
					}
				}
				return true, nil
			})
			if s.Timestamp == "" {
				t.Errorf("Timestamp is empty")
			}
			for _, g := range s.Gauges {
				if g.Name == "nomad.runtime.num_goroutines" && g.DisplayLabels["host"] == "" {
					t.Errorf("gauge %s has no host label: %v", g.Name, g.DisplayLabels)
				}
			}
		})
	}

	// The forwarded calls in Prometheus: method, outcome, hops.
	fams := scrape(t, srv)
	f := fams["nomad_tether_client_call_count"]
	if f == nil || f.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("nomad_tether_client_call_count: %v; want a counter", f)
	}
	var calls float64
	for _, m := range f.GetMetric() {
		if labelValue(m, "method") == "ClientStats.Stats" && labelValue(m, "outcome") == "ok" && labelValue(m, "hops") == "1" {
			calls += m.GetCounter().GetValue()
		}
	}
	if calls != 3 {
		t.Errorf("ClientStats.Stats ok hops=1 calls = %v; want 3\n%v", calls, f)
	}
	if fams["nomad_tether_client_call_time"].GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("nomad_tether_client_call_time is not a histogram")
	}
	if got := fams["nomad_tether_sessions"].GetMetric()[0].GetGauge().GetValue(); got != 1 {
		t.Errorf("nomad_tether_sessions = %v; want 1", got)
	}
	if got := fams["nomad_tether_sessions_bound"].GetMetric()[0].GetCounter().GetValue(); got < 1 {
		t.Errorf("nomad_tether_sessions_bound = %v; want >= 1", got)
	}
	if fams["nomad_nomad_heartbeat_active"].GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("nomad_nomad_heartbeat_active: %v; want 1 (one node)", fams["nomad_nomad_heartbeat_active"])
	}
	for _, name := range []string{"nomad_nomad_client_register"} { // update_status: the first heartbeat is seconds away
		if fams[name].GetType() != dto.MetricType_SUMMARY {
			t.Errorf("%s: %v; want a summary (the node registered)", name, fams[name])
		}
	}
	if fams["nomad_raft_apply"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("nomad_raft_apply: %v; want a counter, as hashicorp/raft's in Nomad (the node's registration is a raft write)", fams["nomad_raft_apply"])
	}
	if fams["nomad_raft_commitTime"].GetType() != dto.MetricType_SUMMARY {
		t.Errorf("nomad_raft_commitTime: %v; want a summary", fams["nomad_raft_commitTime"])
	}
}

// TestMetrics_BadInput: Nomad's answers to a prometheus format it does
// not serve, a format it does not know and a method it does not take.
func TestMetrics_BadInput(t *testing.T) {
	srv := startServer(t, "server1")
	cases := []struct {
		method, query string
		code          int
		body          string
	}{
		{"GET", "?format=prometheus", http.StatusUnsupportedMediaType, "Prometheus is not enabled"},
		{"GET", "?format=xml", http.StatusBadRequest, `invalid format "xml"`},
		{"PUT", "", http.StatusMethodNotAllowed, "Invalid method"},
		{"GET", "", http.StatusOK, `"Gauges"`},
	}
	for _, tc := range cases {
		code, body, _ := do(t, tc.method, srv.URL()+"/v1/metrics"+tc.query, nil)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s /v1/metrics%s = %d %q; want %d %q", tc.method, tc.query, code, body, tc.code, tc.body)
		}
	}
}

// TestMetrics_NoTokenNeeded: with ACLs on, /v1/metrics still answers
// without a token, as Nomad's does (scrapers and load balancers call it).
func TestMetrics_NoTokenNeeded(t *testing.T) {
	cfg := baseConfig(t, "server1")
	cfg.Server.Enabled, cfg.Server.BootstrapExpect = true, 1
	cfg.ACL.Enabled = true
	withTelemetry(true)(cfg)
	srv := startAgent(t, cfg)
	for _, q := range []string{"", "?format=prometheus"} {
		if code, body, _ := do(t, "GET", srv.URL()+"/v1/metrics"+q, nil); code != http.StatusOK {
			t.Errorf("GET /v1/metrics%s without a token = %d %q; want 200", q, code, body)
		}
	}
	// An ACL-guarded endpoint of the same agent refuses the same caller.
	if code, _, _ := do(t, "GET", srv.URL()+"/v1/agent/self", nil); code != http.StatusForbidden {
		t.Errorf("GET /v1/agent/self without a token = %d; want 403", code)
	}
}

// TestMetrics_HTTPRequests: every request the HTTP API serves is counted
// and timed by route template, in Prometheus and in the JSON summary (the
// official client's TestOperator_MetricsSummary asks a fresh server for
// at least one counter and one sample).
func TestMetrics_HTTPRequests(t *testing.T) {
	cfg := baseConfig(t, "server1")
	cfg.Server.Enabled, cfg.Server.BootstrapExpect = true, 1
	cfg.Telemetry = agent.TelemetryConfig{PrometheusMetrics: true} // Nomad's default intervals
	srv := startAgent(t, cfg)
	api := srv.API(t)
	waitFor(t, 10*time.Second, "a leader", func() (bool, error) {
		_, err := api.Status().Leader()
		return err == nil, nil
	})
	do(t, "BREW", srv.URL()+"/v1/status/leader", nil)

	// The summary shows the current in-memory interval while it is the
	// only one, and after that the last finished one (go-metrics'
	// DisplayMetrics): a server that started just before an interval's
	// end shows the new counts one interval (10 s) later.
	var s *nomad.MetricsSummary
	waitFor(t, 25*time.Second, "counters and samples in the summary", func() (bool, error) {
		if _, _, err := api.Jobs().Info("a/b", nil); err == nil {
			return false, errors.New("Jobs().Info of no job: no error")
		}
		var err error
		s, _, err = api.Operator().MetricsSummary(nil)
		if err != nil {
			return false, err
		}
		for _, c := range s.Counters {
			if c.Name == "nomad.tether.http_request.count" && c.DisplayLabels["route"] == "/v1/job/{id}" {
				return len(s.Samples) > 0, nil
			}
		}
		return false, fmt.Errorf("%d counters, %d samples", len(s.Counters), len(s.Samples))
	})
	var jobInfo bool
	for _, c := range s.Counters {
		if c.Name == "nomad.tether.http_request.count" && c.DisplayLabels["route"] == "/v1/job/{id}" && c.DisplayLabels["method"] == "GET" {
			jobInfo = true
		}
	}
	if !jobInfo {
		t.Errorf("no http_request.count for GET /v1/job/{id} in %+v", s.Counters)
	}

	fams := scrape(t, srv)
	f := fams["nomad_tether_http_request_count"]
	if f == nil || f.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("nomad_tether_http_request_count: %v; want a counter", f)
	}
	got := map[string]float64{}
	for _, m := range f.GetMetric() {
		if labelNames(m) != "host,method,route" {
			t.Errorf("labels %s; want host,method,route", labelNames(m))
		}
		got[labelValue(m, "method")+" "+labelValue(m, "route")] += m.GetCounter().GetValue()
	}
	for _, want := range []string{"GET /v1/job/{id}", "GET /v1/status/leader", "other /v1/status/leader", "GET /v1/metrics"} {
		if got[want] < 1 {
			t.Errorf("%s counted %v times; want at least once (all: %v)", want, got[want], got)
		}
	}
	if fams["nomad_tether_http_request_time"].GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("nomad_tether_http_request_time is not a histogram")
	}
}
