package client

import (
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
)

// Config configures a node agent. Start from DefaultConfig.
type Config struct {
	// StateDir holds the node's identity (ID and secret) and its dynamic
	// metadata. Required.
	StateDir string

	// AllocDir is the root of allocation directories. Required.
	AllocDir string

	// Name, Datacenter, Region, NodeClass and NodePool describe the node.
	Name       string
	Datacenter string
	Region     string
	NodeClass  string
	NodePool   string

	// Servers are the RPC addresses ("host:port") of servers to dial, tried
	// in turn. Servers learned from registrations are added.
	Servers []string

	// Meta is the static metadata from the agent config.
	Meta map[string]string

	// HTTPAddr is the advertised address of the node's own HTTP API, given
	// to the servers so API clients can reach the node directly. Empty
	// means not reachable directly.
	HTTPAddr string

	// TLSEnabled tells API clients to use HTTPS on HTTPAddr.
	TLSEnabled bool

	// CPUTotalCompute overrides the detected CPU MHz when non-zero.
	CPUTotalCompute int

	// Drivers are the task drivers this node offers (name → enabled).
	Drivers map[string]bool

	// Version is reported as the node's nomad.version attribute.
	Version string

	// StatsInterval is how often host stats are sampled. Default 1s.
	StatsInterval time.Duration

	// MetaSyncDelay is the base delay before dynamic metadata changes are
	// pushed to the servers; a random jitter of up to the same amount is
	// added. Default 5s (so changes land within 10s); dev mode uses less.
	MetaSyncDelay time.Duration

	// ReconnectMin and ReconnectMax bound the backoff between dial
	// attempts. Defaults 250ms and 10s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// HeartbeatFailover is how long the node's server may go on refusing
	// its heartbeats as unable to write (its side of a partition has no
	// leader) before the node registers with another server it knows.
	// The leader marks a node down once its TTL and grace pass without a
	// heartbeat (20s at the least by default), so this stays well inside
	// that; it is longer than an election, so that a leader change does
	// not move the fleet. Default 5s.
	HeartbeatFailover time.Duration

	// ACLEnabled makes the node check every client call's token itself,
	// resolved through the servers, whether the call came to its own HTTP
	// API or was forwarded by a server.
	ACLEnabled bool

	// ACLTokenTTL and ACLPolicyTTL are how long resolved tokens and
	// policies are cached (acl.token_ttl, acl.policy_ttl); a token deleted
	// on the servers stops working here within ACLTokenTTL. Zero means 30s.
	ACLTokenTTL  time.Duration
	ACLPolicyTTL time.Duration

	// RPC configures the transport; nil means rpc.DefaultConfig(). A
	// config with a Logger is used as it is (nodes of one fleet share
	// one); without one the node copies it to set its own.
	RPC *rpc.Config

	// HostStats, when set, is the host-stats collector the node serves
	// its samples from, shared by every node of one process (tether
	// fleet); its owner runs it. nil means the node samples the host
	// itself every StatsInterval.
	HostStats *HostStatsCollector

	// DataDialer, when set, dials the node's data connections (bulk
	// reads), shared by every node of one process: an address whose dial
	// failed is then skipped by all of them. nil means the node's own,
	// on RPC.
	DataDialer *rpc.DataDialer

	// Fingerprint, when set, is what the node registers as its
	// attributes and resources, shared by every node of one process; it
	// must not be modified. nil means the node fingerprints the host.
	Fingerprint *Fingerprint

	// Logger is the node agent's logger; nil means no logging.
	Logger hclog.Logger
}

// DefaultConfig returns a Config with safe defaults; StateDir, AllocDir
// and Servers still need to be set.
func DefaultConfig() *Config {
	return &Config{
		Datacenter:        "dc1",
		Region:            "global",
		NodePool:          "default",
		StatsInterval:     time.Second,
		MetaSyncDelay:     5 * time.Second,
		ReconnectMin:      250 * time.Millisecond,
		ReconnectMax:      10 * time.Second,
		HeartbeatFailover: 5 * time.Second,
		Drivers:           map[string]bool{},
	}
}

// Verify checks the config.
func (c *Config) Verify() error {
	switch {
	case c.StateDir == "":
		return errors.New("state dir must be set")
	case c.AllocDir == "":
		return errors.New("alloc dir must be set")
	case len(c.Servers) == 0:
		return errors.New("at least one server address must be set")
	case c.StatsInterval <= 0:
		return errors.New("stats interval must be positive")
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return errors.New("reconnect backoff bounds are invalid")
	case c.HeartbeatFailover < 0:
		return errors.New("heartbeat failover must not be negative")
	}
	return nil
}
