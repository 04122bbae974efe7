package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	"golang.org/x/time/rate"

	"tether/rpc"
	"tether/structs"
)

// A Fleet runs many simulated nodes in one process (tether fleet). Each is
// a real node agent (a Client): its own node ID and secret, its own
// connection and session, registration, heartbeats, dynamic metadata,
// allocations and every client endpoint. Only the sources are shared: one
// host-stats collector and one fingerprint for the whole process, and the
// nodes offer mock_driver only, so their tasks run no process.

// FleetConfig configures a Fleet. Start from DefaultFleetConfig.
type FleetConfig struct {
	// Servers are the RPC addresses ("host:port") every node dials, in
	// turn from a different first one per node, so that a fleet starts
	// spread over them. Required.
	Servers []string

	// Nodes is how many nodes to run. Required, at least 1.
	Nodes int

	// DataDir holds each node's state (identity, metadata, allocations)
	// and alloc dir, under DataDir/<node name>: a fleet started again on
	// the same dir is the same nodes. Empty means a temporary dir that
	// Shutdown removes.
	DataDir string

	// Datacenter, Region and NodePool describe every node.
	Datacenter string
	Region     string
	NodePool   string

	// NamePrefix names the nodes: NamePrefix followed by the node's
	// index, zero-padded to five digits. Default "fleet-".
	NamePrefix string

	// Meta is static metadata every node carries.
	Meta map[string]string

	// ACLEnabled makes every node check the token of each call itself, as
	// the nodes of a cluster with ACLs on do. Nodes need no token to
	// register: they authenticate with their node secret.
	ACLEnabled bool

	// Token is the ACL token of the fleet's own queries (CountReady, a
	// Node.List); it needs node:read when ACLs are on. The nodes never use
	// it.
	Token string

	// RPC configures every node's transport (TLS included); one config is
	// shared by all. nil means rpc.DefaultConfig().
	RPC *rpc.Config

	// StartRate is how many nodes start (and so dial) per second, and
	// StartBurst how many may start at once: a fleet never opens all its
	// connections in one instant. Defaults 500/s and 50.
	StartRate  float64
	StartBurst int

	// StatsInterval is how often the one shared host-stats sample is
	// taken. Default 1s.
	StatsInterval time.Duration

	// MetaSyncDelay, ReconnectMin and ReconnectMax are each node's (see
	// Config). Defaults those of DefaultConfig.
	MetaSyncDelay time.Duration
	ReconnectMin  time.Duration
	ReconnectMax  time.Duration

	// Version is reported as every node's nomad.version attribute.
	Version string

	// Logger receives the fleet's logs; nil means no logging.
	Logger hclog.Logger

	// NodeLogger receives the nodes' logs, each with its name; nil means
	// Logger named "node". (Ten thousand nodes that lose a server log ten
	// thousand lines: give them their own level.)
	NodeLogger hclog.Logger
}

// Defaults of a FleetConfig.
const (
	defaultFleetStartRate  = 500
	defaultFleetStartBurst = 50
	defaultFleetNamePrefix = "fleet-"

	// fleetStartWorkers create nodes in parallel: creating one writes
	// and syncs its identity files, which the start rate should not wait
	// on one at a time.
	fleetStartWorkers = 32

	// fleetStopWorkers stop nodes in parallel on Shutdown.
	fleetStopWorkers = 64
)

// DefaultFleetConfig returns a FleetConfig with safe defaults; Servers and
// Nodes still need to be set.
func DefaultFleetConfig() *FleetConfig {
	d := DefaultConfig()
	return &FleetConfig{
		Datacenter:    d.Datacenter,
		Region:        d.Region,
		NodePool:      d.NodePool,
		NamePrefix:    defaultFleetNamePrefix,
		StartRate:     defaultFleetStartRate,
		StartBurst:    defaultFleetStartBurst,
		StatsInterval: d.StatsInterval,
		MetaSyncDelay: d.MetaSyncDelay,
		ReconnectMin:  d.ReconnectMin,
		ReconnectMax:  d.ReconnectMax,
	}
}

