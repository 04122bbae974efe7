package agent

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"tether/server"
)

// Default ports, the same as Nomad's.
const (
	// DefaultHTTPPort is the port of the HTTP API.
	DefaultHTTPPort = 4646

	// DefaultRPCPort is the port servers listen on for node agents and
	// peer servers.
	DefaultRPCPort = 4647

	// DefaultSerfPort is the port servers use for membership (gossip).
	DefaultSerfPort = 4648
)

// Config is the agent configuration, in Nomad's agent file shape.
//
// A Config returned by LoadConfig holds only what the files set; every
// other field is the zero value. Merge it onto DefaultConfig or DevConfig
// to get a complete configuration, then call NormalizeAddrs and Validate
// before handing it to New.
type Config struct {
	// Name is the node name (name). DefaultConfig sets it to the host name.
	Name string

	// Datacenter is the datacenter of this agent (datacenter), "dc1" by
	// default.
	Datacenter string

	// Region is the region of this agent (region), "global" by default.
	Region string

	// DataDir is the directory for persistent state (data_dir). It is
	// required unless DevMode is set; in dev mode the agent makes a fresh
	// temporary directory when DataDir is empty.
	DataDir string

	// BindAddr is the address every listener binds to (bind_addr),
	// "0.0.0.0" by default and "127.0.0.1" in dev mode.
	BindAddr string

	// LogLevel is one of TRACE, DEBUG, INFO, WARN or ERROR, in any case
	// (log_level). "INFO" by default and "DEBUG" in dev mode.
	LogLevel string

	// LogJSON makes the agent log JSON lines instead of text (log_json).
	LogJSON bool

	// EnableDebug serves Go's profiler under /debug/pprof/ (enable_debug),
	// as Nomad does.
	EnableDebug bool

	// GOMAXPROCSGovernor lets the tether command adapt GOMAXPROCS to the
	// CPU the process uses, between 2 and the runtime's default
	// (gomaxprocs_governor, agent/procs.go). Off by default, in dev mode
	// too: it changes the whole process. The GOMAXPROCS environment
	// variable still turns it off. A reload can turn it on or off.
	GOMAXPROCSGovernor bool

	// Advertise holds the addresses other agents use to reach this one
	// (advertise). Empty fields are filled by NormalizeAddrs.
	Advertise AdvertiseConfig

	// Ports holds the listener ports (ports).
	Ports PortsConfig

	// Server holds the server role's settings (server).
	Server ServerConfig

	// Client holds the node agent role's settings (client).
	Client ClientConfig

	// ACL holds the ACL settings (acl).
	ACL ACLConfig

	// TLS holds the TLS settings (tls).
	TLS TLSConfig

	// Limits holds the connection limits (limits).
	Limits LimitsConfig

	// Telemetry holds the metrics settings (telemetry), agent/telemetry.go.
	Telemetry TelemetryConfig

	// UI holds the web page's settings (ui), agent/ui.go.
	UI UIConfig

	// Plugins holds the task driver plugin blocks (plugin "NAME" { ... }),
	// keyed by plugin name. A nil map means no plugin block.
	Plugins map[string]*PluginConfig

	// DevMode marks a development agent (tether agent -dev): a server and
	// a node agent in one process, in-memory state, raw_exec and
	// mock_driver enabled.
	DevMode bool

	// Files lists the configuration files that were loaded, in the order
	// they were merged.
	Files []string

	// DisableTelemetry turns the agent's metrics off: /v1/metrics answers
	// an empty summary, and nothing is collected. Nomad has no such key;
	// it is never read from files (benchmarks compare with and without).
	DisableTelemetry bool

	// ServerTuning, when set, adjusts the server's configuration just
	// before the server is created (raft timeouts, heartbeat TTLs). It is
	// never read from files; tests and embedders set it. Merge keeps the
	// receiver's.
	ServerTuning func(*server.Config)
}

// AdvertiseConfig holds the advertised addresses (advertise). Each is
// "host" or "host:port"; NormalizeAddrs fills empty ones and appends the
// matching port from PortsConfig when none is given.
type AdvertiseConfig struct {
	// HTTP is the address of the HTTP API (advertise.http).
	HTTP string

	// RPC is the address of the RPC listener (advertise.rpc).
	RPC string

	// Serf is the address used for server membership (advertise.serf).
	Serf string
}

