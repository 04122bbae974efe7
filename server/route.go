package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"tether/rpc"
	"tether/structs"
	"tether/structs/acl"
)

// One forwarding path (docs/design.md, "The path of one call").
//
// Every client call a server makes for a caller, unary, streaming or
// bulk, starts with Server.Route: it resolves the caller's token once,
// the allocation once (for allocation calls), checks the capability once
// against the allocation's namespace, and knows the node. The Route then
// carries the call: down the node's session when this server holds it,
// else to the peer that does (routing.go finds it), which uses its own
// session and never forwards again. The node checks the token again
// itself (defence in depth); no layer in between does.

// Target names what a client call is addressed to.
type Target struct {
	// NodeID is the node of a node call ("" is refused: the caller's
	// agent answers calls for its own node itself).
	NodeID string

	// AllocID is the allocation of an allocation call; its node is the
	// target, and its namespace is what the capability is checked on.
	AllocID string
}

// Route is where one client call goes, decided once: the node, and the
// allocation when the call names one. Where the node's session is, here
// or on a peer, is looked up as the call is made, so that a node that
// reconnects elsewhere between two calls of one route is still found.
// A Route is only made by Server.Route; it is safe for concurrent use.
type Route struct {
	// NodeID is the target node.
	NodeID string

	// Alloc is the allocation an allocation call names; nil for node
	// calls. It is a snapshot of the state read by Route.
	Alloc *structs.Allocation

	s      *Server
	hops   int    // 1 on the node's session here, 2 through a peer: the last call's (metrics, headers)
	holder string // the peer's RPC address the last call went to, "" here
}

// Hops returns the RPC hops the route's last call took from this server:
// 1 down the node's session here, 2 through the peer holding it, 0
// before any call.
func (r *Route) Hops() int { return r.hops }

// NodeServer names the server that held the node's session for the
// route's last call: this one or the peer (its member name, and its RPC
// address); "" before any call.
func (r *Route) NodeServer() (name, addr string) {
	switch r.hops {
	case 1:
		return r.s.MemberName(), r.s.cfg.RPCAdvertise
	case 2:
		return r.s.notes.serverName(r.s, r.holder), r.holder
	}
	return "", ""
}

// Route authorises a client call and resolves its target, in Nomad's
// order: an unknown token (403) before a malformed or unknown allocation
// (400, 404), then the capability (403) on the allocation's namespace,
// then, for node calls, the node (400, 404). args carries the caller's
// token (structs.TokenOf).
func (s *Server) Route(ctx context.Context, t Target, method string, args any) (*Route, error) {
	aclObj, err := s.ResolveToken(structs.TokenOf(args))
	if err != nil {
		return nil, err
	}
	r := &Route{s: s, NodeID: t.NodeID}
	ns := ""
	if t.AllocID != "" || acl.IsAllocMethod(method) {
		a, err := s.ResolveAlloc(t.AllocID)
		if err != nil {
			return nil, err
		}
		r.Alloc, r.NodeID, ns = a, a.NodeID, a.Namespace
	}
	if !aclObj.AllowClientMethod(method, ns) {
		s.aclDenials.Add(1)
		return nil, structs.ErrPermissionDenied
	}
	if r.Alloc == nil {
		// A node with a session here registered through it, and nodes
		// are never removed from the state: it is known without a state
		// lookup.
		if s.sessions.get(r.NodeID) == nil {
			if err := s.checkNode(r.NodeID); err != nil && !s.unknownButHeld(ctx, r.NodeID, err) {
				return nil, err
			}
		}
	}
	return r, nil
}

// unknownButHeld reports whether a node this server's state does not know
// (err is checkNode's 404) has a session on a peer all the same: this
// server's state is behind (a follower applies committed writes a moment
// after the leader, and a server that just restarted is catching up), and
// the node is reachable. The lookup is the route cache's, so an ID that
// no server holds costs one merged peer query per NoPathCacheTTL.
func (s *Server) unknownButHeld(ctx context.Context, nodeID string, err error) bool {
	var se *structs.Error
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		return false
	}
	addr, lerr := s.routes.locate(ctx, nodeID, false, "")
	return lerr == nil && addr != ""
}

// Call makes a unary client call on the route's node and fills reply.
func (r *Route) Call(ctx context.Context, method string, args, reply any) error {
	_, err := forward(ctx, r,
		func(sess *rpc.Session) (struct{}, error) {
			return struct{}{}, sess.Call(ctx, method, args, reply)
		},
		func(addr string) (struct{}, error) {
			req := &forwardRequest{NodeID: r.NodeID, Method: method, Args: args}
			return struct{}{}, r.s.pool.Call(ctx, addr, methodForwardNodeRPC, req, reply)
		})
	return err
}

// OpenStream opens a streaming client call on the route's node. Through a
// peer, it returns once the peer has the node's stream open, so a stale
// route fails here rather than mid-stream.
func (r *Route) OpenStream(ctx context.Context, method string, args any) (*rpc.Stream, error) {
	return forward(ctx, r,
		func(sess *rpc.Session) (*rpc.Stream, error) {
			return sess.OpenStream(ctx, method, args)
		},
		func(addr string) (*rpc.Stream, error) {
			return r.s.openForwardedStream(ctx, addr, methodForwardNodeStream, r.NodeID, method, args)
		})
}