// Verify checks the config.
func (c *FleetConfig) Verify() error {
	switch {
	case len(c.Servers) == 0:
		return errors.New("at least one server address must be set")
	case c.Nodes < 1:
		return fmt.Errorf("nodes must be at least 1, not %d", c.Nodes)
	case c.Datacenter == "":
		return errors.New("datacenter must be set")
	case c.NamePrefix == "":
		return errors.New("name prefix must be set")
	case !(c.StartRate > 0):
		return fmt.Errorf("start rate must be positive, not %v", c.StartRate)
	case c.StartBurst < 1:
		return fmt.Errorf("start burst must be at least 1, not %d", c.StartBurst)
	case c.StatsInterval <= 0:
		return errors.New("stats interval must be positive")
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return errors.New("reconnect backoff bounds are invalid")
	}
	for _, s := range c.Servers {
		if s == "" {
			return errors.New("server addresses must not be empty")
		}
	}
	return nil
}

// Fleet runs the nodes of a FleetConfig. Create it with NewFleet, then
// Start; Shutdown stops every node.
type Fleet struct {
	cfg     *FleetConfig
	logger  hclog.Logger
	nodeLog hclog.Logger
	rpcCfg  *rpc.Config
	dataDir string
	tmpDir  bool // dataDir is ours to remove

	stats      *HostStatsCollector
	fp         *Fingerprint
	dataDialer *rpc.DataDialer
	drivers    map[string]bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the collector and the starters

	mu      sync.Mutex
	nodes   []*Client // in index order; nil until started
	err     error     // the first node that could not be created
	startAt time.Time

	next      atomic.Int64 // next node index to start
	created   atomic.Int64 // nodes started
	startDone chan struct{}

	stopOnce sync.Once
	stopErr  error
}

// NewFleet checks cfg, creates the data dir (a temporary one when
// cfg.DataDir is empty) and fingerprints the host once. Nothing runs until
// Start.
func NewFleet(cfg *FleetConfig) (*Fleet, error) {
	if cfg == nil {
		return nil, errors.New("fleet config must not be nil")
	}
	if err := cfg.Verify(); err != nil {
		return nil, fmt.Errorf("fleet config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	f := &Fleet{
		cfg:       cfg,
		logger:    logger,
		nodeLog:   cfg.NodeLogger,
		nodes:     make([]*Client, cfg.Nodes),
		drivers:   map[string]bool{DriverMock: true},
		startDone: make(chan struct{}),
	}
	if f.nodeLog == nil {
		f.nodeLog = logger.Named("node")
	}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "tether-fleet-")
		if err != nil {
			return nil, fmt.Errorf("creating temporary data dir: %w", err)
		}
		f.dataDir, f.tmpDir = dir, true
	} else {
		dir, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("creating data dir: %w", err)
		}
		f.dataDir = dir
	}
	rpcCfg := rpc.DefaultConfig()
	if cfg.RPC != nil {
		c := *cfg.RPC
		rpcCfg = &c
	}
	if rpcCfg.Logger == nil {
		rpcCfg.Logger = logger.Named("rpc")
	}
	if rpcCfg.Yamux == nil {
		// Fleet nodes ping their servers like any node (rpc.Config
		// KeepAliveInterval: a timer per session, no goroutine while it
		// waits): a killed server resets the connection at once, but a
		// frozen or blackholed one is only noticed by an unanswered
		// ping, long before the next heartbeat at fleet-size TTLs. One
		// yamux logger serves the fleet (yamux's default writes to
		// stderr past the log level, and rpc would make one per dial).
		yc := yamux.DefaultConfig()
		yc.LogOutput = nil
		yc.Logger = rpcCfg.Logger.Named("yamux").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
		rpcCfg.Yamux = yc
	}
	f.rpcCfg = rpcCfg
	f.dataDialer = rpc.NewDataDialer(rpcCfg)

	fp, err := FingerprintHost(f.dataDir, 0, cfg.Version)
	if err != nil {
		logger.Warn("fingerprinting the host was partial", "error", err)
	}
	f.fp = fp
	f.stats = NewHostStatsCollector(logger.Named("stats"), f.dataDir, cfg.StatsInterval)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// DataDir returns the dir holding the nodes' state.
func (f *Fleet) DataDir() string { return f.dataDir }