// PortsConfig holds the listener ports (ports).
type PortsConfig struct {
	// HTTP is the HTTP API port (ports.http), 4646 by default.
	HTTP int

	// RPC is the RPC port (ports.rpc), 4647 by default.
	RPC int

	// Serf is the membership port (ports.serf), 4648 by default.
	Serf int
}

// UIConfig is the ui block. Nomad's other keys in it (consul, vault,
// label, content_security_policy) are accepted and ignored with a warning.
type UIConfig struct {
	// Enabled serves the web page at /ui/ (ui.enabled). Nil, the
	// default, means on, as in Nomad.
	Enabled *bool
}

// IsEnabled reports whether the page is served.
func (u UIConfig) IsEnabled() bool { return u.Enabled == nil || *u.Enabled }

// LimitsConfig is the limits block. Nomad's other keys in it
// (https_handshake_timeout, http_max_conns_per_client,
// rpc_handshake_timeout) are accepted and ignored with a warning.
type LimitsConfig struct {
	// RPCMaxConnsPerClient caps the RPC connections a server takes from
	// one IP (limits.rpc_max_conns_per_client). Zero, the default, means
	// no cap: unlike Nomad (default 100), because a fleet behind one NAT
	// address dials from one IP; the server bounds nodes by their
	// authenticated ID instead (admission). Set it where nodes have
	// their own addresses.
	RPCMaxConnsPerClient int

	// RPCKeepAliveInterval and RPCKeepAliveTimeout set how often every RPC
	// session (node to server, server to server) pings its peer and how
	// long a ping may go unanswered before the session is closed
	// (limits.rpc_keepalive_interval and rpc_keepalive_timeout, Tether's
	// own). Zero means rpc's defaults, 4 s and 4 s: a frozen or cut-off
	// peer is noticed within about 8 s. Raise the timeout on servers
	// starved of CPU, where a healthy peer may answer late.
	RPCKeepAliveInterval time.Duration
	RPCKeepAliveTimeout  time.Duration
}

// ServerConfig holds the server role's settings (server).
type ServerConfig struct {
	// Enabled runs the server role (server.enabled).
	Enabled bool

	// BootstrapExpect is the number of servers to wait for before the
	// first leader election (server.bootstrap_expect). Zero means this
	// server does not bootstrap a cluster on its own but joins one.
	BootstrapExpect int

	// RetryJoin lists servers to join, retried until one answers. It is
	// read from server.server_join.retry_join and from the legacy
	// server.retry_join, in the order they appear.
	RetryJoin []string

	// StartJoin lists servers to join once at start-up, read from
	// server.server_join.start_join and the legacy server.start_join.
	StartJoin []string

	// HeartbeatGrace is the extra time a node gets past its heartbeat TTL
	// before it is marked down (server.heartbeat_grace), 10s by default.
	HeartbeatGrace time.Duration

	// MinHeartbeatTTL is the least heartbeat TTL handed to a node
	// (server.min_heartbeat_ttl), 10s by default. The TTL is the larger
	// of it and nodes / MaxHeartbeatsPerSecond, plus a random stagger.
	MinHeartbeatTTL time.Duration

	// MaxHeartbeatsPerSecond is the heartbeat rate the leader aims for
	// at any fleet size (server.max_heartbeats_per_second), 50 by default.
	MaxHeartbeatsPerSecond int

	// FailoverHeartbeatTTL is the TTL a new leader gives every node that
	// is not down, so none is marked down before it finds the new leader
	// (server.failover_heartbeat_ttl), 5m by default.
	FailoverHeartbeatTTL time.Duration

	// RaftSnapshotThreshold, RaftSnapshotInterval and RaftTrailingLogs
	// are Nomad's server.raft_snapshot_threshold (log entries between
	// snapshots, 8192 by default), raft_snapshot_interval (how often the
	// threshold is checked, 120s) and raft_trailing_logs (entries kept
	// after a snapshot, 10240). Zero means the default.
	RaftSnapshotThreshold int
	RaftSnapshotInterval  time.Duration
	RaftTrailingLogs      int

	// NumSchedulers is the number of scheduler workers
	// (server.num_schedulers). Zero lets the server choose.
	NumSchedulers int
}

