package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func boolp(b bool) *bool { return &b }

// TestTelemetryConfig_Parse: every key of Nomad's telemetry block, in
// HCL and JSON, and what is refused, with the file, line and key named.
func TestTelemetryConfig_Parse(t *testing.T) {
	cases := []struct {
		name     string
		file     string // agent.hcl unless it ends in .json
		text     string
		want     TelemetryConfig
		warnings []string
		err      string // substring; "" means success
	}{
		{name: "all keys", file: "agent.hcl", text: `telemetry {
  collection_interval                    = "5s"
  in_memory_collection_interval          = "2s"
  in_memory_retention_period             = "30s"
  prometheus_metrics                     = true
  publish_allocation_metrics             = true
  publish_node_metrics                   = true
  disable_hostname                       = true
  use_node_name                          = true
  statsd_address                         = "127.0.0.1:8125"
  statsite_address                       = "127.0.0.1:8126"
  datadog_address                        = "127.0.0.1:8127"
  datadog_tags                           = ["env:prod"]
  prefix_filter                          = ["+nomad.raft", "-nomad.client"]
  filter_default                         = false
  disable_dispatched_job_summary_metrics = true
}`, want: TelemetryConfig{
			CollectionInterval: 5 * time.Second, InMemoryInterval: 2 * time.Second, InMemoryRetention: 30 * time.Second,
			PrometheusMetrics: true, PublishAllocationMetrics: true, PublishNodeMetrics: true,
			DisableHostname: true, UseNodeName: true,
			StatsdAddress: "127.0.0.1:8125", StatsiteAddress: "127.0.0.1:8126", DatadogAddress: "127.0.0.1:8127",
			DatadogTags: []string{"env:prod"}, PrefixFilter: []string{"+nomad.raft", "-nomad.client"},
			FilterDefault: boolp(false), DisableDispatchedJobSummaryMetrics: true,
		}},
		{name: "json", file: "agent.json", text: `{"telemetry": {"collection_interval": "2s", "prometheus_metrics": true, "prefix_filter": ["-nomad.runtime"]}}`,
			want: TelemetryConfig{CollectionInterval: 2 * time.Second, PrometheusMetrics: true, PrefixFilter: []string{"-nomad.runtime"}}},
		{name: "bool as string", file: "agent.hcl", text: `telemetry { prometheus_metrics = "true" }`,
			want: TelemetryConfig{PrometheusMetrics: true}},
		{name: "circonus ignored", file: "agent.hcl", text: "telemetry {\n  circonus_api_token = \"x\"\n}",
			warnings: []string{`config key "telemetry.circonus_api_token" (`}},
		{name: "bad duration", file: "agent.hcl", text: "telemetry {\n  collection_interval = \"1 sec\"\n}",
			err: `agent.hcl:2: telemetry.collection_interval: invalid duration`},
		{name: "duration as number", file: "agent.hcl", text: "telemetry {\n  collection_interval = 10\n}",
			err: `agent.hcl:2: telemetry.collection_interval: expected a duration such as "30s", got number 10`},
		{name: "unknown key", file: "agent.hcl", text: "telemetry {\n  prometheus = true\n}",
			err: `agent.hcl:2: unknown config key "prometheus" in telemetry block`},
		{name: "filter not a list", file: "agent.hcl", text: "telemetry {\n  prefix_filter = \"+nomad\"\n}",
			err: `telemetry.prefix_filter: expected a list of strings`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got, warnings, err := LoadConfig(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("LoadConfig error = %v; want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if !reflect.DeepEqual(got.Telemetry, tc.want) {
				t.Errorf("Telemetry = %+v; want %+v", got.Telemetry, tc.want)
			}
			if len(warnings) != len(tc.warnings) {
				t.Fatalf("warnings = %q; want %d", warnings, len(tc.warnings))
			}
			for i, w := range tc.warnings {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %d = %q; want it to contain %q", i, warnings[i], w)
				}
			}
		})
	}
}

// TestTelemetryConfig_Validate: values that parse but make no sense are
// refused by Validate, naming the key.
func TestTelemetryConfig_Validate(t *testing.T) {
	cases := []struct {
		name string
		set  func(*TelemetryConfig)
		err  string
	}{
		{"defaults", func(*TelemetryConfig) {}, ""},
		{"negative interval", func(c *TelemetryConfig) { c.CollectionInterval = -time.Second },
			"telemetry.collection_interval -1s must not be negative"},
		{"retention shorter than interval", func(c *TelemetryConfig) { c.InMemoryInterval, c.InMemoryRetention = time.Minute, time.Second },
			"telemetry.in_memory_retention_period 1s must not be shorter"},
		{"interval too short", func(c *TelemetryConfig) { c.CollectionInterval = time.Millisecond },
			"telemetry.collection_interval 1ms is too short: at least 10ms"},
		{"in-memory interval too short", func(c *TelemetryConfig) { c.InMemoryInterval = time.Microsecond },
			"telemetry.in_memory_collection_interval 1µs is too short"},
		{"too many in-memory intervals", func(c *TelemetryConfig) { c.InMemoryInterval, c.InMemoryRetention = 10*time.Millisecond, time.Hour },
			"telemetry.in_memory_retention_period 1h0m0s keeps more than 1000 intervals of 10ms"},
		{"statsd without port", func(c *TelemetryConfig) { c.StatsdAddress = "localhost" },
			`telemetry.statsd_address "localhost" must be host:port`},
		{"datadog without port", func(c *TelemetryConfig) { c.DatadogAddress = "dd:" },
			`telemetry.datadog_address "dd:" must be host:port`},
		{"filter without sign", func(c *TelemetryConfig) { c.PrefixFilter = []string{"nomad.raft"} },
			`telemetry.prefix_filter entry "nomad.raft" must start with + (allow) or - (block)`},
		{"filter sign only", func(c *TelemetryConfig) { c.PrefixFilter = []string{"+"} },
			`telemetry.prefix_filter entry "+"`},
		{"too many filters", func(c *TelemetryConfig) { c.PrefixFilter = make([]string, maxPrefixFilters+1) },
			"telemetry.prefix_filter has 257 entries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DevConfig()
			tc.set(&c.Telemetry)
			err := c.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate() = %v; want one containing %q", err, tc.err)
			}
		})
	}
}

// TestTelemetryConfig_Merge: a later file's keys win; filter_default
// set false in a later file turns the default off; lists replace.
func TestTelemetryConfig_Merge(t *testing.T) {
	base := DefaultConfig()
	over := &Config{Telemetry: TelemetryConfig{
		PrometheusMetrics: true, PrefixFilter: []string{"-nomad.client"}, FilterDefault: boolp(false),
	}}
	got := base.Merge(over).Telemetry
	want := TelemetryConfig{CollectionInterval: time.Second, PrometheusMetrics: true,
		PrefixFilter: []string{"-nomad.client"}, FilterDefault: boolp(false)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged = %+v; want %+v", got, want)
	}
	over.Telemetry.PrefixFilter[0] = "changed"
	*over.Telemetry.FilterDefault = true
	if got.PrefixFilter[0] != "-nomad.client" || *got.FilterDefault {
		t.Errorf("merge shares memory with its argument: %+v", got)
	}
}