// NodeName returns the name of node i.
func (f *Fleet) NodeName(i int) string { return fmt.Sprintf("%s%05d", f.cfg.NamePrefix, i) }

// FleetLabels are the profiler labels of every goroutine of a fleet and
// its nodes (goroutines inherit them from the one that starts them): a
// goroutine profile of a process that runs a fleet tells them apart.
var FleetLabels = pprof.Labels("tether", "fleet")

// Start starts the shared host-stats collector and the nodes, at
// cfg.StartRate; it returns at once. Started is closed once every node has
// been started (or starting stopped on an error, see Err).
func (f *Fleet) Start() {
	pprof.Do(context.Background(), FleetLabels, func(context.Context) { f.start() })
}

func (f *Fleet) start() {
	f.mu.Lock()
	f.startAt = time.Now()
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.stats.Run(f.ctx)
	}()
	lim := rate.NewLimiter(rate.Limit(f.cfg.StartRate), f.cfg.StartBurst)
	workers := min(fleetStartWorkers, f.cfg.Nodes)
	var startWG sync.WaitGroup
	startWG.Add(workers)
	for range workers {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer startWG.Done()
			f.starter(lim)
		}()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		startWG.Wait()
		close(f.startDone)
		if err := f.Err(); err == nil && f.ctx.Err() == nil {
			f.logger.Info("all nodes started", "nodes", f.cfg.Nodes, "elapsed", time.Since(f.startAt).Round(time.Millisecond))
		}
	}()
}

// starter starts nodes, one index at a time, until all are started, the
// fleet stops, or a node cannot be created.
func (f *Fleet) starter(lim *rate.Limiter) {
	for f.ctx.Err() == nil && f.Err() == nil {
		i := int(f.next.Add(1) - 1)
		if i >= f.cfg.Nodes {
			return
		}
		if err := lim.Wait(f.ctx); err != nil {
			return
		}
		c, err := f.newNode(i)
		if err != nil {
			f.mu.Lock()
			if f.err == nil {
				f.err = fmt.Errorf("node %s: %w", f.NodeName(i), err)
			}
			f.mu.Unlock()
			f.logger.Error("cannot create node; no more nodes start", "node", f.NodeName(i), "error", err)
			return
		}
		f.mu.Lock()
		if f.ctx.Err() != nil {
			// Shutdown has begun and will not see this node.
			f.mu.Unlock()
			c.Shutdown()
			return
		}
		c.Start()
		f.nodes[i] = c
		f.mu.Unlock()
		f.created.Add(1)
	}
}

// newNode creates node i, a Client on the fleet's shared sources.
func (f *Fleet) newNode(i int) (*Client, error) {
	name := f.NodeName(i)
	dir := filepath.Join(f.dataDir, name)
	cfg := &Config{}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.AllocDir = filepath.Join(dir, "alloc")
	cfg.Name = name
	cfg.Datacenter = f.cfg.Datacenter
	cfg.Region = f.cfg.Region
	cfg.NodePool = f.cfg.NodePool
	cfg.Meta = f.cfg.Meta
	cfg.Drivers = f.drivers
	cfg.Version = f.cfg.Version
	cfg.StatsInterval = f.cfg.StatsInterval
	cfg.MetaSyncDelay = f.cfg.MetaSyncDelay
	cfg.ReconnectMin = f.cfg.ReconnectMin
	cfg.ReconnectMax = f.cfg.ReconnectMax
	cfg.ACLEnabled = f.cfg.ACLEnabled
	cfg.RPC = f.rpcCfg
	cfg.HostStats = f.stats
	cfg.Fingerprint = f.fp
	cfg.DataDialer = f.dataDialer
	cfg.Logger = f.nodeLog.With("node", name)
	// Every node dials the servers in its own random order
	// (connManager.nextServer), so the fleet spreads over them.
	cfg.Servers = f.cfg.Servers
	return New(cfg)
}

// Started returns a channel closed once every node has been started, or
// starting ended early (Shutdown, or an error: see Err).
func (f *Fleet) Started() <-chan struct{} { return f.startDone }

