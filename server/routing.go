package server

import (
	"context"
	"errors"
	"fmt"

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
// RouteCacheTTL, and "no server has it" for NoPathCacheTTL; concurrent
// lookups of one node share one query. The call then goes to the holder
// as Forward.NodeRPC or Forward.NodeStream (route.go); the holder only
// ever uses its own session, never forwards again.

// registerRouting registers the server-to-server routing methods.
func (s *Server) registerRouting() {
	rpc.HandleUnary(s.mux, methodHasNode, s.hasNodeEndpoint)
	rpc.HandleUnary(s.mux, methodSessionCount, s.sessionCountEndpoint)
	rpc.HandleRelay[forwardRequest, rawMsg](s.mux, methodForwardNodeRPC, s.forwardNodeRPCEndpoint)
	s.mux.HandleStream(methodForwardNodeStream, s.forwardNodeStreamEndpoint)
	s.registerRouteExplain()
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
func (s *Server) forwardNodeRPCEndpoint(ctx context.Context, req *forwardRequest, resp any) error {
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
	out, err := s.openForPeer(ctx, in)
	if err != nil {
		return err
	}
	return BridgeFrames(ctx, out, in)
}

// openForPeer opens the streaming call a peer forwarded (in) down the
// local session only, and acknowledges it.
func (s *Server) openForPeer(ctx context.Context, in *rpc.Stream) (*rpc.Stream, error) {
	if err := s.requirePeer(ctx); err != nil {
		return nil, err
	}
	var req forwardRequest
	if err := in.Recv(&req); err != nil {
		return nil, err
	}
	sess := s.sessions.get(req.NodeID)
	if sess == nil {
		return nil, structs.ErrNoPathToNode
	}
	out, err := sess.OpenStream(ctx, req.Method, req.Args)
	if err != nil {
		if errors.Is(err, rpc.ErrSessionClosed) {
			s.sessions.unbind(sess)
			return nil, structs.ErrNoPathToNode
		}
		return nil, err
	}
	if err := in.Send(&forwardStreamAck{OK: true}); err != nil {
		out.Close()
		return nil, err
	}
	s.streamsForwarded.Add(1)
	return out, nil
}

// errUnansweredMiss is askPeers' "no path" when some peer did not answer
// in time: the caller gets ErrNoPathToNode, but the route cache does not
// remember it (during a reconnect storm a slow peer would otherwise turn
// one late answer into NoPathCacheTTL of failed calls to a node it holds).
var errUnansweredMiss = &unansweredMiss{}

type unansweredMiss struct{}

func (*unansweredMiss) Error() string { return structs.ErrNoPathToNode.Error() }
func (*unansweredMiss) Unwrap() error { return structs.ErrNoPathToNode }

// isUnansweredMiss reports whether err is errUnansweredMiss (errors.Is
// would also match a plain ErrNoPathToNode: structs errors match by
// status and text).
func isUnansweredMiss(err error) bool {
	var m *unansweredMiss
	return errors.As(err, &m)
}

// askPeers asks every alive peer but skip, in parallel and within
// PeerQueryTimeout, whether it holds nodeID's session: the holder with
// the newest binding wins. It answers ErrNoPathToNode when none does
// (routeCache.locate caches either answer), errUnansweredMiss when
// some peer did not answer in time (not cached).
func (s *Server) askPeers(nodeID, skip string) (string, error) {
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
	qctx, cancel := context.WithTimeout(s.ctx, s.cfg.PeerQueryTimeout)
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
	unanswered := false
	for range peers {
		a := <-answers
		switch {
		case a.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", a.addr, a.err))
			// A peer that is up but too slow to answer may hold the
			// session (a refused dial says the peer is down).
			unanswered = unanswered || errors.Is(a.err, context.DeadlineExceeded) || errors.Is(a.err, rpc.ErrTimeout)
		case a.resp.Connected && (best == "" || a.resp.Index > bestIdx):
			best, bestIdx = a.addr, a.resp.Index
		}
	}
	if best == "" {
		s.peerQueryMisses.Add(1)
		if len(errs) > 0 {
			s.logger.Debug("peer query for node session had failures", "node_id", nodeID, "errors", errors.Join(errs...))
		}
		if unanswered {
			return "", errUnansweredMiss
		}
		return "", structs.ErrNoPathToNode
	}
	return best, nil
}

// Stats returns the server's counters for odd branches of forwarding and
// routing, of the node plane (sessions, registrations, heartbeats) and of
// admission (admission.go), for /v1/agent/self, tests and benchmarks.
// Counters are totals since start; "sessions" is the number of nodes with
// a session here now.
func (s *Server) Stats() map[string]uint64 {
	return map[string]uint64{
		"sessions":                uint64(s.sessions.count()),
		"sessions_bound":          s.sessions.bindings.Load(),
		"node_registrations":      s.nodeRegistrations.Load(),
		"node_heartbeats":         s.nodeHeartbeats.Load(),
		"leader_registrations":    s.leaderRegistrations.Load(),
		"leader_heartbeats":       s.leaderHeartbeats.Load(),
		"leader_forward_retries":  s.forwardRetries.Load(),
		"stale_routes":            s.staleRoutes.Load(),
		"no_path_retries":         s.noPathRetries.Load(),
		"peer_queries":            s.peerQueries.Load(),
		"peer_query_misses":       s.peerQueryMisses.Load(),
		"route_cache_hits":        s.routes.hits.Load(),
		"route_cache_no_path":     s.routes.misses.Load(),
		"route_lookups_merged":    s.routes.merged.Load(),
		"acl_denials":             s.aclDenials.Load(),
		"acl_leader_lookups":      s.aclLeaderLookups.Load(),
		"unchanged_registrations": s.unchangedRegistrations.Load(),
		"schedule_errors":         s.scheduleErrors.Load(),
		"streams_forwarded":       s.streamsForwarded.Load(),
		"peer_calls_refused":      s.peerRefused.Load(),
		"session_rebinds":         s.sessions.rebinds.Load(),
		"stale_sessions_dropped":  s.sessions.staleDropped.Load(),
		"heartbeat_timers":        uint64(s.hb.armed()),
		"data_connections":        s.rpcSrv.DataConns(),
		"data_calls":              s.dataCalls.Load(),
		"admission_admitted":      s.adm.admitted.Load(),
		"admission_refused_node":  s.adm.refusedNode.Load(),
		"admission_refused_rate":  s.adm.refusedServer.Load(),
		"admission_slots_used":    s.adm.slotsUsed.Load(),
		"admission_nodes":         uint64(s.adm.size()),
		"rebalance_moves":         s.rebalanceMoves.Load(),
		"sessions_released":       s.sessionsReleased.Load(),
		"session_drain_timeouts":  s.drainTimeouts.Load(),
	}
}
