package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"tether/rpc"
	"tether/structs"
)

// Server is a server agent's core: replicated state (raft), membership,
// node sessions, heartbeat TTLs and forwarding of client calls to nodes,
// locally or through the peer server holding the node's session.
type Server struct {
	cfg     *Config
	logger  hclog.Logger
	store   *StateStore
	id      string      // raft server ID, kept in the data dir
	peerRPC *rpc.Config // dialing peers

	// verifyPeer says whether a session's TLS state is a server's of this
	// region (rpc.Config.VerifyRaftPeer); nil admits every session.
	verifyPeer func(tls.ConnectionState) error

	sessions *sessionRegistry
	hb       *heartbeats
	mux      *rpc.Mux
	rpcSrv   *rpc.Server
	pool     *rpc.Pool
	routes   *routeCache
	notes    routeNotes // names of peers, sessions lost (route.go)
	adm      *admission

	raft         *raft.Raft
	raftTrans    raft.Transport
	raftLayer    *raftLayer // nil in memory
	wal          *raftwal.WAL
	walMeta      *metadb.BoltMetaDB
	fsm          *fsm
	raftNotify   chan bool
	hadRaftState bool
	bootstrapped atomic.Bool

	members     *membership // nil without a serf port
	serfAddr    string
	reconcileCh chan struct{}

	leaderMu sync.Mutex
	leaderCh chan struct{} // closed on every leader change

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	httpAPI atomic.Pointer[httpAPI] // HTTP.Forward's handler (http_forward.go)

	mu       sync.Mutex
	ln       net.Listener
	started  bool
	shutdown bool

	// schedMu serialises scheduling; blocked maps "ns/job" to why some of
	// its allocations could not be placed. Only the leader schedules.
	schedMu sync.Mutex
	blocked map[string]string
	// evalID is the evaluation of the scheduling pass under way (stamped
	// on the allocations it creates); lastFailures what that pass could
	// not place. Both under schedMu.
	evalID       string
	lastFailures []placementFailure
	// schedRetry holds the "ns/job" keys whose last scheduling pass failed
	// (a raft write refused or timed out): the leader retries them on its
	// tick (retryFailedSchedules). Under schedMu.
	schedRetry map[string]bool

	// acl caches parsed ACL policies (acl_endpoint.go).
	acl aclState
	// aclLookups bounds lookups of unknown tokens on the leader
	// (acl_leader.go).
	aclLookups *leaderACLLookups

	// allocNotify pushes allocation changes to the nodes bound here
	// (alloc_notify.go).
	allocNotify *allocNotifier

	metrics serverMetrics // the agent's go-metrics instance (metrics.go)

	// Counters for odd branches.
	forwardRetries         atomic.Uint64 // leader writes retried (no leader, leader unreachable)
	staleRoutes            atomic.Uint64 // forwarded node calls that hit a stale route
	noPathRetries          atomic.Uint64 // calls to a ready node that found no session and looked again
	peerQueries            atomic.Uint64 // fan-outs asking peers for a node's session
	peerQueryMisses        atomic.Uint64 // fan-outs where no peer had the session
	streamsForwarded       atomic.Uint64 // streams relayed for a peer
	peerRefused            atomic.Uint64 // server-to-server calls refused to non-servers
	dataCalls              atomic.Uint64 // bulk reads made as data calls (datacalls.go)
	aclDenials             atomic.Uint64 // client calls refused for the caller's capabilities
	aclLeaderLookups       atomic.Uint64 // tokens or policies unknown here, answered by the leader (acl_leader.go)
	unchangedRegistrations atomic.Uint64 // registrations the leader accepted without a raft write
	scheduleErrors         atomic.Uint64 // scheduling passes that failed (left for retryFailedSchedules)
	rebalanceMoves         atomic.Uint64 // nodes asked to move to another server (rebalance.go)
	sessionsReleased       atomic.Uint64 // sessions nodes released after moving
	drainTimeouts          atomic.Uint64 // released sessions closed still busy
	movingOut              atomic.Int64  // nodes asked to move and still here (rebalance.go)

	// Counters of the node plane (Stats; the fleet benchmark reads them).
	nodeRegistrations   atomic.Uint64 // registrations nodes sent to this server
	nodeHeartbeats      atomic.Uint64 // heartbeats nodes sent to this server
	leaderRegistrations atomic.Uint64 // registrations handled here as the leader
	leaderHeartbeats    atomic.Uint64 // heartbeats handled here as the leader
}