// Err returns the error that stopped nodes from starting, if any.
func (f *Fleet) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Nodes returns the nodes started so far, in index order.
func (f *Fleet) Nodes() []*Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*Client, 0, len(f.nodes))
	for _, c := range f.nodes {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// FleetStatus counts a fleet's nodes.
type FleetStatus struct {
	Nodes      int // configured
	Started    int // created and started
	Registered int // registered at least once
	Connected  int // holding a registered session now
	// PerServer counts the connected nodes by the server address they
	// are registered with.
	PerServer map[string]int
	// Elapsed is the time since Start.
	Elapsed time.Duration
}

// Status counts the fleet's nodes now. It takes each node's lock briefly
// and starts nothing.
func (f *Fleet) Status() FleetStatus {
	st := FleetStatus{Nodes: f.cfg.Nodes, PerServer: map[string]int{}}
	f.mu.Lock()
	if !f.startAt.IsZero() {
		st.Elapsed = time.Since(f.startAt)
	}
	f.mu.Unlock()
	for _, c := range f.Nodes() {
		st.Started++
		select {
		case <-c.Registered():
			st.Registered++
		default:
		}
		if addr := c.ServerAddr(); addr != "" {
			st.Connected++
			st.PerServer[addr]++
		}
	}
	return st
}

// RegisteredCount returns how many nodes have registered at least once:
// the cheap part of Status, for polling.
func (f *Fleet) RegisteredCount() int {
	n := 0
	for _, c := range f.Nodes() {
		select {
		case <-c.Registered():
			n++
		default:
		}
	}
	return n
}

// WaitRegistered waits until every node has registered, polling every
// interval (100ms when zero), or until ctx ends.
func (f *Fleet) WaitRegistered(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := f.Err(); err != nil {
			return err
		}
		n := f.RegisteredCount()
		if n == f.cfg.Nodes {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d nodes registered: %w", n, f.cfg.Nodes, ctx.Err())
		case <-t.C:
		}
	}
}

// CountReady asks the servers (Node.List with cfg.Token, through one
// connected node's session) how many of the fleet's started nodes they
// list as ready. It lists by ID prefix, 16 calls, so that no answer is
// one message of the whole cluster's nodes.
func (f *Fleet) CountReady(ctx context.Context) (int, error) {
	nodes := f.Nodes()
	ours := make(map[string]struct{}, len(nodes))
	var via *Client
	for _, c := range nodes {
		ours[c.NodeID()] = struct{}{}
		if via == nil && c.Connected() {
			via = c
		}
	}
	if via == nil {
		return 0, structs.NewError(503, "no node of the fleet is connected")
	}
	ready := 0
	for _, p := range "0123456789abcdef" {
		req := &structs.NodeListRequest{Prefix: string(p), QueryOptions: structs.QueryOptions{Region: f.cfg.Region, AuthToken: f.cfg.Token}}
		var resp structs.NodeListResponse
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := via.ServerRPC(cctx, structs.MethodNodeList, req, &resp)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("listing nodes: %w", err)
		}
		for _, n := range resp.Nodes {
			if _, ok := ours[n.ID]; ok && n.Status == structs.NodeStatusReady {
				ready++
			}
		}
	}
	return ready, nil
}

// Shutdown stops starting nodes, stops every node (several at a time) and
// the collector, waits for all their goroutines, and removes the data dir
// if it was a temporary one. It is safe to call more than once.
func (f *Fleet) Shutdown() error {
	f.stopOnce.Do(func() {
		f.mu.Lock()
		f.cancel()
		nodes := append([]*Client(nil), f.nodes...)
		f.mu.Unlock()
		// Every node is told to stop first, so that they wind down
		// together; then their goroutines are waited for.
		for _, c := range nodes {
			if c != nil {
				c.cancel()
			}
		}
		work := make(chan *Client)
		var wg sync.WaitGroup
		for range min(fleetStopWorkers, len(nodes)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range work {
					c.Shutdown()
				}
			}()
		}
		for _, c := range nodes {
			if c != nil {
				work <- c
			}
		}
		close(work)
		wg.Wait()
		f.wg.Wait()
		if f.tmpDir {
			if err := os.RemoveAll(f.dataDir); err != nil {
				f.stopErr = fmt.Errorf("removing temporary data dir: %w", err)
			}
		}
	})
	return f.stopErr
}
