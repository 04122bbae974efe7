package agent

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/hcl/ast"
)

// TelemetryConfig is the telemetry block, in Nomad's shape. Metrics are
// always collected in memory (GET /v1/metrics); the other sinks are opt-in.
type TelemetryConfig struct {
	// CollectionInterval is how often the node agent publishes host and
	// allocation metrics and the agent its runtime metrics
	// (telemetry.collection_interval), 1s by default.
	CollectionInterval time.Duration

	// InMemoryInterval is the length of one interval of the in-memory
	// sink that GET /v1/metrics shows (the last finished one)
	// (telemetry.in_memory_collection_interval), 10s by default.
	InMemoryInterval time.Duration

	// InMemoryRetention is how long the in-memory sink keeps intervals
	// (telemetry.in_memory_retention_period), 1m by default.
	InMemoryRetention time.Duration

	// PrometheusMetrics serves GET /v1/metrics?format=prometheus
	// (telemetry.prometheus_metrics). Off, the format answers 415.
	PrometheusMetrics bool

	// PublishAllocationMetrics publishes each running task's CPU and
	// memory (nomad.client.allocs.*) (telemetry.publish_allocation_metrics).
	PublishAllocationMetrics bool

	// PublishNodeMetrics publishes the host's CPU, memory, disk and
	// allocated resources (nomad.client.host.*, nomad.client.allocated.*,
	// nomad.client.unallocated.*) (telemetry.publish_node_metrics).
	PublishNodeMetrics bool

	// DisableHostname leaves the host label (and the host name prefix of
	// statsd gauges) off (telemetry.disable_hostname).
	DisableHostname bool

	// UseNodeName makes the host label the agent's name instead of the
	// machine's host name (telemetry.use_node_name).
	UseNodeName bool

	// StatsdAddress, StatsiteAddress and DatadogAddress ("host:port")
	// send every metric to such an agent as well
	// (telemetry.statsd_address, statsite_address, datadog_address).
	StatsdAddress   string
	StatsiteAddress string
	DatadogAddress  string

	// DatadogTags are "key:value" tags added to every Datadog metric
	// (telemetry.datadog_tags).
	DatadogTags []string

	// PrefixFilter allows ("+nomad.raft") or blocks ("-nomad.client")
	// metrics by name prefix (telemetry.prefix_filter). A later entry in
	// a merged configuration replaces the whole list.
	PrefixFilter []string

	// FilterDefault is whether a metric no prefix_filter entry matches is
	// kept (telemetry.filter_default). Nil means true, as in Nomad.
	FilterDefault *bool

	// DisableDispatchedJobSummaryMetrics is accepted for Nomad's files
	// (telemetry.disable_dispatched_job_summary_metrics): Tether publishes
	// no job summary metrics, dispatched or not.
	DisableDispatchedJobSummaryMetrics bool
}

// Bounds of the intervals: a collection costs a stop-the-world read of
// the runtime's memory statistics, and the in-memory sink keeps
// retention/interval intervals.
const (
	minTelemetryInterval = 10 * time.Millisecond
	maxInmemIntervals    = 1000
)

// maxPrefixFilters bounds telemetry.prefix_filter; each entry costs a
// radix tree insert and a lookup per metric name.
const maxPrefixFilters = 256

// ignoredTelemetry are Nomad's telemetry keys Tether accepts but ignores.
var ignoredTelemetry = keySet(
	"circonus_api_token", "circonus_api_app", "circonus_api_url",
	"circonus_submission_interval", "circonus_submission_url",
	"circonus_check_id", "circonus_check_force_metric_activation",
	"circonus_check_instance_id", "circonus_check_search_tag",
	"circonus_check_display_name", "circonus_check_tags",
	"circonus_broker_id", "circonus_broker_select_tag",
	"disable_tagged_metrics", "backwards_compatible_metrics",
	"disable_rpc_rate_metrics_labels", "disable_quota_utilization_metrics",
	"disable_allocation_hook_metrics",
)

func (p *parser) telemetryBlock(t *TelemetryConfig) block {
	return block{
		path: "telemetry",
		fields: map[string]field{
			"collection_interval":                    p.durationField(&t.CollectionInterval),
			"in_memory_collection_interval":          p.durationField(&t.InMemoryInterval),
			"in_memory_retention_period":             p.durationField(&t.InMemoryRetention),
			"prometheus_metrics":                     p.boolField(&t.PrometheusMetrics),
			"publish_allocation_metrics":             p.boolField(&t.PublishAllocationMetrics),
			"publish_node_metrics":                   p.boolField(&t.PublishNodeMetrics),
			"disable_hostname":                       p.boolField(&t.DisableHostname),
			"use_node_name":                          p.boolField(&t.UseNodeName),
			"statsd_address":                         p.stringField(&t.StatsdAddress),
			"statsite_address":                       p.stringField(&t.StatsiteAddress),
			"datadog_address":                        p.stringField(&t.DatadogAddress),
			"datadog_tags":                           p.replaceListField(&t.DatadogTags),
			"prefix_filter":                          p.replaceListField(&t.PrefixFilter),
			"disable_dispatched_job_summary_metrics": p.boolField(&t.DisableDispatchedJobSummaryMetrics),
			"filter_default": func(it *ast.ObjectItem, path string) error {
				var b bool
				if err := p.boolField(&b)(it, path); err != nil {
					return err
				}
				t.FilterDefault = &b
				return nil
			},
		},
		ignored: ignoredTelemetry,
	}
}