// New returns a Server: it opens the raft stores in cfg.DataDir (or
// memory), starts raft and membership. It serves nothing until Start.
func New(cfg *Config) (_ *Server, err error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if err := cfg.Verify(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	c := *cfg
	cfg = &c
	cfg.setDefaults()
	store, err := NewStateStore()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	id, err := loadServerID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:         cfg,
		logger:      logger,
		store:       store,
		id:          id,
		sessions:    newSessionRegistry(),
		mux:         rpc.NewMux(),
		raftNotify:  make(chan bool, 16),
		reconcileCh: make(chan struct{}, 1),
		leaderCh:    make(chan struct{}),
		ctx:         ctx,
		cancel:      cancel,
		blocked:     make(map[string]string),
		schedRetry:  make(map[string]bool),
	}
	s.adm = newAdmission(cfg)
	s.aclLookups = newLeaderACLLookups()
	s.allocNotify = newAllocNotifier(ctx, logger.Named("alloc_notify"), s.notifyAllocsChanged)
	store.allocsUpserted = s.allocsUpserted
	s.routes = newRouteCache(cfg.RouteCacheSize, cfg.RouteCacheTTL, cfg.NoPathCacheTTL, s.askPeers, nil)
	defer func() {
		if err != nil {
			s.Shutdown()
		}
	}()
	rpcCfg := cfg.RPC
	if rpcCfg == nil {
		rpcCfg = rpc.DefaultConfig()
	}
	rc := *rpcCfg
	if rc.Logger == nil {
		rc.Logger = logger.Named("rpc")
	}
	peerCfg := cfg.PeerRPC
	if peerCfg == nil {
		p := rc
		p.TLSConfig = nil
		p.RaftHandler = nil
		peerCfg = &p
	}
	s.peerRPC = peerCfg
	s.pool = rpc.NewPool(peerCfg)
	// A call routed to a peer that went silent (partitioned, frozen)
	// fails over to the other peers as fast as a peer query would.
	s.pool.DialWait = cfg.PeerQueryTimeout
	s.hb = newHeartbeats(cfg, s.nodeExpired)
	s.registerEndpoints()
	s.registerHTTPForward()
	if err := s.setupRaft(); err != nil {
		return nil, err
	}
	if s.raftLayer != nil {
		rc.RaftHandler = s.raftLayer.handoff
	}
	s.verifyPeer = rc.VerifyRaftPeer // "a server of this region", for requirePeer
	s.rpcSrv = rpc.NewServer(&rc, s.mux)
	if cfg.SerfBind != "" && !cfg.InMemory {
		if err := s.setupMembership(); err != nil {
			return nil, err
		}
	}
	s.wg.Add(2)
	go s.watchLeader()
	go s.monitorLeadership()
	return s, nil
}

// Mux returns the server's RPC method table, so other server parts can add
// methods before Start.
func (s *Server) Mux() *rpc.Mux { return s.mux }

// State returns the state store.
func (s *Server) State() *StateStore { return s.store }

// Start serves the RPC port on ln, and joins the cluster, until Shutdown.
func (s *Server) Start(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown || s.started {
		ln.Close()
		return
	}
	s.started = true
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.rpcSrv.Serve(s.ctx, ln); err != nil && s.ctx.Err() == nil {
			s.logger.Error("rpc listener stopped", "error", err)
		}
	}()
	if s.members != nil {
		s.wg.Add(2)
		go s.runMembership()
		go s.rebalanceLoop()
	}
}

// Shutdown leaves the membership, stops serving and raft, closes every
// node session and waits for the server's goroutines. Raft state stays in
// the data dir: a restarted server is the same voter.
func (s *Server) Shutdown() {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return
	}
	s.shutdown = true
	s.mu.Unlock()
	s.shutdownMembership()
	s.cancel()
	s.allocNotify.stop()
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	s.hb.stop()
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			s.logger.Warn("raft shutdown", "error", err)
		}
	}
	if s.pool != nil {
		s.pool.Close()
	}
	s.wg.Wait()
	if c, ok := s.raftTrans.(interface{ Close() error }); ok {
		_ = c.Close()
	}
	if s.wal != nil {
		if err := s.wal.Close(); err != nil {
			s.logger.Warn("closing raft log", "error", err)
		}
	}
	if s.walMeta != nil {
		if err := s.walMeta.Close(); err != nil {
			s.logger.Warn("closing raft log metadata", "error", err)
		}
	}
}

// ID returns the server's raft ID.
func (s *Server) ID() string { return s.id }

// Snapshot takes a raft snapshot now (operators and tests; raft also
// snapshots on its own every few thousand entries).
func (s *Server) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("raft snapshot: %w", err)
	}
	return nil
}

// Region returns the server's region.
func (s *Server) Region() string { return s.cfg.Region }

// ConnectedNodes returns how many nodes hold a live session on this server.
func (s *Server) ConnectedNodes() int { return s.sessions.count() }

// SessionNodeIDs returns the IDs of the nodes with a session on this
// server, in no order.
func (s *Server) SessionNodeIDs() []string { return s.sessions.nodeIDs() }