// ClientConfig holds the node agent role's settings (client).
type ClientConfig struct {
	// Enabled runs the node agent role (client.enabled).
	Enabled bool

	// Servers lists the server RPC addresses the node agent dials
	// (client.servers, plus client.server_join.retry_join and start_join).
	Servers []string

	// Meta is the node metadata (client.meta). Keys may contain dots, as
	// in "connect.log_level".
	Meta map[string]string

	// StateDir is where the node agent keeps its state (client.state_dir).
	// Empty means a directory inside DataDir.
	StateDir string

	// AllocDir is where allocation directories are made
	// (client.alloc_dir). Empty means a directory inside DataDir.
	AllocDir string

	// NodeClass is the node class (client.node_class).
	NodeClass string

	// NodePool is the node pool (client.node_pool). Empty means "default".
	NodePool string

	// NetworkInterface names the interface to fingerprint
	// (client.network_interface). Accepted; empty means the default.
	NetworkInterface string

	// CPUTotalCompute overrides the fingerprinted CPU capacity in MHz
	// (client.cpu_total_compute). Zero means fingerprint it.
	CPUTotalCompute int

	// GCInterval is how often terminal allocations are garbage collected
	// (client.gc_interval), 1m by default.
	GCInterval time.Duration
}

// ACLConfig holds the ACL settings (acl).
type ACLConfig struct {
	// Enabled turns ACL enforcement on (acl.enabled).
	Enabled bool

	// TokenTTL is how long resolved tokens are cached (acl.token_ttl),
	// 30s by default.
	TokenTTL time.Duration

	// PolicyTTL is how long resolved policies are cached (acl.policy_ttl),
	// 30s by default.
	PolicyTTL time.Duration
}

// TLSConfig holds the TLS settings (tls).
type TLSConfig struct {
	// HTTP serves the HTTP API over TLS (tls.http).
	HTTP bool

	// RPC uses TLS on the RPC port (tls.rpc).
	RPC bool

	// CAFile is the PEM CA bundle used to verify peers (tls.ca_file).
	CAFile string

	// CertFile is the PEM certificate of this agent (tls.cert_file).
	CertFile string

	// KeyFile is the PEM private key of CertFile (tls.key_file).
	KeyFile string

	// VerifyServerHostname checks that a server's certificate is valid for
	// "server.<region>.nomad" (tls.verify_server_hostname).
	VerifyServerHostname bool

	// VerifyHTTPSClient requires HTTPS clients to present a certificate
	// signed by CAFile (tls.verify_https_client).
	VerifyHTTPSClient bool

	// RPCUpgradeMode accepts both TLS and plain RPC connections while a
	// cluster is being moved to TLS (tls.rpc_upgrade_mode).
	RPCUpgradeMode bool

	// TLSMinVersion is the lowest TLS version accepted: "tls10", "tls11",
	// "tls12" or "tls13" (tls.tls_min_version). Empty means "tls12".
	TLSMinVersion string

	// TLSCipherSuites is a comma-separated list of cipher suite names
	// (tls.tls_cipher_suites). Empty means Go's defaults.
	TLSCipherSuites string
}

// PluginConfig is one plugin block: plugin "NAME" { config { ... } }.
type PluginConfig struct {
	// Name is the plugin name, the block label ("raw_exec").
	Name string

	// Config is the decoded config block. Values are what HCL decodes:
	// bool, int, float64, string, []any, and []map[string]any for nested
	// blocks.
	Config map[string]any
}

