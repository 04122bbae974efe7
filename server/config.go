package server

import (
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
)

// Config configures a Server. The zero value is not usable; start from
// DefaultConfig.
type Config struct {
	// Region and Datacenter are the server's own; nodes of other regions
	// are refused.
	Region     string
	Datacenter string

	// Name is the server's name, reported in /v1/agent/members.
	Name string

	// Build is the version reported in the member tags ("build").
	Build string

	// RPCAdvertise is the address nodes and peers dial to reach this
	// server's RPC port. It is handed to nodes as a failover address.
	RPCAdvertise string

	// MinHeartbeatTTL is the least TTL the leader hands a node
	// (min_heartbeat_ttl). The TTL is max(MinHeartbeatTTL, nodes /
	// MaxHeartbeatsPerSecond) plus a random stagger of up to that again;
	// the node must heartbeat within it. Zero means the default, 10s.
	MinHeartbeatTTL time.Duration

	// MaxHeartbeatsPerSecond is the heartbeat rate the leader aims for
	// whatever the fleet size (max_heartbeats_per_second): the TTL grows
	// with the number of nodes so that the leader's heartbeat work stays
	// bounded. Zero means the default, 50.
	MaxHeartbeatsPerSecond int

	// HeartbeatGrace is added to a node's TTL before it is marked down
	// (heartbeat_grace), covering a slow heartbeat or forward. Default 10s;
	// zero is allowed.
	HeartbeatGrace time.Duration

	// ACLEnabled turns ACL enforcement on: client calls are checked
	// against the caller's token before they are forwarded, and the
	// /v1/acl endpoints work. Off, every caller may do everything.
	ACLEnabled bool

	// RPC configures the transport; nil means rpc.DefaultConfig().
	RPC *rpc.Config

	// PeerRPC configures the transport this server dials peer servers with
	// (forwarding pool and raft). nil means RPC without its TLSConfig,
	// which is a server-side config; set it when RPC uses TLS.
	PeerRPC *rpc.Config

	// RaftSnapshotThreshold, RaftSnapshotInterval and RaftTrailingLogs
	// override hashicorp/raft's SnapshotThreshold, SnapshotInterval and
	// TrailingLogs when positive.
	RaftSnapshotThreshold int
	RaftSnapshotInterval  time.Duration
	RaftTrailingLogs      int

	// DataDir holds the raft log (raft-wal), raft snapshots and the
	// server's identity. Empty means InMemory.
	DataDir string

	// InMemory keeps raft in memory (a single voter with in-memory stores
	// and transport, as in `agent -dev`): nothing survives a restart and
	// no peer can join.
	InMemory bool

	// BootstrapExpect is the number of servers to wait for before the
	// cluster is bootstrapped; once that many servers of the region are
	// members, every one of them bootstraps raft with the same
	// configuration (only when it has no raft state yet). Zero means join
	// an existing cluster. InMemory servers bootstrap alone.
	BootstrapExpect int

	// SerfBind is the "host:port" the membership (memberlist) listener
	// binds, TCP and UDP; port 0 picks a free port. Empty disables
	// membership (a lone server).
	SerfBind string

	// SerfAdvertise is the host peers reach the membership port on; empty
	// means the host of SerfBind. The port is always the bound one unless
	// it carries its own.
	SerfAdvertise string

	// RetryJoin lists "host:port" membership addresses of other servers;
	// they are tried every RetryJoinInterval until one answers.
	RetryJoin []string

	// RetryJoinInterval is the wait between join attempts. Default 2s.
	RetryJoinInterval time.Duration

	// Raft timeouts. Zero means raft's defaults (1s heartbeat, 1s
	// election, 500ms leader lease); tests shorten them.
	RaftHeartbeatTimeout time.Duration
	RaftElectionTimeout  time.Duration
	RaftLeaderLease      time.Duration

	// RPCHoldTimeout bounds how long a write waits for a cluster leader
	// (election in progress, leader unreachable) before it fails with
	// "No cluster leader". The call's own deadline applies when shorter.
	// Default 5s.
	RPCHoldTimeout time.Duration

	// FailoverHeartbeatTTL is the TTL a new leader gives every node that
	// is not down when it takes over (failover_heartbeat_ttl), so nodes
	// have time to find the new leader, or to reconnect elsewhere, before
	// any is marked down. Default 5m (Nomad's). The leader never uses less
	// than the longest TTL it could have handed out for the fleet (twice
	// the fleet's TTL, for the stagger) plus HeartbeatGrace.
	FailoverHeartbeatTTL time.Duration

	// DeadServerCleanup is how long a server must have been failed in
	// membership before the leader removes it from the raft voters, and
	// only while more voters than BootstrapExpect remain (autopilot-lite:
	// a replaced server goes, a quorum never shrinks below the expected
	// size). Default 5m.
	DeadServerCleanup time.Duration

	// RouteCacheTTL is how long a node → server route found by asking the
	// peers is reused before asking again. A route that turns out stale is
	// dropped at once. Default 10s.
	RouteCacheTTL time.Duration

	// PeerQueryTimeout bounds the parallel query of peers for the server
	// holding a node's session. Default 2s.
	PeerQueryTimeout time.Duration

	// NoPathCacheTTL is how long the answer "no alive server holds this
	// node's session" is reused, so that calls to a node that is gone do
	// not each ask every peer. A node that connects to this server is
	// routable at once regardless; one that connects to a peer is found
	// once the entry expires. Default 1s.
	NoPathCacheTTL time.Duration

	// RouteCacheSize bounds the node → server routes remembered (least
	// recently used go first). Default 65536.
	RouteCacheSize int

	// AdmissionRate and AdmissionBurst bound how fast this server admits
	// new node sessions (registrations, and heartbeats on a session not
	// yet bound to its node), server-wide: a token bucket of
	// AdmissionBurst tokens refilled at AdmissionRate per second. Over it
	// a node is told to come back later (429 with a retry-after hint; see
	// admission.go). Defaults 200/s and 400: 10,000 nodes register on
	// three servers in about 17 s at the bound, the third of a fleet of
	// 10,000 that loses its server is taken back by the two others in
	// about 8 s, and no leader takes more than it can write. A negative
	// rate means no bound.
	AdmissionRate  float64
	AdmissionBurst int

	// NodeAdmissionInterval and NodeAdmissionBurst bound the sessions one
	// node opens: NodeAdmissionBurst at once, then one per
	// NodeAdmissionInterval, so a node reconnecting in a tight loop is
	// slowed down instead of taking the server-wide tokens of others.
	// Defaults 5s and 4. A negative interval means no bound.
	NodeAdmissionInterval time.Duration
	NodeAdmissionBurst    int

	// AdmissionMaxWait is the latest a refused node is told to come back
	// (and the furthest ahead it is given a slot of the server-wide
	// bucket). Default 1m.
	AdmissionMaxWait time.Duration

	// AdmissionCacheSize bounds the nodes whose admission buckets are
	// remembered (least recently seen go first). Default 16384.
	AdmissionCacheSize int

	// RebalanceInterval is how often this server compares its count of
	// node sessions with its peers' and, when it holds more than its
	// share, asks some of its nodes to move (rebalance.go); a random
	// jitter of up to a quarter is added. Default 1m; negative turns
	// rebalancing off.
	RebalanceInterval time.Duration

	// RebalanceTolerance is how far above an even share (a fraction of
	// it) a server may be before it moves nodes away. Default 0.1.
	RebalanceTolerance float64

	// RebalanceMaxMoves bounds the nodes one server asks to move per
	// interval. Default 1000: after a server of a 10,000-node fleet
	// returns, the other two give it its share in two intervals, at a
	// pace its admission takes (2,000 nodes at 200/s: 10 s).
	RebalanceMaxMoves int

	// SessionDrainTimeout bounds how long a session a node released
	// (it moved to another server) stays open for the calls in flight on
	// it. Default 1m.
	SessionDrainTimeout time.Duration

	// NoLeaveOnShutdown makes Shutdown skip leaving the membership, as a
	// killed process does: peers find out by failure detection. Tests
	// use it to stop a server as kill -9 would.
	NoLeaveOnShutdown bool

	// Logger is the server's logger; nil means no logging.
	Logger hclog.Logger
}

