package agent

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"

	"tether/structs"
)

// Keys of Tether's call metrics, labelled method, outcome and hops:
// nomad.tether.client_call.count, a counter, and
// nomad.tether.client_call.time, the latency in milliseconds (a
// histogram in the Prometheus output; in the other sinks one sample per
// collection interval and series, the interval's mean).
var (
	keyCallCount = []string{"tether", "client_call", "count"}
	keyCallTime  = []string{"tether", "client_call", "time"}
)

// Hops of a client call, the label "hops": how many RPC hops it took
// from the agent that got the HTTP request to the node that answered.
const (
	hopsLocal = 0 // this agent's own node
	hopsNode  = 1 // the server holding the node's session
	hopsPeer  = 2 // the peer server holding it, or a node-only agent's server and on
)

// callBucketsMs are the upper bounds of the latency histogram, in
// milliseconds.
var callBucketsMs = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// callMetrics counts client calls on the call's path with atomics only:
// the method's series are found in a map read through an atomic pointer
// (copied when a method is first seen), the label set by index, then a
// few atomic adds. Sinks read the series later: Prometheus at scrape
// time (collect), the others every collection interval (flush). A call
// allocates nothing, and calls on many cores share no lock.
type callMetrics struct {
	on bool
	// countKey, timeKey and labelsOf name the series: the client call
	// metrics (the zero value) or the HTTP request ones (httpMetrics).
	countKey, timeKey []string
	labelsOf          func(method string, outcome, hops int) []labelPair

	methods atomic.Pointer[map[string]*methodSeries]
	mu      sync.Mutex // serialises adding a method

	// flushed holds, per series, the totals at the last flush (flush
	// runs under telemetry.flushMu: the collection loop and /v1/metrics).
	flushed map[*callSeries]callTotals
}

// outcomes are the values of the "outcome" label, by index.
var outcomes = [...]string{"ok", "4xx", "5xx", "error"}

// methodSeries are one method's series by outcome and hops.
type methodSeries [len(outcomes)][hopsPeer + 1]atomic.Pointer[callSeries]

// callSeries is one label set's totals.
type callSeries struct {
	labels  []metrics.Label // cap == len: go-metrics may append
	values  []string        // label values, for Prometheus
	count   atomic.Uint64
	sumNs   atomic.Uint64
	buckets [17]atomic.Uint64 // len(callBucketsMs) + the +Inf bucket; not cumulative
}

type callTotals struct{ count, sumNs uint64 }

// outcome returns the index in outcomes of a call's result: "ok", the
// HTTP status class of its error ("4xx", "5xx"), or "error".
func outcome(err error) int {
	if err == nil {
		return 0
	}
	var se *structs.Error
	if errors.As(err, &se) {
		switch c := se.StatusCode(); {
		case c >= 400 && c < 500:
			return 1
		case c >= 500:
			return 2
		}
	}
	return 3
}

// record counts one call and its latency.
func (cm *callMetrics) record(method string, hops int, start time.Time, err error) {
	if cm == nil || !cm.on {
		return
	}
	d := time.Since(start)
	hops = min(max(hops, 0), hopsPeer)
	o := outcome(err)
	ms := cm.method(method)
	s := ms[o][hops].Load()
	if s == nil {
		s = cm.newSeries(method, o, hops)
		if !ms[o][hops].CompareAndSwap(nil, s) {
			s = ms[o][hops].Load()
		}
	}
	s.count.Add(1)
	s.sumNs.Add(uint64(max(d, 0)))
	i, _ := slices.BinarySearch(callBucketsMs, float64(d)/float64(time.Millisecond))
	s.buckets[i].Add(1)
}

