package agent

import (
	"net/http"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tether/structs"
)

// metricsSummary is GET /v1/metrics in Nomad's shape: the in-memory
// sink's last finished interval.
type metricsSummary struct {
	Timestamp string
	Gauges    []metrics.GaugeValue
	Points    []metrics.PointValue
	Counters  []metrics.SampledValue
	Samples   []metrics.SampledValue
}

// errPrometheusDisabled is Nomad's answer to format=prometheus while
// telemetry.prometheus_metrics is off.
var errPrometheusDisabled = structs.NewError(http.StatusUnsupportedMediaType, "Prometheus is not enabled")

// agentMetrics serves GET /v1/metrics: JSON by default,
// ?format=prometheus in the Prometheus text format. Like Nomad, it needs
// no token: load balancers and scrapers call it.
func (a *Agent) agentMetrics(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.NewError(http.StatusMethodNotAllowed, "Invalid method")
	}
	switch format := r.URL.Query().Get("format"); format {
	case "", "json":
	case "prometheus":
		if a.telemetry == nil || a.telemetry.registry == nil {
			return nil, errPrometheusDisabled
		}
		a.promHandler.ServeHTTP(w, r)
		return nil, nil
	default:
		return nil, structs.BadRequest("invalid format %q: want json or prometheus", format)
	}
	if a.telemetry == nil {
		return metricsSummary{Gauges: []metrics.GaugeValue{}, Points: []metrics.PointValue{},
			Counters: []metrics.SampledValue{}, Samples: []metrics.SampledValue{}}, nil
	}
	a.telemetry.flushCalls()
	out, err := a.telemetry.inmem.DisplayMetrics(w, r)
	if err != nil {
		return nil, err
	}
	s := out.(metrics.MetricsSummary)
	for _, g := range s.PrecisionGauges {
		s.Gauges = append(s.Gauges, metrics.GaugeValue{Name: g.Name, Value: float32(g.Value), DisplayLabels: g.DisplayLabels})
	}
	return metricsSummary{Timestamp: s.Timestamp, Gauges: s.Gauges, Points: s.Points, Counters: s.Counters, Samples: s.Samples}, nil
}

// newPromHandler serves the agent's own registry.
func newPromHandler(t *telemetry) http.Handler {
	if t == nil || t.registry == nil {
		return nil
	}
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