// DefaultConfig returns a Config with safe defaults.
func DefaultConfig() *Config {
	return &Config{
		Region:                 "global",
		Datacenter:             "dc1",
		MinHeartbeatTTL:        10 * time.Second,
		MaxHeartbeatsPerSecond: 50,
		HeartbeatGrace:         10 * time.Second,
		RetryJoinInterval:      2 * time.Second,
		RPCHoldTimeout:         5 * time.Second,
		FailoverHeartbeatTTL:   5 * time.Minute,
		DeadServerCleanup:      5 * time.Minute,
		RouteCacheTTL:          10 * time.Second,
		PeerQueryTimeout:       2 * time.Second,
		NoPathCacheTTL:         time.Second,
		RouteCacheSize:         65536,
		AdmissionRate:          200,
		AdmissionBurst:         400,
		NodeAdmissionInterval:  5 * time.Second,
		NodeAdmissionBurst:     4,
		AdmissionMaxWait:       time.Minute,
		AdmissionCacheSize:     16384,
		RebalanceInterval:      time.Minute,
		RebalanceTolerance:     0.1,
		RebalanceMaxMoves:      1000,
		SessionDrainTimeout:    time.Minute,
	}
}

// Verify checks the config.
func (c *Config) Verify() error {
	if c.Region == "" {
		return errors.New("region must not be empty")
	}
	if c.MinHeartbeatTTL < 0 {
		return errors.New("min_heartbeat_ttl must not be negative")
	}
	if c.MaxHeartbeatsPerSecond < 0 {
		return errors.New("max_heartbeats_per_second must not be negative")
	}
	if c.HeartbeatGrace < 0 {
		return errors.New("heartbeat grace must not be negative")
	}
	if c.BootstrapExpect < 0 {
		return errors.New("bootstrap_expect must not be negative")
	}
	for _, d := range []time.Duration{c.RetryJoinInterval, c.RaftHeartbeatTimeout, c.RaftElectionTimeout,
		c.RaftLeaderLease, c.RPCHoldTimeout, c.FailoverHeartbeatTTL, c.DeadServerCleanup, c.RouteCacheTTL, c.PeerQueryTimeout, c.NoPathCacheTTL,
		c.AdmissionMaxWait, c.SessionDrainTimeout} {
		if d < 0 {
			return errors.New("durations must not be negative")
		}
	}
	if c.AdmissionBurst < 0 || c.NodeAdmissionBurst < 0 || c.AdmissionCacheSize < 0 || c.RebalanceMaxMoves < 0 {
		return errors.New("admission and rebalancing bounds must not be negative")
	}
	if c.RebalanceTolerance < 0 {
		return errors.New("rebalance tolerance must not be negative")
	}
	return nil
}