// validLogLevels are the accepted values of log_level, upper-cased.
var validLogLevels = []string{"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}

// validTLSVersions are the accepted values of tls.tls_min_version.
var validTLSVersions = []string{"tls10", "tls11", "tls12", "tls13"}

// DefaultConfig returns the configuration an agent gets when nothing else
// is set: Nomad's defaults, neither role enabled, no plugins.
func DefaultConfig() *Config {
	name, _ := os.Hostname()
	return &Config{
		Name:       name,
		Datacenter: "dc1",
		Region:     "global",
		BindAddr:   "0.0.0.0",
		LogLevel:   "INFO",
		Ports: PortsConfig{
			HTTP: DefaultHTTPPort,
			RPC:  DefaultRPCPort,
			Serf: DefaultSerfPort,
		},
		Server: ServerConfig{
			HeartbeatGrace:         10 * time.Second,
			MinHeartbeatTTL:        10 * time.Second,
			MaxHeartbeatsPerSecond: 50,
			FailoverHeartbeatTTL:   5 * time.Minute,
		},
		Client: ClientConfig{
			GCInterval: time.Minute,
		},
		Telemetry: TelemetryConfig{
			CollectionInterval: time.Second,
		},
		ACL: ACLConfig{
			TokenTTL:  30 * time.Second,
			PolicyTTL: 30 * time.Second,
		},
		Plugins: map[string]*PluginConfig{},
	}
}

// DevConfig returns the configuration of "tether agent -dev": a single
// server that bootstraps itself and a node agent in one process, bound to
// 127.0.0.1, logging at DEBUG, with raw_exec and mock_driver enabled (both
// also by DevMode itself). DataDir is left
// empty; the agent makes a temporary directory.
func DevConfig() *Config {
	c := DefaultConfig()
	c.DevMode = true
	c.BindAddr = "127.0.0.1"
	c.LogLevel = "DEBUG"
	c.Server.Enabled = true
	c.Server.BootstrapExpect = 1
	c.Client.Enabled = true
	c.Plugins["raw_exec"] = &PluginConfig{
		Name:   "raw_exec",
		Config: map[string]any{"enabled": true},
	}
	c.Plugins["mock_driver"] = &PluginConfig{Name: "mock_driver"}
	return c
}

// Copy returns a deep copy of c. Copy of nil is nil.
func (c *Config) Copy() *Config {
	if c == nil {
		return nil
	}
	r := *c
	r.Server.RetryJoin = slices.Clone(c.Server.RetryJoin)
	r.Server.StartJoin = slices.Clone(c.Server.StartJoin)
	r.Client.Servers = slices.Clone(c.Client.Servers)
	r.Client.Meta = maps.Clone(c.Client.Meta)
	r.Files = slices.Clone(c.Files)
	r.Telemetry = c.Telemetry.copy()
	if c.UI.Enabled != nil {
		r.UI.Enabled = new(bool)
		*r.UI.Enabled = *c.UI.Enabled
	}
	if c.Plugins != nil {
		r.Plugins = make(map[string]*PluginConfig, len(c.Plugins))
		for name, p := range c.Plugins {
			r.Plugins[name] = p.copy()
		}
	}
	return &r
}

// copy returns a deep copy of p.
func (p *PluginConfig) copy() *PluginConfig {
	if p == nil {
		return nil
	}
	r := &PluginConfig{Name: p.Name}
	if p.Config != nil {
		r.Config = copyValue(p.Config).(map[string]any)
	}
	return r
}

// copyValue deep-copies the maps and slices HCL decodes into.
func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = copyValue(e)
		}
		return m
	case []map[string]any:
		s := make([]map[string]any, len(v))
		for i, e := range v {
			s[i] = copyValue(e).(map[string]any)
		}
		return s
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = copyValue(e)
		}
		return s
	default:
		return v
	}
}

