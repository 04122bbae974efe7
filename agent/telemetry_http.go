package agent

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Keys of the HTTP API's request metrics, labelled method (the HTTP
// verb) and route (the path template, "/v1/job/{id}"):
// nomad.tether.http_request.count, a counter, and
// nomad.tether.http_request.time, the time to serve a request in
// milliseconds (a stream's whole life). Series are bounded: routes are
// the router's templates and unknown verbs count as "other".
var (
	keyHTTPCount = []string{"tether", "http_request", "count"}
	keyHTTPTime  = []string{"tether", "http_request", "time"}
)

// httpVerbs are the verbs a method label takes as they are.
var httpVerbs = []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete,
	http.MethodHead, http.MethodOptions, http.MethodPatch}

// newHTTPMetrics returns the request metrics, on.
func newHTTPMetrics() callMetrics {
	return callMetrics{on: true, countKey: keyHTTPCount, timeKey: keyHTTPTime, labelsOf: httpLabels}
}

// httpLabels are the labels of the series "<verb> <route>".
func httpLabels(series string, _, _ int) []labelPair {
	verb, route, _ := strings.Cut(series, " ")
	return []labelPair{{"method", verb}, {"route", route}}
}

// measured returns h, counting and timing its requests under route. The
// series names are made here, once per route, so that a request adds no
// allocation.
func (cm *callMetrics) measured(route string, h http.Handler) http.Handler {
	if cm == nil || !cm.on {
		return h
	}
	names := make(map[string]string, len(httpVerbs))
	for _, v := range httpVerbs {
		names[v] = v + " " + route
	}
	other := "other " + route
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		name, ok := names[r.Method]
		if !ok {
			name = other
		}
		cm.record(name, 0, start, nil)
	})
}

// httpDescs returns the Prometheus descriptions of the request metrics.
func httpDescs(host string) (count, latency *prometheus.Desc) {
	var cl prometheus.Labels
	if host != "" {
		cl = prometheus.Labels{"host": host}
	}
	labels := []string{"method", "route"}
	return prometheus.NewDesc("nomad_tether_http_request_count", "HTTP API requests this agent served, by method and route.", labels, cl),
		prometheus.NewDesc("nomad_tether_http_request_time", "Time this agent took to serve HTTP API requests, in milliseconds.", labels, cl)
}