// Local reports whether this server holds the session of the route's
// node now: only then can a bulk read go around the session (data
// connections are between a node and the server it dialed).
func (r *Route) Local() bool { return r.s.sessions.get(r.NodeID) != nil }

// forward runs a call on the node's session here (local), or else on the
// peer holding it (peer, given the peer's RPC address). A session found
// closed is unbound and the node looked for on the peers. A route found
// stale (the peer has no session any more, or cannot be reached) is
// dropped from the cache, the peers asked once more (without the
// unreachable one) and the call retried once; then the answer is
// ErrNoPathToNode.
func forward[T any](ctx context.Context, r *Route, local func(*rpc.Session) (T, error), peer func(addr string) (T, error)) (T, error) {
	v, err := forwardOnce(ctx, r, local, peer, false)
	if !errors.Is(err, structs.ErrNoPathToNode) || !r.s.nodeReady(r.NodeID) {
		return v, err
	}
	// A node the state calls ready has a session somewhere, or had one a
	// moment ago: it may be moving between servers (rebalancing, a server
	// draining) or redialling. Look once more, past the "no path" cache,
	// after a short wait, before telling the caller there is no path.
	t := time.NewTimer(noPathGrace)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return v, err
	case <-t.C:
	}
	r.s.noPathRetries.Add(1)
	return forwardOnce(ctx, r, local, peer, true)
}

// noPathGrace is how long a call to a ready node that found no session
// waits before it looks again.
const noPathGrace = 250 * time.Millisecond

// nodeReady reports whether the state has the node, and ready.
func (s *Server) nodeReady(nodeID string) bool {
	n, err := s.store.Node(nodeID)
	return err == nil && n != nil && n.Status == structs.NodeStatusReady
}