// RaftStats returns raft's own figures (state, term, last_log_index,
// commit_index, applied_index, ...), as Nomad shows them under "raft" in
// /v1/agent/self.
func (s *Server) RaftStats() map[string]string { return s.raft.Stats() }

// nodeExpired marks a node down when its heartbeat TTL runs out. Only the
// leader keeps timers; one that fires as leadership is lost does nothing.
func (s *Server) nodeExpired(nodeID string) {
	if !s.IsLeader() {
		return
	}
	n, _ := s.store.Node(nodeID)
	if n == nil || n.Status == structs.NodeStatusDown {
		return
	}
	s.logger.Warn("node heartbeat missed; marking down", "node_id", nodeID)
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if _, err := s.raftApply(ctx, msgUpdateNodeStatus, &nodeStatusCmd{
		NodeID: nodeID, Status: structs.NodeStatusDown, Description: "node heartbeat missed", At: time.Now().UnixNano(),
	}); err != nil {
		s.logger.Error("marking node down", "node_id", nodeID, "error", err)
		return
	}
	s.markNodeAllocsLost(ctx, nodeID)
}

// bindSession binds the session a request arrived on to nodeID and, when
// the binding is new, drops it as soon as the session closes (a callback,
// rpc.Session.AfterClose: no goroutine per bound session).
//
// order ranks this binding against the node's bindings on other servers
// (routing.go, the newest wins): the leader's bindOrder for the
// registration when known, 0 otherwise; the local state index
// (bindOrderWritten of it) is the floor.
func (s *Server) bindSession(ctx context.Context, nodeID string, order uint64) error {
	sess := rpc.SessionFromContext(ctx)
	if sess == nil {
		return nil
	}
	if floor := bindOrderWritten(s.store.LatestIndex()); floor > order {
		order = floor
	}
	created, err := s.sessions.bind(nodeID, sess, order)
	if err != nil || !created {
		return err
	}
	s.logger.Debug("node session bound", "node_id", nodeID, "remote", sess.RemoteAddr())
	// No goroutine per session waits for its end: callbacks run once the
	// session closes, or the server shuts down (whose wait they hold).
	var once sync.Once
	var stopClose, stopShutdown func() bool
	var mu sync.Mutex // stopClose and stopShutdown are set after registering
	drop := func() {
		once.Do(func() {
			defer s.wg.Done()
			mu.Lock()
			stopClose()
			stopShutdown()
			mu.Unlock()
			if sess.IsClosed() {
				s.logger.Debug("node session closed", "node_id", nodeID)
			}
			s.sessions.unbind(sess)
			if s.sessions.get(nodeID) == nil {
				s.DropData(nodeID) // the node is gone from here
				s.notes.sessionLost(nodeID, time.Now())
			}
		})
	}
	s.wg.Add(1)
	mu.Lock()
	stopClose = sess.AfterClose(drop)
	stopShutdown = context.AfterFunc(s.ctx, drop)
	mu.Unlock()
	return nil
}

// The order of a node's session bindings across servers is derived from
// raft indexes, which are cluster-wide and monotonic, so no wall clocks
// are compared. A registration that wrote the node at index i ranks 2i; a
// binding made without a registration ranks 2·(the binding server's state
// index). A registration of an unchanged node writes nothing (a reconnect
// storm costs no raft entries) and ranks 2c+1, c the leader's commit index
// then: above every binding made before it, since no server had applied
// more than c, and below any later write (> c). The leader refuses a
// second unchanged registration of a node at the same c (it writes
// instead), so two of them never tie.
func bindOrderWritten(idx uint64) uint64 { return 2 * idx }

func bindOrderUnchanged(commit uint64) uint64 { return 2*commit + 1 }

// checkNode is ResolveNode for callers that only need to know the node
// exists: the same errors, no copy.
func (s *Server) checkNode(nodeID string) error {
	if nodeID == "" {
		return structs.ErrNoNodeID
	}
	if err := structs.ValidateUUID("node", nodeID); err != nil {
		return err
	}
	if !s.store.NodeExists(nodeID) {
		return structs.ErrUnknownNode(nodeID)
	}
	return nil
}

// ResolveNode returns the node with the exact full ID, or the errors an
// HTTP caller gets for a missing, malformed or unknown ID.
func (s *Server) ResolveNode(nodeID string) (*structs.Node, error) {
	if nodeID == "" {
		return nil, structs.ErrNoNodeID
	}
	if err := structs.ValidateUUID("node", nodeID); err != nil {
		return nil, err
	}
	n, err := s.store.Node(nodeID)
	if err != nil {
		return nil, fmt.Errorf("node lookup failed: %w", err)
	}
	if n == nil {
		return nil, structs.ErrUnknownNode(nodeID)
	}
	return n, nil
}