// Merge returns a new Config with o laid over c; neither is changed. The
// fields o sets win: non-empty strings, non-zero numbers and durations,
// true booleans (as in Nomad, a later file cannot turn a boolean off) and
// non-empty slices, which replace c's. Maps (client meta, plugins, and each
// plugin's config) are merged key by key. Files are concatenated. A nil o
// gives a copy of c.
func (c *Config) Merge(o *Config) *Config {
	r := c.Copy()
	if r == nil {
		r = &Config{}
	}
	if o == nil {
		return r
	}

	mergeString(&r.Name, o.Name)
	mergeString(&r.Datacenter, o.Datacenter)
	mergeString(&r.Region, o.Region)
	mergeString(&r.DataDir, o.DataDir)
	mergeString(&r.BindAddr, o.BindAddr)
	mergeString(&r.LogLevel, o.LogLevel)
	mergeBool(&r.LogJSON, o.LogJSON)
	mergeBool(&r.EnableDebug, o.EnableDebug)
	mergeBool(&r.GOMAXPROCSGovernor, o.GOMAXPROCSGovernor)
	mergeBool(&r.DevMode, o.DevMode)

	mergeString(&r.Advertise.HTTP, o.Advertise.HTTP)
	mergeString(&r.Advertise.RPC, o.Advertise.RPC)
	mergeString(&r.Advertise.Serf, o.Advertise.Serf)

	mergeNumber(&r.Ports.HTTP, o.Ports.HTTP)
	mergeNumber(&r.Ports.RPC, o.Ports.RPC)
	mergeNumber(&r.Ports.Serf, o.Ports.Serf)

	mergeBool(&r.Server.Enabled, o.Server.Enabled)
	mergeNumber(&r.Server.BootstrapExpect, o.Server.BootstrapExpect)
	mergeSlice(&r.Server.RetryJoin, o.Server.RetryJoin)
	mergeSlice(&r.Server.StartJoin, o.Server.StartJoin)
	mergeNumber(&r.Server.HeartbeatGrace, o.Server.HeartbeatGrace)
	mergeNumber(&r.Server.MinHeartbeatTTL, o.Server.MinHeartbeatTTL)
	mergeNumber(&r.Server.MaxHeartbeatsPerSecond, o.Server.MaxHeartbeatsPerSecond)
	mergeNumber(&r.Server.FailoverHeartbeatTTL, o.Server.FailoverHeartbeatTTL)
	mergeNumber(&r.Server.NumSchedulers, o.Server.NumSchedulers)
	mergeNumber(&r.Server.RaftSnapshotThreshold, o.Server.RaftSnapshotThreshold)
	mergeNumber(&r.Server.RaftSnapshotInterval, o.Server.RaftSnapshotInterval)
	mergeNumber(&r.Server.RaftTrailingLogs, o.Server.RaftTrailingLogs)

	mergeNumber(&r.Limits.RPCMaxConnsPerClient, o.Limits.RPCMaxConnsPerClient)
	mergeNumber(&r.Limits.RPCKeepAliveInterval, o.Limits.RPCKeepAliveInterval)
	mergeNumber(&r.Limits.RPCKeepAliveTimeout, o.Limits.RPCKeepAliveTimeout)

	r.Telemetry.merge(&o.Telemetry)
	if o.UI.Enabled != nil {
		r.UI.Enabled = new(bool)
		*r.UI.Enabled = *o.UI.Enabled
	}

	mergeBool(&r.Client.Enabled, o.Client.Enabled)
	mergeSlice(&r.Client.Servers, o.Client.Servers)
	if len(o.Client.Meta) > 0 {
		if r.Client.Meta == nil {
			r.Client.Meta = make(map[string]string, len(o.Client.Meta))
		}
		maps.Copy(r.Client.Meta, o.Client.Meta)
	}
	mergeString(&r.Client.StateDir, o.Client.StateDir)
	mergeString(&r.Client.AllocDir, o.Client.AllocDir)
	mergeString(&r.Client.NodeClass, o.Client.NodeClass)
	mergeString(&r.Client.NodePool, o.Client.NodePool)
	mergeString(&r.Client.NetworkInterface, o.Client.NetworkInterface)
	mergeNumber(&r.Client.CPUTotalCompute, o.Client.CPUTotalCompute)
	mergeNumber(&r.Client.GCInterval, o.Client.GCInterval)

	mergeBool(&r.ACL.Enabled, o.ACL.Enabled)
	mergeNumber(&r.ACL.TokenTTL, o.ACL.TokenTTL)
	mergeNumber(&r.ACL.PolicyTTL, o.ACL.PolicyTTL)

	mergeBool(&r.TLS.HTTP, o.TLS.HTTP)
	mergeBool(&r.TLS.RPC, o.TLS.RPC)
	mergeString(&r.TLS.CAFile, o.TLS.CAFile)
	mergeString(&r.TLS.CertFile, o.TLS.CertFile)
	mergeString(&r.TLS.KeyFile, o.TLS.KeyFile)
	mergeBool(&r.TLS.VerifyServerHostname, o.TLS.VerifyServerHostname)
	mergeBool(&r.TLS.VerifyHTTPSClient, o.TLS.VerifyHTTPSClient)
	mergeBool(&r.TLS.RPCUpgradeMode, o.TLS.RPCUpgradeMode)
	mergeString(&r.TLS.TLSMinVersion, o.TLS.TLSMinVersion)
	mergeString(&r.TLS.TLSCipherSuites, o.TLS.TLSCipherSuites)

	for name, p := range o.Plugins {
		if r.Plugins == nil {
			r.Plugins = make(map[string]*PluginConfig, len(o.Plugins))
		}
		r.Plugins[name] = r.Plugins[name].merge(p)
	}

	r.Files = append(r.Files, o.Files...)
	return r
}