// forwardOnce is one try of forward; fresh skips the route cache on the
// first lookup too.
func forwardOnce[T any](ctx context.Context, r *Route, local func(*rpc.Session) (T, error), peer func(addr string) (T, error), fresh bool) (T, error) {
	s := r.s
	var zero T
	if sess := s.sessions.get(r.NodeID); sess != nil {
		r.hops, r.holder = 1, ""
		v, err := local(sess)
		if err == nil || !errors.Is(err, rpc.ErrSessionClosed) {
			return v, err
		}
		s.sessions.unbind(sess)
		// The node may have moved to another server: look there.
	}
	skip := ""
	for attempt := 0; attempt < 2; attempt++ {
		addr, err := s.routes.locate(ctx, r.NodeID, fresh || attempt > 0, skip)
		if err != nil {
			if errors.Is(err, structs.ErrNoPathToNode) {
				err = s.noPath(r.NodeID, skip)
			}
			return zero, err
		}
		r.hops, r.holder = 2, addr
		v, err := peer(addr)
		if err == nil || !staleRoute(ctx, err) {
			return v, err
		}
		s.staleRoutes.Add(1)
		s.routes.drop(r.NodeID)
		if !errors.Is(err, structs.ErrNoPathToNode) {
			skip = addr // unreachable: ask the others
		}
		s.logger.Debug("stale node route", "node_id", r.NodeID, "server", addr, "error", err)
	}
	return zero, s.noPath(r.NodeID, skip)
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

// openForwardedStream opens Forward.NodeStream (or fwd, another such
// relay) on addr and waits for the holder's acknowledgement.
func (s *Server) openForwardedStream(ctx context.Context, addr, fwd, nodeID, method string, args any) (*rpc.Stream, error) {
	st, err := s.pool.OpenStream(ctx, addr, fwd, &forwardRequest{NodeID: nodeID, Method: method, Args: args})
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

// routeNotes is what a server remembers to explain its routes: the member
// names of peer RPC addresses (so that a forwarded call's headers name
// the holder without reading the membership list, which takes
// memberlist's lock, on every call) and when node sessions left this
// server. Its zero value is ready.
type routeNotes struct {
	names sync.Map // RPC address → member name

	once sync.Once
	lost *lru.Cache[string, time.Time] // node ID → when its last session here closed
}

// lostNotes bounds the remembered session losses: enough for a fleet's
// share of one server, a few MB at most.
const lostNotes = 16384

func (n *routeNotes) lostCache() *lru.Cache[string, time.Time] {
	n.once.Do(func() {
		c, err := lru.New[string, time.Time](lostNotes)
		if err != nil {
			panic(err) // only for a size <= 0
		}
		n.lost = c
	})
	return n.lost
}

// sessionLost records that nodeID has no session here any more.
func (n *routeNotes) sessionLost(nodeID string, at time.Time) { n.lostCache().Add(nodeID, at) }

// lostAt returns when nodeID's last session here closed, zero if none did
// (that this server remembers).
func (n *routeNotes) lostAt(nodeID string) time.Time {
	t, _ := n.lostCache().Get(nodeID)
	return t
}

// serverName returns the member name of the server at RPC address addr,
// or addr when no member has it.
func (n *routeNotes) serverName(s *Server, addr string) string {
	if v, ok := n.names.Load(addr); ok {
		return v.(string)
	}
	for _, m := range s.serverMembers(false) {
		if m.Tags["rpc_addr"] == addr {
			n.names.Store(addr, m.Name)
			return m.Name
		}
	}
	return addr
}

// noPath returns ErrNoPathToNode with the reason: the node is down in
// the state, or the holder at unreachable ("" if none was) could not be
// reached, or no alive server holds a session (since the one here went,
// when it was here).
func (s *Server) noPath(nodeID, unreachable string) *structs.NoPathError {
	e := &structs.NoPathError{}
	d := &e.NoPathDetail
	n, _ := s.store.Node(nodeID)
	switch {
	case n != nil && n.Status == structs.NodeStatusDown:
		d.Reason = structs.NoPathNodeDown
		if n.StatusUpdatedAt > 0 {
			d.Since = time.Unix(0, n.StatusUpdatedAt).UTC()
		}
	case unreachable != "":
		d.Reason, d.Server = structs.NoPathHolderUnreachable, s.notes.serverName(s, unreachable)
	default:
		d.Reason, d.Since = structs.NoPathNoSession, s.notes.lostAt(nodeID)
	}
	return e
}

// registerRouteExplain registers Routing.Explain, which node-only agents
// call for GET /v1/client/route.
func (s *Server) registerRouteExplain() {
	rpc.HandleUnary(s.mux, structs.MethodRouteExplain, func(ctx context.Context, req *structs.RouteExplainRequest, resp *structs.RouteExplain) error {
		out, err := s.ExplainRoute(ctx, req)
		if err == nil {
			*resp = *out
		}
		return err
	})
}

// ExplainRoute says where a client call for the node (or the
// allocation's node) would go from this server, checking what it finds
// (a cached holder is asked whether it still holds the session), without
// making the call. The caller needs node:read.
func (s *Server) ExplainRoute(ctx context.Context, req *structs.RouteExplainRequest) (*structs.RouteExplain, error) {
	aclObj, err := s.ResolveToken(req.AuthToken)
	if err != nil {
		return nil, err
	}
	if !aclObj.AllowNodeRead() {
		s.aclDenials.Add(1)
		return nil, structs.ErrPermissionDenied
	}
	nodeID := req.NodeID
	switch {
	case nodeID == "" && req.AllocID == "":
		return nil, structs.BadRequest("must provide node_id or alloc_id")
	case nodeID != "" && req.AllocID != "":
		return nil, structs.BadRequest("node_id and alloc_id are exclusive")
	case req.AllocID != "":
		a, err := s.ResolveAlloc(req.AllocID)
		if err != nil {
			return nil, err
		}
		nodeID = a.NodeID
	default:
		if err := structs.ValidateUUID("node", nodeID); err != nil {
			return nil, err
		}
	}
	out := &structs.RouteExplain{NodeID: nodeID, AllocID: req.AllocID, ServedBy: s.MemberName()}
	n, err := s.store.Node(nodeID)
	if err != nil {
		return nil, fmt.Errorf("node lookup failed: %w", err)
	}
	if n != nil {
		out.NodeStatus = n.Status
	}
	if s.sessions.get(nodeID) != nil {
		out.NodeServer, out.NodeServerAddr, out.Hops, out.Reachable = s.MemberName(), s.cfg.RPCAdvertise, 1, true
		return out, nil
	}
	if n == nil && !s.unknownButHeld(ctx, nodeID, structs.ErrUnknownNode(nodeID)) {
		return nil, structs.ErrUnknownNode(nodeID)
	}
	addr, unreachable := s.checkedHolder(ctx, nodeID, out)
	if addr == "" {
		out.NoPath = &s.noPath(nodeID, unreachable).NoPathDetail
		return out, nil
	}
	out.NodeServer, out.NodeServerAddr, out.Hops, out.Reachable = s.notes.serverName(s, addr), addr, 2, true
	return out, nil
}

// checkedHolder finds the peer holding nodeID's session as a call would
// (the route cache first, setting out.Cached) and asks it whether it
// still does; a stale or unreachable answer is dropped and the peers
// asked afresh. It returns the holder's address, or "" and the
// unreachable holder, if any.
func (s *Server) checkedHolder(ctx context.Context, nodeID string, out *structs.RouteExplain) (addr, unreachable string) {
	if cached, ok := s.routes.get(nodeID); ok && cached != "" {
		out.Cached = true
		qctx, cancel := context.WithTimeout(ctx, s.cfg.PeerQueryTimeout)
		var resp hasNodeResponse
		err := s.pool.Call(qctx, cached, methodHasNode, &hasNodeRequest{NodeID: nodeID}, &resp)
		cancel()
		if err == nil && resp.Connected {
			return cached, ""
		}
		s.routes.drop(nodeID)
		if err != nil {
			unreachable = cached
		}
	}
	addr, err := s.routes.locate(ctx, nodeID, true, unreachable)
	if err != nil {
		return "", unreachable
	}
	return addr, ""
}
