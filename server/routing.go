package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"tether/rpc"
	"tether/structs"
)

// Node-session routing (DESIGN.md "Node-session routing").
//
// A node's session lives on the server it dialed. Every other server finds
// that server by asking all alive peers at once (Routing.HasNode) under one
// deadline; each holder answers with the index of its binding (the raft
// index of the node's registration there), and the highest index wins, so
// no wall clocks are compared. The answer is cached per node for
// RouteCacheTTL. The call then goes to the holder as Forward.NodeRPC or
// Forward.NodeStream, tagged Hops=1; the holder only ever uses its own
// session, never forwards again. A holder that has no session any more (or
// cannot be reached) makes the route stale: the cache entry is dropped,
// the peers are asked once more and the call is retried once; then the
// answer is "No path to node".

// routeCache remembers which server holds a node's session.
type routeCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]routeEntry
}

type routeEntry struct {
	addr    string
	expires time.Time
}

func newRouteCache(ttl time.Duration) *routeCache {
	return &routeCache{ttl: ttl, m: make(map[string]routeEntry)}
}

func (c *routeCache) get(nodeID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[nodeID]
	if !ok {
		return ""
	}
	if time.Now().After(e.expires) {
		delete(c.m, nodeID)
		return ""
	}
	return e.addr
}

func (c *routeCache) put(nodeID, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 100000 { // bounded: drop everything rather than grow
		c.m = make(map[string]routeEntry)
	}
	c.m[nodeID] = routeEntry{addr: addr, expires: time.Now().Add(c.ttl)}
}

func (c *routeCache) drop(nodeID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, nodeID)
}

// registerRouting registers the server-to-server routing methods.
func (s *Server) registerRouting() {
	rpc.HandleUnary(s.mux, methodHasNode, s.hasNodeEndpoint)
	rpc.HandleUnary(s.mux, methodForwardNodeRPC, s.forwardNodeRPCEndpoint)
	s.mux.HandleStream(methodForwardNodeStream, s.forwardNodeStreamEndpoint)
}

func (s *Server) hasNodeEndpoint(ctx context.Context, req *hasNodeRequest, resp *hasNodeResponse) error {
	if err := s.requirePeer(ctx); err != nil {
		return err
	}
	sess, idx := s.sessions.lookup(req.NodeID)
	resp.Connected, resp.Index = sess != nil, idx
	return nil
}

// forwardNodeRPCEndpoint runs a forwarded client call on the local session
// only.
func (s *Server) forwardNodeRPCEndpoint(ctx context.Context, req *forwardRequest, resp *rawMsg) error {
	if err := s.requirePeer(ctx); err != nil {
		return err
	}
	sess := s.sessions.get(req.NodeID)
	if sess == nil {
		return structs.ErrNoPathToNode
	}
	err := sess.Call(ctx, req.Method, req.Args, resp)
	if err != nil && errors.Is(err, rpc.ErrSessionClosed) {
		s.sessions.unbind(sess)
		return structs.ErrNoPathToNode
	}
	return err
}

// forwardNodeStreamEndpoint opens a forwarded streaming call down the local
// session, acknowledges it, then relays the node's frames.
func (s *Server) forwardNodeStreamEndpoint(ctx context.Context, in *rpc.Stream) error {
	if err := s.requirePeer(ctx); err != nil {
		return err
	}
	var req forwardRequest
	if err := in.Recv(&req); err != nil {
		return err
	}
	sess := s.sessions.get(req.NodeID)
	if sess == nil {
		return structs.ErrNoPathToNode
	}
	out, err := sess.OpenStream(ctx, req.Method, req.Args)
	if err != nil {
		if errors.Is(err, rpc.ErrSessionClosed) {
			s.sessions.unbind(sess)
			return structs.ErrNoPathToNode
		}
		return err
	}
	if err := in.Send(&forwardStreamAck{OK: true}); err != nil {
		out.Close()
		return err
	}
	s.streamsForwarded.Add(1)
	return BridgeFrames(ctx, out, in)
}

// staleRoute reports whether a forwarded call failed because the route was
// wrong (the holder has no session) or the holder could not be reached.
func staleRoute(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, structs.ErrNoPathToNode) {
		return true
	}
	var re *rpc.RemoteError
	return !errors.As(err, &re)
}

