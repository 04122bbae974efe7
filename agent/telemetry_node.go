package agent

import (
	"strings"
	"sync"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"

	"tether/client"
)

// nodeCollector samples the node's host and allocation metrics once per
// collection_interval (sample) and serves the last round to Prometheus
// (Collect). Only the series of the last round exist: a series whose
// labels changed (node_status initializing → ready) or whose task went
// away is not reported again, unlike a sink that keeps every series it
// was ever given.
type nodeCollector struct {
	c            *client.Client
	node, allocs bool
	host         string
	allow        func(name string) bool // prefix_filter

	mu     sync.Mutex
	starts map[string]uint64  // task starts seen, for allocs.running deltas
	totals map[string]float64 // counter totals by series, last round only
	last   []promSample       // the last round, for Collect
}

// promSample is one series of the last round.
type promSample struct {
	name    string
	keys    []string
	values  []string
	value   float64
	counter bool
}

func newNodeCollector(c *client.Client, node, allocs bool, host string, allow func(string) bool) *nodeCollector {
	return &nodeCollector{c: c, node: node, allocs: allocs, host: host, allow: allow,
		starts: map[string]uint64{}, totals: map[string]float64{}}
}

// sample takes one round and returns it for the other sinks.
func (n *nodeCollector) sample() []client.MetricSample {
	n.mu.Lock()
	defer n.mu.Unlock()
	samples := n.c.MetricSamples(n.node, n.allocs, n.starts)
	last := make([]promSample, 0, len(samples))
	totals := make(map[string]float64, len(n.totals))
	for _, s := range samples {
		if !n.allow("nomad." + strings.Join(s.Name, ".")) {
			continue
		}
		ps := promSample{name: "nomad_" + strings.Join(s.Name, "_"), value: s.Value, counter: s.Counter}
		labels := s.Labels
		if n.host != "" {
			labels = append(labels, metrics.Label{Name: "host", Value: n.host})
		}
		for _, l := range labels {
			ps.keys = append(ps.keys, l.Name)
			ps.values = append(ps.values, l.Value)
		}
		if s.Counter {
			key := ps.name + "\x00" + strings.Join(ps.values, "\x00")
			ps.value = n.totals[key] + s.Value
			totals[key] = ps.value
		}
		last = append(last, ps)
	}
	n.totals, n.last = totals, last
	return samples
}

func (n *nodeCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: series come and go

func (n *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n.mu.Lock()
	last := n.last
	n.mu.Unlock()
	descs := make(map[string]*prometheus.Desc)
	for _, s := range last {
		dk := s.name + "\x00" + strings.Join(s.keys, ",")
		d, ok := descs[dk]
		if !ok {
			d = prometheus.NewDesc(s.name, s.name, s.keys, nil)
			descs[dk] = d
		}
		typ := prometheus.GaugeValue
		if s.counter {
			typ = prometheus.CounterValue
		}
		m, err := prometheus.NewConstMetric(d, typ, s.value, s.values...)
		if err != nil {
			continue
		}
		ch <- m
	}
}
