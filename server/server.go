package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// Server is a server agent's core: node registry, node sessions, heartbeat
// TTLs and forwarding of client calls to nodes.
type Server struct {
	cfg    *Config
	logger hclog.Logger
	store  *StateStore

	sessions *sessionRegistry
	hb       *heartbeats
	mux      *rpc.Mux
	rpcSrv   *rpc.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	ln net.Listener

	// schedMu serialises scheduling; blocked maps "ns/job" to why some of
	// its allocations could not be placed.
	schedMu sync.Mutex
	blocked map[string]string
}

// New returns a Server with an empty state store. It serves nothing until
// Start.
func New(cfg *Config) (*Server, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if err := cfg.Verify(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	store, err := NewStateStore()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	rpcCfg := cfg.RPC
	if rpcCfg == nil {
		rpcCfg = rpc.DefaultConfig()
	}
	if rpcCfg.Logger == nil {
		c := *rpcCfg
		c.Logger = logger.Named("rpc")
		rpcCfg = &c
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		logger:   logger,
		store:    store,
		sessions: newSessionRegistry(),
		mux:      rpc.NewMux(),
		ctx:      ctx,
		cancel:   cancel,
		blocked:  make(map[string]string),
	}
	s.hb = newHeartbeats(cfg.HeartbeatTTL, cfg.HeartbeatGrace, s.nodeExpired)
	s.registerEndpoints()
	s.rpcSrv = rpc.NewServer(rpcCfg, s.mux)
	return s, nil
}

// Mux returns the server's RPC method table, so other server parts can add
// methods before Start.
func (s *Server) Mux() *rpc.Mux { return s.mux }

// State returns the state store.
func (s *Server) State() *StateStore { return s.store }

// Start serves the RPC port on ln until Shutdown.
func (s *Server) Start(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.rpcSrv.Serve(s.ctx, ln); err != nil && s.ctx.Err() == nil {
			s.logger.Error("rpc listener stopped", "error", err)
		}
	}()
}

// Shutdown stops serving, closes every node session and waits for the
// server's goroutines.
func (s *Server) Shutdown() {
	s.cancel()
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	s.hb.stop()
	s.wg.Wait()
}

// Leader returns the RPC address of the cluster leader. A single server is
// its own leader.
func (s *Server) Leader() string { return s.cfg.RPCAdvertise }

// Peers returns the RPC addresses of the voting servers.
func (s *Server) Peers() []string { return []string{s.cfg.RPCAdvertise} }

// Region returns the server's region.
func (s *Server) Region() string { return s.cfg.Region }

// ConnectedNodes returns how many nodes hold a live session on this server.
func (s *Server) ConnectedNodes() int { return s.sessions.count() }

// nodeExpired marks a node down when its heartbeat TTL runs out.
func (s *Server) nodeExpired(nodeID string) {
	s.logger.Warn("node heartbeat missed; marking down", "node_id", nodeID)
	if _, err := s.store.UpdateNodeStatus(nodeID, structs.NodeStatusDown, "node heartbeat missed", time.Now().UnixNano()); err != nil {
		s.logger.Error("marking node down", "node_id", nodeID, "error", err)
		return
	}
	s.markNodeAllocsLost(nodeID)
}

// bindSession binds the session a request arrived on to nodeID and, when
// the binding is new, drops it as soon as the session closes.
func (s *Server) bindSession(ctx context.Context, nodeID string) error {
	sess := rpc.SessionFromContext(ctx)
	if sess == nil {
		return nil
	}
	created, err := s.sessions.bind(nodeID, sess)
	if err != nil || !created {
		return err
	}
	s.logger.Debug("node session bound", "node_id", nodeID, "remote", sess.RemoteAddr())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-sess.CloseChan():
			s.logger.Debug("node session closed", "node_id", nodeID)
		case <-s.ctx.Done():
		}
		s.sessions.unbind(sess)
	}()
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

// NodeRPC runs a client method on the node nodeID, down the session that
// node opened. It fails at once with ErrNoPathToNode when no live session
// exists, and within ctx's deadline when the node dies mid-call.
func (s *Server) NodeRPC(ctx context.Context, nodeID, method string, args, reply any) error {
	if _, err := s.ResolveNode(nodeID); err != nil {
		return err
	}
	sess := s.sessions.get(nodeID)
	if sess == nil {
		return structs.ErrNoPathToNode
	}
	err := sess.Call(ctx, method, args, reply)
	if err != nil && errors.Is(err, rpc.ErrSessionClosed) {
		s.sessions.unbind(sess)
		return structs.ErrNoPathToNode
	}
	return err
}

// NodeStream opens a streaming client method on the node nodeID.
func (s *Server) NodeStream(ctx context.Context, nodeID, method string, args any) (*rpc.Stream, error) {
	if _, err := s.ResolveNode(nodeID); err != nil {
		return nil, err
	}
	sess := s.sessions.get(nodeID)
	if sess == nil {
		return nil, structs.ErrNoPathToNode
	}
	st, err := sess.OpenStream(ctx, method, args)
	if err != nil && errors.Is(err, rpc.ErrSessionClosed) {
		s.sessions.unbind(sess)
		return nil, structs.ErrNoPathToNode
	}
	return st, err
}