// replaceListField decodes a list of strings into dst, replacing what an
// earlier key of the same file set.
func (p *parser) replaceListField(dst *[]string) field {
	return func(it *ast.ObjectItem, path string) error {
		var l []string
		if err := p.appendListField(&l)(it, path); err != nil {
			return err
		}
		if l == nil {
			l = []string{}
		}
		*dst = l
		return nil
	}
}

func (t TelemetryConfig) copy() TelemetryConfig {
	r := t
	r.DatadogTags = slices.Clone(t.DatadogTags)
	r.PrefixFilter = slices.Clone(t.PrefixFilter)
	if t.FilterDefault != nil {
		b := *t.FilterDefault
		r.FilterDefault = &b
	}
	return r
}

// merge lays o over t with Config.Merge's rules; a set filter_default
// wins either way.
func (t *TelemetryConfig) merge(o *TelemetryConfig) {
	mergeNumber(&t.CollectionInterval, o.CollectionInterval)
	mergeNumber(&t.InMemoryInterval, o.InMemoryInterval)
	mergeNumber(&t.InMemoryRetention, o.InMemoryRetention)
	mergeBool(&t.PrometheusMetrics, o.PrometheusMetrics)
	mergeBool(&t.PublishAllocationMetrics, o.PublishAllocationMetrics)
	mergeBool(&t.PublishNodeMetrics, o.PublishNodeMetrics)
	mergeBool(&t.DisableHostname, o.DisableHostname)
	mergeBool(&t.UseNodeName, o.UseNodeName)
	mergeString(&t.StatsdAddress, o.StatsdAddress)
	mergeString(&t.StatsiteAddress, o.StatsiteAddress)
	mergeString(&t.DatadogAddress, o.DatadogAddress)
	mergeSlice(&t.DatadogTags, o.DatadogTags)
	mergeSlice(&t.PrefixFilter, o.PrefixFilter)
	mergeBool(&t.DisableDispatchedJobSummaryMetrics, o.DisableDispatchedJobSummaryMetrics)
	if o.FilterDefault != nil {
		b := *o.FilterDefault
		t.FilterDefault = &b
	}
}

// validate reports every problem of the block, each naming its key.
func (t *TelemetryConfig) validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"telemetry.collection_interval", t.CollectionInterval},
		{"telemetry.in_memory_collection_interval", t.InMemoryInterval},
		{"telemetry.in_memory_retention_period", t.InMemoryRetention},
	} {
		switch {
		case d.v < 0:
			add("%s %s must not be negative", d.name, d.v)
		case d.v > 0 && d.v < minTelemetryInterval && d.name != "telemetry.in_memory_retention_period":
			add("%s %s is too short: at least %s", d.name, d.v, minTelemetryInterval)
		}
	}
	if iv, rt := t.InMemoryInterval, t.InMemoryRetention; iv > 0 && rt > 0 && rt/iv > maxInmemIntervals {
		add("telemetry.in_memory_retention_period %s keeps more than %d intervals of %s", rt, maxInmemIntervals, iv)
	}
	if t.InMemoryInterval > 0 && t.InMemoryRetention > 0 && t.InMemoryRetention < t.InMemoryInterval {
		add("telemetry.in_memory_retention_period %s must not be shorter than telemetry.in_memory_collection_interval %s",
			t.InMemoryRetention, t.InMemoryInterval)
	}
	for _, a := range []struct{ name, v string }{
		{"telemetry.statsd_address", t.StatsdAddress},
		{"telemetry.statsite_address", t.StatsiteAddress},
		{"telemetry.datadog_address", t.DatadogAddress},
	} {
		if a.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil || port == "" {
			add("%s %q must be host:port", a.name, a.v)
		}
	}
	if len(t.PrefixFilter) > maxPrefixFilters {
		add("telemetry.prefix_filter has %d entries; at most %d are allowed", len(t.PrefixFilter), maxPrefixFilters)
	}
	for _, f := range t.PrefixFilter {
		if len(f) < 2 || (f[0] != '+' && f[0] != '-') {
			add("telemetry.prefix_filter entry %q must start with + (allow) or - (block) and name a prefix", f)
		}
	}
	for _, tag := range t.DatadogTags {
		if strings.TrimSpace(tag) == "" {
			add("telemetry.datadog_tags must not hold an empty tag")
		}
	}
	return errs
}

// filterDefault is filter_default with Nomad's default (true).
func (t *TelemetryConfig) filterDefault() bool { return t.FilterDefault == nil || *t.FilterDefault }