// setDefaults fills zero durations with DefaultConfig's values, so a
// Config built by hand only sets what it changes.
func (c *Config) setDefaults() {
	d := DefaultConfig()
	for _, p := range []struct{ v, def *time.Duration }{
		{&c.MinHeartbeatTTL, &d.MinHeartbeatTTL},
		{&c.RetryJoinInterval, &d.RetryJoinInterval},
		{&c.RPCHoldTimeout, &d.RPCHoldTimeout},
		{&c.FailoverHeartbeatTTL, &d.FailoverHeartbeatTTL},
		{&c.DeadServerCleanup, &d.DeadServerCleanup},
		{&c.RouteCacheTTL, &d.RouteCacheTTL},
		{&c.PeerQueryTimeout, &d.PeerQueryTimeout},
		{&c.NoPathCacheTTL, &d.NoPathCacheTTL},
		{&c.NodeAdmissionInterval, &d.NodeAdmissionInterval},
		{&c.AdmissionMaxWait, &d.AdmissionMaxWait},
		{&c.RebalanceInterval, &d.RebalanceInterval},
		{&c.SessionDrainTimeout, &d.SessionDrainTimeout},
	} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
	if c.RouteCacheSize <= 0 {
		c.RouteCacheSize = d.RouteCacheSize
	}
	if c.AdmissionRate == 0 {
		c.AdmissionRate = d.AdmissionRate
	}
	if c.AdmissionBurst == 0 {
		c.AdmissionBurst = d.AdmissionBurst
	}
	if c.NodeAdmissionBurst == 0 {
		c.NodeAdmissionBurst = d.NodeAdmissionBurst
	}
	if c.AdmissionCacheSize == 0 {
		c.AdmissionCacheSize = d.AdmissionCacheSize
	}
	if c.RebalanceTolerance == 0 {
		c.RebalanceTolerance = d.RebalanceTolerance
	}
	if c.RebalanceMaxMoves == 0 {
		c.RebalanceMaxMoves = d.RebalanceMaxMoves
	}
	if c.MaxHeartbeatsPerSecond == 0 {
		c.MaxHeartbeatsPerSecond = d.MaxHeartbeatsPerSecond
	}
	if c.DataDir == "" {
		c.InMemory = true
	}
	if c.InMemory {
		c.SerfBind = ""
	}
}