// merge returns a copy of p with o's config keys laid over it.
func (p *PluginConfig) merge(o *PluginConfig) *PluginConfig {
	r := p.copy()
	if r == nil {
		return o.copy()
	}
	if o == nil {
		return r
	}
	if o.Name != "" {
		r.Name = o.Name
	}
	if len(o.Config) > 0 && r.Config == nil {
		r.Config = make(map[string]any, len(o.Config))
	}
	for k, v := range o.Config {
		r.Config[k] = copyValue(v)
	}
	return r
}

func mergeString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func mergeBool(dst *bool, v bool) {
	if v {
		*dst = true
	}
}

func mergeNumber[T int | time.Duration](dst *T, v T) {
	if v != 0 {
		*dst = v
	}
}

func mergeSlice(dst *[]string, v []string) {
	if len(v) > 0 {
		*dst = slices.Clone(v)
	}
}

// Validate checks that c is complete and consistent. It reports every
// problem it finds, joined into one error; each message names the setting
// as it is written in the configuration file.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	if c.Name == "" {
		add("name must not be empty")
	}
	if c.Region == "" {
		add("region must not be empty")
	}
	if c.Datacenter == "" {
		add("datacenter must not be empty")
	}
	if c.DataDir == "" && !c.DevMode {
		add("data_dir is required (or run with -dev)")
	}
	if !slices.Contains(validLogLevels, strings.ToUpper(c.LogLevel)) {
		add("log_level %q is invalid; want one of %s", c.LogLevel, strings.Join(validLogLevels, ", "))
	}

	for _, p := range []struct {
		name string
		port int
	}{{"ports.http", c.Ports.HTTP}, {"ports.rpc", c.Ports.RPC}, {"ports.serf", c.Ports.Serf}} {
		if p.port < 1 || p.port > 65535 {
			add("%s %d is out of range (1-65535)", p.name, p.port)
		}
	}

	if !c.Server.Enabled && !c.Client.Enabled {
		add("server.enabled or client.enabled must be true: the agent has no role")
	}
	if c.Client.Enabled && !c.Server.Enabled && len(c.Client.Servers) == 0 {
		add("client.servers must list at least one server when the server is not enabled in the same agent")
	}
	if c.Server.BootstrapExpect < 0 {
		add("server.bootstrap_expect %d must not be negative", c.Server.BootstrapExpect)
	}
	if c.Limits.RPCMaxConnsPerClient < 0 {
		add("limits.rpc_max_conns_per_client %d must not be negative", c.Limits.RPCMaxConnsPerClient)
	}
	if c.Limits.RPCKeepAliveInterval < 0 || c.Limits.RPCKeepAliveTimeout < 0 {
		add("limits.rpc_keepalive_interval and rpc_keepalive_timeout must not be negative")
	}
	if c.Server.RaftSnapshotThreshold < 0 || c.Server.RaftSnapshotInterval < 0 || c.Server.RaftTrailingLogs < 0 {
		add("server.raft_snapshot_threshold, raft_snapshot_interval and raft_trailing_logs must not be negative")
	}
	if c.Server.NumSchedulers < 0 {
		add("server.num_schedulers %d must not be negative", c.Server.NumSchedulers)
	}
	if c.Server.HeartbeatGrace < 0 {
		add("server.heartbeat_grace %s must not be negative", c.Server.HeartbeatGrace)
	}
	if c.Server.MinHeartbeatTTL < 0 {
		add("server.min_heartbeat_ttl %s must not be negative", c.Server.MinHeartbeatTTL)
	}
	if c.Server.MaxHeartbeatsPerSecond < 0 {
		add("server.max_heartbeats_per_second %d must not be negative", c.Server.MaxHeartbeatsPerSecond)
	}
	if c.Server.FailoverHeartbeatTTL < 0 {
		add("server.failover_heartbeat_ttl %s must not be negative", c.Server.FailoverHeartbeatTTL)
	}
	if c.Client.CPUTotalCompute < 0 {
		add("client.cpu_total_compute %d must not be negative", c.Client.CPUTotalCompute)
	}
	if c.Client.GCInterval < 0 {
		add("client.gc_interval %s must not be negative", c.Client.GCInterval)
	}
	if c.ACL.TokenTTL < 0 {
		add("acl.token_ttl %s must not be negative", c.ACL.TokenTTL)
	}
	if c.ACL.PolicyTTL < 0 {
		add("acl.policy_ttl %s must not be negative", c.ACL.PolicyTTL)
	}

	errs = append(errs, c.Telemetry.validate()...)

	if (c.TLS.HTTP || c.TLS.RPC) && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		add("tls.cert_file and tls.key_file are required when tls.http or tls.rpc is true")
	}
	if c.TLS.VerifyHTTPSClient && c.TLS.CAFile == "" {
		add("tls.ca_file is required when tls.verify_https_client is true")
	}
	if c.TLS.TLSMinVersion != "" && !slices.Contains(validTLSVersions, c.TLS.TLSMinVersion) {
		add("tls.tls_min_version %q is invalid; want one of %s", c.TLS.TLSMinVersion, strings.Join(validTLSVersions, ", "))
	}

	return errors.Join(errs...)
}