// findNodeServer returns the RPC address of the peer holding nodeID's
// session: from the cache unless fresh, else by asking every alive peer
// but skip in parallel, within PeerQueryTimeout.
func (s *Server) findNodeServer(ctx context.Context, nodeID string, fresh bool, skip string) (string, error) {
	if !fresh {
		if addr := s.routes.get(nodeID); addr != "" && addr != skip {
			return addr, nil
		}
	}
	var peers []string
	for _, p := range s.peerAddrs() {
		if p != skip {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return "", structs.ErrNoPathToNode
	}
	s.peerQueries.Add(1)
	qctx, cancel := context.WithTimeout(ctx, s.cfg.PeerQueryTimeout)
	defer cancel()
	type answer struct {
		addr string
		resp hasNodeResponse
		err  error
	}
	answers := make(chan answer, len(peers))
	for _, p := range peers {
		go func() {
			var resp hasNodeResponse
			err := s.pool.Call(qctx, p, methodHasNode, &hasNodeRequest{NodeID: nodeID}, &resp)
			answers <- answer{p, resp, err}
		}()
	}
	best, bestIdx := "", uint64(0)
	var errs []error
	for range peers {
		a := <-answers
		switch {
		case a.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", a.addr, a.err))
		case a.resp.Connected && (best == "" || a.resp.Index > bestIdx):
			best, bestIdx = a.addr, a.resp.Index
		}
	}
	if best == "" {
		s.peerQueryMisses.Add(1)
		if len(errs) > 0 {
			s.logger.Debug("peer query for node session had failures", "node_id", nodeID, "errors", errors.Join(errs...))
		}
		return "", structs.ErrNoPathToNode
	}
	s.routes.put(nodeID, best)
	return best, nil
}

// NodeRPC runs a client method on the node nodeID: down the node's session
// when this server holds it, else through the peer that does (one extra
// hop). It answers ErrNoPathToNode when no alive server holds a session.
func (s *Server) NodeRPC(ctx context.Context, nodeID, method string, args, reply any) error {
	// The caller's token (args' QueryOptions) must allow the method; it is
	// checked before the node is looked up (acl_endpoint.go).
	if err := s.authorizeClientCall(method, args); err != nil {
		return err
	}
	// A node with a session here registered through it, and nodes are
	// never removed from the state: it is known, without a state lookup.
	if sess := s.sessions.get(nodeID); sess != nil {
		err := sess.Call(ctx, method, args, reply)
		if err == nil || !errors.Is(err, rpc.ErrSessionClosed) {
			return err
		}
		s.sessions.unbind(sess)
		// The node may have moved to another server: look there.
	}
	if err := s.checkNode(nodeID); err != nil {
		return err
	}
	skip := ""
	for attempt := 0; attempt < 2; attempt++ {
		addr, err := s.findNodeServer(ctx, nodeID, attempt > 0, skip)
		if err != nil {
			return err
		}
		err = s.pool.Call(ctx, addr, methodForwardNodeRPC, &forwardRequest{NodeID: nodeID, Method: method, Args: args}, reply)
		if err == nil || !staleRoute(ctx, err) {
			return err
		}
		s.staleRoutes.Add(1)
		s.routes.drop(nodeID)
		if !errors.Is(err, structs.ErrNoPathToNode) {
			skip = addr // unreachable: ask the others
		}
		s.logger.Debug("stale node route", "node_id", nodeID, "server", addr, "error", err)
	}
	return structs.ErrNoPathToNode
}

// NodeStream opens a streaming client method on the node nodeID, locally
// or through the peer holding its session.
func (s *Server) NodeStream(ctx context.Context, nodeID, method string, args any) (*rpc.Stream, error) {
	if err := s.authorizeClientCall(method, args); err != nil {
		return nil, err
	}
	if _, err := s.ResolveNode(nodeID); err != nil {
		return nil, err
	}
	if sess := s.sessions.get(nodeID); sess != nil {
		st, err := sess.OpenStream(ctx, method, args)
		if err == nil || !errors.Is(err, rpc.ErrSessionClosed) {
			return st, err
		}
		s.sessions.unbind(sess)
	}
	skip := ""
	for attempt := 0; attempt < 2; attempt++ {
		addr, err := s.findNodeServer(ctx, nodeID, attempt > 0, skip)
		if err != nil {
			return nil, err
		}
		st, err := s.openForwardedStream(ctx, addr, nodeID, method, args)
		if err == nil || !staleRoute(ctx, err) {
			return st, err
		}
		s.staleRoutes.Add(1)
		s.routes.drop(nodeID)
		if !errors.Is(err, structs.ErrNoPathToNode) {
			skip = addr
		}
		s.logger.Debug("stale node route", "node_id", nodeID, "server", addr, "error", err)
	}
	return nil, structs.ErrNoPathToNode
}

// openForwardedStream opens Forward.NodeStream on addr and waits for the
// holder's acknowledgement, so a stale route fails here, not mid-stream.
func (s *Server) openForwardedStream(ctx context.Context, addr, nodeID, method string, args any) (*rpc.Stream, error) {
	st, err := s.pool.OpenStream(ctx, addr, methodForwardNodeStream, &forwardRequest{NodeID: nodeID, Method: method, Args: args})
	if err != nil {
		return nil, err
	}
	var ack forwardStreamAck
	if err := st.Recv(&ack); err != nil {
		st.Close()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("forwarded stream ended before it started: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return st, nil
}

// Stats returns the server's counters for odd branches of forwarding and
// routing, for /v1/agent/self and tests.
func (s *Server) Stats() map[string]uint64 {
	return map[string]uint64{
		"leader_forward_retries": s.forwardRetries.Load(),
		"stale_routes":           s.staleRoutes.Load(),
		"peer_queries":           s.peerQueries.Load(),
		"peer_query_misses":      s.peerQueryMisses.Load(),
		"streams_forwarded":      s.streamsForwarded.Load(),
		"peer_calls_refused":     s.peerRefused.Load(),
		"session_rebinds":        s.sessions.rebinds.Load(),
		"stale_sessions_dropped": s.sessions.staleDropped.Load(),
		"heartbeat_timers":       uint64(s.hb.armed()),
		"data_connections":       s.rpcSrv.DataConns(),
		"data_calls":             s.dataCalls.Load(),
	}
}