// method returns the series of method, adding them the first time.
func (cm *callMetrics) method(method string) *methodSeries {
	if m := cm.methods.Load(); m != nil {
		if ms, ok := (*m)[method]; ok {
			return ms
		}
	}
	cm.mu.Lock()
	defer cm.mu.Unlock()
	old := cm.methods.Load()
	if old != nil {
		if ms, ok := (*old)[method]; ok {
			return ms
		}
	}
	next := make(map[string]*methodSeries, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	ms := new(methodSeries)
	next[method] = ms
	cm.methods.Store(&next)
	return ms
}

// each calls f on every series that has seen a call.
func (cm *callMetrics) each(f func(*callSeries)) {
	m := cm.methods.Load()
	if m == nil {
		return
	}
	for _, ms := range *m {
		for o := range ms {
			for h := range ms[o] {
				if s := ms[o][h].Load(); s != nil {
					f(s)
				}
			}
		}
	}
}

// labelPair is one label of a series.
type labelPair struct{ name, value string }

// clientCallLabels are the client call series' labels.
func clientCallLabels(method string, outcome, hops int) []labelPair {
	return []labelPair{{"method", method}, {"outcome", outcomes[outcome]}, {"hops", strconv.Itoa(hops)}}
}

func (cm *callMetrics) newSeries(method string, outcome, hops int) *callSeries {
	of := cm.labelsOf
	if of == nil {
		of = clientCallLabels
	}
	pairs := of(method, outcome, hops)
	s := &callSeries{labels: make([]metrics.Label, 0, len(pairs)), values: make([]string, 0, len(pairs))}
	for _, p := range pairs {
		s.labels = append(s.labels, metrics.Label{Name: p.name, Value: p.value})
		s.values = append(s.values, p.value)
	}
	s.labels = s.labels[:len(s.labels):len(s.labels)]
	return s
}

// flush sends what changed since the last flush to m's sinks: the new
// calls as a counter increment and their mean latency as one sample.
func (cm *callMetrics) flush(m *metrics.Metrics) {
	if cm.flushed == nil {
		cm.flushed = make(map[*callSeries]callTotals)
	}
	cm.each(func(s *callSeries) {
		now := callTotals{s.count.Load(), s.sumNs.Load()}
		prev := cm.flushed[s]
		if n := now.count - prev.count; n > 0 {
			countKey, timeKey := keyCallCount, keyCallTime
			if cm.countKey != nil {
				countKey, timeKey = cm.countKey, cm.timeKey
			}
			m.IncrCounterWithLabels(countKey, float32(n), s.labels)
			mean := float64(now.sumNs-prev.sumNs) / float64(n) / float64(time.Millisecond)
			m.AddSampleWithLabels(timeKey, float32(mean), s.labels)
		}
		cm.flushed[s] = now
	})
}

// callDescs returns the Prometheus descriptions of the call metrics,
// with the host label when host is set.
func callDescs(host string) (count, latency *prometheus.Desc) {
	var cl prometheus.Labels
	if host != "" {
		cl = prometheus.Labels{"host": host}
	}
	labels := []string{"method", "outcome", "hops"}
	return prometheus.NewDesc("nomad_tether_client_call_count", "Client calls this agent routed, by method, outcome and hops.", labels, cl),
		prometheus.NewDesc("nomad_tether_client_call_time", "Latency of the client calls this agent routed, in milliseconds.", labels, cl)
}

// collect reports every series to Prometheus.
func (cm *callMetrics) collect(ch chan<- prometheus.Metric, count, timeDesc *prometheus.Desc) {
	cm.each(func(s *callSeries) {
		n := s.count.Load()
		ch <- prometheus.MustNewConstMetric(count, prometheus.CounterValue, float64(n), s.values...)
		buckets := make(map[float64]uint64, len(callBucketsMs))
		var cum uint64
		for i, ub := range callBucketsMs {
			cum += s.buckets[i].Load()
			buckets[ub] = cum
		}
		total := cum + s.buckets[len(callBucketsMs)].Load()
		sum := float64(s.sumNs.Load()) / float64(time.Millisecond)
		ch <- prometheus.MustNewConstHistogram(timeDesc, total, sum, buckets, s.values...)
	})
}
