package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// Client is a node agent.
type Client struct {
	cfg    *Config
	logger hclog.Logger
	rpcCfg *rpc.Config

	id          identity
	started     time.Time // when the agent started: drivers' UpdateTime
	meta        *metaStore
	stats       *HostStatsCollector
	ownStats    bool // stats is this node's own, run by Start
	fp          *Fingerprint
	mux         *rpc.Mux
	dataCallers dataCallers     // answer servers' data calls (bulk reads)
	dataDialer  *rpc.DataDialer // dials data connections, skipping addresses that failed

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	conn   *connManager
	allocs *allocManager

	// acl caches tokens and policies resolved through the servers.
	acl aclCache

	// counters count the node's odd paths (client/metrics.go).
	counters nodeCounters

	netOnce sync.Once
	nets    []netIface // interfaces for nomad.client.unallocated.network
}

// wireCPUTicks points task stats at the host's CPU total once per process.
var wireCPUTicks sync.Once

// New creates the node agent: it loads (or creates) the node identity and
// dynamic metadata from the state dir and fingerprints the host. Nothing
// runs until Start.
func New(cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, fmt.Errorf("client config must not be nil")
	}
	if err := cfg.Verify(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	for _, d := range []string{cfg.StateDir, cfg.AllocDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("creating %s: %w", filepath.Base(d), err)
		}
	}
	id, err := loadOrCreateIdentity(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	meta, err := newMetaStore(filepath.Join(cfg.StateDir, "meta.json"), cfg.Meta)
	if err != nil {
		return nil, err
	}
	fp := cfg.Fingerprint
	if fp == nil {
		if fp, err = FingerprintHost(cfg.AllocDir, cfg.CPUTotalCompute, cfg.Version); err != nil {
			return nil, fmt.Errorf("fingerprinting host: %w", err)
		}
	}
	rpcCfg := cfg.RPC
	if rpcCfg == nil {
		rpcCfg = rpc.DefaultConfig()
	}
	if rpcCfg.Logger == nil {
		rc := *rpcCfg
		rc.Logger = logger.Named("rpc")
		rpcCfg = &rc
	}
	stats, ownStats := cfg.HostStats, false
	if stats == nil {
		stats, ownStats = NewHostStatsCollector(logger.Named("stats"), cfg.AllocDir, cfg.StatsInterval), true
		stats.SetCPUTotalCompute(cfg.CPUTotalCompute)
	}

	dataDialer := cfg.DataDialer
	if dataDialer == nil {
		dataDialer = rpc.NewDataDialer(rpcCfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:        cfg,
		logger:     logger,
		rpcCfg:     rpcCfg,
		dataDialer: dataDialer,
		id:         id,
		started:    time.Now().UTC(),
		meta:       meta,
		stats:      stats,
		ownStats:   ownStats,
		fp:         fp,
		mux:        rpc.NewMux(),
		ctx:        ctx,
		cancel:     cancel,
	}
	c.conn = newConnManager(c)
	c.allocs = newAllocManager(c)
	c.allocs.restore()
	wireCPUTicks.Do(func() { cpuTotalTicks = stats.CPUTotalTicks })
	c.registerEndpoints()
	return c, nil
}

// NodeID returns the node's ID.
func (c *Client) NodeID() string { return c.id.NodeID }

// Mux returns the node's RPC method table; the node's HTTP API calls it in
// process.
func (c *Client) Mux() *rpc.Mux { return c.mux }

// Start starts stats collection and the connection to the servers.
func (c *Client) Start() {
	c.allocs.start()
	if c.ownStats {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.stats.Run(c.ctx)
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.conn.run(c.ctx)
	}()
}

// Shutdown stops the node agent and waits for its goroutines.
func (c *Client) Shutdown() {
	c.cancel()
	c.allocs.stop()
	c.wg.Wait()
	c.dataCallers.stop()
}

// Registered returns a channel closed once the node has registered with a
// server for the first time.
func (c *Client) Registered() <-chan struct{} { return c.conn.registered }

// ServerAddr returns the address of the server the node is registered
// with now, or "" between sessions.
func (c *Client) ServerAddr() string { return c.conn.serverAddr() }

// LocalAddr returns the local address of the node's registered session
// now, or "" between sessions.
func (c *Client) LocalAddr() string {
	if sess := c.conn.current(); sess != nil {
		return sess.LocalAddr().String()
	}
	return ""
}

// KnownServers returns the server addresses the node fails over to: its
// configured ones, then those the servers told it about.
func (c *Client) KnownServers() []string { return c.conn.knownServers() }

// Connected reports whether the node holds a registered session now.
func (c *Client) Connected() bool { return c.conn.current() != nil }

// ServerRPC calls a server method on the node's current session. It fails
// with 503 when no server is reachable.
func (c *Client) ServerRPC(ctx context.Context, method string, args, reply any) error {
	sess := c.conn.current()
	if sess == nil {
		return structs.NewError(503, "No cluster leader: node agent has no server connection")
	}
	return sess.Call(ctx, method, args, reply)
}

// Node returns the node as it registers with the servers.
func (c *Client) Node() *structs.Node {
	attrs := make(map[string]string, len(c.fp.Attributes)+len(c.cfg.Drivers))
	for k, v := range c.fp.Attributes {
		attrs[k] = v
	}
	drivers := make(map[string]*structs.DriverInfo)
	for name, enabled := range c.cfg.Drivers {
		if !enabled {
			continue
		}
		attrs["driver."+name] = "1"
		drivers[name] = &structs.DriverInfo{Detected: true, Healthy: true, HealthDescription: "Healthy", UpdateTime: c.started, Attributes: map[string]string{"driver." + name: "true"}}
	}
	var res *structs.Resources
	if c.fp.Resources != nil {
		r := *c.fp.Resources
		res = &r
	}
	nres := c.fp.NodeResources.Copy()
	return &structs.Node{
		ID:                    c.id.NodeID,
		SecretID:              c.id.SecretID,
		Datacenter:            c.cfg.Datacenter,
		Name:                  c.cfg.Name,
		HTTPAddr:              c.cfg.HTTPAddr,
		TLSEnabled:            c.cfg.TLSEnabled,
		Attributes:            attrs,
		Resources:             res,
		Reserved:              &structs.Resources{},
		NodeResources:         nres,
		ReservedResources:     &structs.NodeReservedResources{},
		Meta:                  c.meta.merged(),
		NodeClass:             c.cfg.NodeClass,
		NodePool:              c.cfg.NodePool,
		SchedulingEligibility: structs.NodeSchedulingEligible,
		Status:                structs.NodeStatusReady,
		Drivers:               drivers,
		HostVolumes:           map[string]any{},
		HostNetworks:          map[string]any{},
		CSIControllerPlugins:  map[string]any{},
		CSINodePlugins:        map[string]any{},
	}
}

// HasAlloc reports whether this node runs (or ran) the allocation.
func (c *Client) HasAlloc(id string) bool { return c.allocs.get(id) != nil }

// ServerStream opens a streaming server method on the node's current
// session; the server relays it to the node the request names.
func (c *Client) ServerStream(ctx context.Context, method string, args any) (*rpc.Stream, error) {
	sess := c.conn.current()
	if sess == nil {
		return nil, structs.NewError(503, "No cluster leader: node agent has no server connection")
	}
	return sess.OpenStream(ctx, method, args)
}