// RawExecEnabled reports whether the raw_exec driver may run tasks: the
// agent is in dev mode, or plugin "raw_exec" { config { enabled = true } }
// is set.
func (c *Config) RawExecEnabled() bool { return c.DevMode || c.pluginEnabled("raw_exec", false) }

// MockDriverEnabled reports whether the mock_driver may run tasks: the
// agent is in dev mode, or a plugin "mock_driver" block is set. Unlike
// raw_exec the block alone enables it (it runs nothing on the host);
// config { enabled = false } turns it off again.
func (c *Config) MockDriverEnabled() bool { return c.DevMode || c.pluginEnabled("mock_driver", true) }

// pluginEnabled reports whether the plugin block name is set and its
// config's enabled key is true (a bool, or a string that parses as one);
// byDefault when the block is set without the key.
func (c *Config) pluginEnabled(name string, byDefault bool) bool {
	p, ok := c.Plugins[name]
	if !ok || p == nil {
		return false
	}
	switch v := p.Config["enabled"].(type) {
	case nil:
		return byDefault
	case bool:
		return v
	case string:
		b, err := strconv.ParseBool(v)
		return err == nil && b
	default:
		return false
	}
}

// privateIPv4 finds the address advertised when BindAddr is a wildcard.
// Tests replace it.
var privateIPv4 = firstPrivateIPv4

// NormalizeAddrs fills in the advertised addresses. An empty address
// becomes BindAddr, or, when BindAddr is the wildcard 0.0.0.0 or ::, the
// first private IPv4 address of an interface that is up (127.0.0.1 if
// there is none). An address without a port gets the matching port from
// Ports. It is safe to call more than once.
func (c *Config) NormalizeAddrs() error {
	if strings.Contains(c.BindAddr, "{{") {
		return fmt.Errorf("bind_addr %q: go-sockaddr templates are not supported", c.BindAddr)
	}
	host := c.BindAddr
	if host == "" || isUnspecified(host) {
		host = privateIPv4()
	}

	for _, a := range []struct {
		name string
		addr *string
		port int
	}{
		{"advertise.http", &c.Advertise.HTTP, c.Ports.HTTP},
		{"advertise.rpc", &c.Advertise.RPC, c.Ports.RPC},
		{"advertise.serf", &c.Advertise.Serf, c.Ports.Serf},
	} {
		addr, err := normalizeAdvertise(*a.addr, host, a.port)
		if err != nil {
			return fmt.Errorf("%s %q: %w", a.name, *a.addr, err)
		}
		*a.addr = addr
	}
	return nil
}

// normalizeAdvertise turns "", "host" or "host:port" into "host:port".
func normalizeAdvertise(addr, defaultHost string, defaultPort int) (string, error) {
	if strings.Contains(addr, "{{") {
		return "", errors.New("go-sockaddr templates are not supported")
	}
	if addr == "" {
		return net.JoinHostPort(defaultHost, strconv.Itoa(defaultPort)), nil
	}

	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a bare host name, IPv4, IPv6 or [IPv6].
		host = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		port = strconv.Itoa(defaultPort)
	} else {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("invalid port %q", port)
		}
	}
	if host == "" {
		host = defaultHost
	}
	if isUnspecified(host) {
		return "", errors.New("cannot advertise an unspecified address")
	}
	return net.JoinHostPort(host, port), nil
}

// isUnspecified reports whether host is the IPv4 or IPv6 wildcard.
func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// firstPrivateIPv4 returns the first private (RFC 1918) IPv4 address of an
// interface that is up, or 127.0.0.1.
func firstPrivateIPv4() string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "127.0.0.1"
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipnet, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip := ipnet.IP.To4(); ip != nil && !ip.IsLoopback() && ip.IsPrivate() {
				return ip.String()
			}
		}
	}
	return "127.0.0.1"
}
