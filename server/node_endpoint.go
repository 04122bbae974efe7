package server

import (
	"context"
	"maps"
	"net/http"
	"reflect"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/rpc"
	"tether/structs"
)

// registerEndpoints fills the server's RPC method table: the methods node
// agents call, and forwarding stubs for client methods that a node agent
// relays on behalf of its own HTTP callers.
func (s *Server) registerEndpoints() {
	rpc.HandleUnary(s.mux, structs.MethodNodeRegister, s.nodeRegister)
	rpc.HandleUnary(s.mux, structs.MethodNodeHeartbeat, s.nodeHeartbeat)
	rpc.HandleUnary(s.mux, structs.MethodNodeRelease, s.nodeRelease)
	rpc.HandleUnary(s.mux, structs.MethodNodeList, s.nodeList)
	rpc.HandleUnary(s.mux, structs.MethodNodeGet, s.nodeGet)
	rpc.HandleUnary(s.mux, structs.MethodStatusPeers, s.statusPeers)
	rpc.HandleUnary(s.mux, structs.MethodNodeGetClientAllocs, s.nodeGetClientAllocs)
	// A caller that blocks on it (MaxWait > 0) gives it up by closing its
	// session: no watch goroutine per call. Nodes pull with no wait.
	s.mux.EndWithSession(structs.MethodNodeGetClientAllocs)
	rpc.HandleUnary(s.mux, structs.MethodNodeUpdateAlloc, s.nodeUpdateAlloc)

	// Server-to-server methods.
	rpc.HandleUnary(s.mux, methodRaftApply, s.raftApplyEndpoint)
	rpc.HandleUnary(s.mux, methodLeaderNodeRegister, leaderOnly(s, s.registerNodeLeader))
	rpc.HandleUnary(s.mux, methodLeaderNodeHeartbeat, leaderOnly(s, s.heartbeatNodeLeader))
	rpc.HandleUnary(s.mux, methodLeaderNodeUpdate, leaderOnly(s, s.updateAllocLeader))
	rpc.HandleUnary(s.mux, methodLeaderJobRegister, leaderOnly(s, s.registerJobEndpoint))
	rpc.HandleUnary(s.mux, methodLeaderJobDeregister, leaderOnly(s, s.deregisterJobEndpoint))
	rpc.HandleUnary(s.mux, methodLeaderAllocStop, leaderOnly(s, s.stopAllocEndpoint))
	rpc.HandleUnary(s.mux, methodLeaderJobScale, leaderOnly(s, s.scaleJobEndpoint))
	s.registerRouting()

	forwardNodeRPC[structs.NodeSpecificRequest, structs.HostStats](s, structs.MethodClientStats,
		func(r *structs.NodeSpecificRequest) string { return r.NodeID })
	forwardNodeRPC[structs.NodeSpecificRequest, structs.NodeMetaResponse](s, structs.MethodNodeMetaRead,
		func(r *structs.NodeSpecificRequest) string { return r.NodeID })
	forwardNodeRPC[structs.NodeMetaApplyRequest, structs.NodeMetaResponse](s, structs.MethodNodeMetaApply,
		func(r *structs.NodeMetaApplyRequest) string { return r.NodeID })
	forwardNodeRPC[structs.NodeSpecificRequest, structs.GenericResponse](s, structs.MethodClientGCAll,
		func(r *structs.NodeSpecificRequest) string { return r.NodeID })
	forwardAllocRPC[structs.AllocSpecificRequest, structs.AllocResourceUsage](s, structs.MethodClientAllocStats, allocIDOfReq)
	forwardAllocRPC[structs.AllocSpecificRequest, structs.GenericResponse](s, structs.MethodClientAllocGC, allocIDOfReq)
	s.registerStreamForwards()
	s.registerACLEndpoints()
	s.registerPeerACLEndpoints()
	s.registerClusterOps()
}

// forwardAllocRPC registers an allocation-targeted client method that the
// server relays to the allocation's node.
func forwardAllocRPC[Req, Resp any](s *Server, method string, allocIDOf func(*Req) string) {
	rpc.HandleRelay[Req, Resp](s.mux, method, func(ctx context.Context, req *Req, resp any) error {
		r, err := s.Route(ctx, Target{AllocID: allocIDOf(req)}, method, req)
		if err != nil {
			return err
		}
		return r.relayCall(ctx, method, req, resp)
	})
}

func allocIDOfReq(r *structs.AllocSpecificRequest) string { return r.AllocID }

// forwardNodeRPC registers method on the server so that a caller on any
// session (a node agent relaying for its HTTP API) reaches the named node.
func forwardNodeRPC[Req, Resp any](s *Server, method string, nodeIDOf func(*Req) string) {
	rpc.HandleRelay[Req, Resp](s.mux, method, func(ctx context.Context, req *Req, resp any) error {
		r, err := s.Route(ctx, Target{NodeID: nodeIDOf(req)}, method, req)
		if err != nil {
			return err
		}
		return r.relayCall(ctx, method, req, resp)
	})
}

// relayCall makes a call this server relays for a caller on another
// session and, when it asked for JSON, tells it where the call went
// (rpc.JSON.Via and Hops: the caller's X-Tether-Node-Server and
// X-Tether-Hops).
func (r *Route) relayCall(ctx context.Context, method string, req, resp any) error {
	if err := r.Call(ctx, method, req, resp); err != nil {
		return err
	}
	if j, ok := resp.(*rpc.JSON); ok {
		j.Via, _ = r.NodeServer()
		j.Hops = r.Hops()
	}
	return nil
}

// leaderOnly wraps a leader-side write for a peer that forwarded it: it
// runs only on the leader and never forwards again.
func leaderOnly[Req, Resp any](s *Server, fn func(context.Context, *Req, *Resp) error) func(context.Context, *Req, *Resp) error {
	return func(ctx context.Context, req *Req, resp *Resp) error {
		if err := s.requirePeer(ctx); err != nil {
			return err
		}
		if !s.IsLeader() {
			return errNotLeader
		}
		before := s.raft.LastIndex()
		err := fn(ctx, req, resp)
		if err == nil && s.raft.LastIndex() != before {
			s.pushCommitIndex() // the follower waits to apply what fn wrote
		}
		return err
	}
}

// nodeRegister registers the node that called it and binds the session it
// arrived on. The write (and scheduling) happens on the leader; the
// binding stays here, on the server the node dialed. A node already in
// the (possibly stale) local state is bound at once, its secret checked
// against that state, so it is routable even while no leader is elected.
func (s *Server) nodeRegister(ctx context.Context, req *structs.NodeRegisterRequest, resp *structs.NodeRegisterResponse) error {
	s.nodeRegistrations.Add(1)
	defer s.metrics.measureSince(keyClientRegister, time.Now())
	n := req.Node
	if n == nil {
		return structs.BadRequest("missing node")
	}
	if !structs.IsUUID(n.ID) {
		return structs.BadRequest("node ID must be a full UUID")
	}
	if n.SecretID == "" {
		return structs.BadRequest("missing node secret")
	}
	old, err := s.store.Node(n.ID)
	if err != nil {
		return err
	}
	if old != nil && old.SecretID != n.SecretID {
		s.logger.Warn("node registration refused: secret mismatch", "node_id", n.ID)
		return structs.NewError(http.StatusForbidden, "node secret ID does not match")
	}
	// A session already bound to another node cannot register this one.
	if sess := rpc.SessionFromContext(ctx); sess != nil {
		if owner := s.sessions.nodeOf(sess); owner != "" && owner != n.ID {
			return structs.NewError(http.StatusForbidden, "session already bound to another node")
		}
	}
	// Admission (admission.go): after the secret check, so that nobody
	// spends a known node's bucket; before anything is bound or written.
	if err := s.adm.admit(n.ID, time.Now()); err != nil {
		return err
	}
	if old != nil {
		if err := s.bindSession(ctx, n.ID, 0); err != nil {
			return err
		}
	}
	var lresp nodeRegisterLeaderResponse
	if err := s.leaderCall(ctx, methodLeaderNodeRegister, req, &lresp, func(ctx context.Context) error {
		return s.registerNodeLeader(ctx, req, &lresp)
	}); err != nil {
		return err
	}
	if old == nil {
		// The node's next calls (allocation pulls, heartbeats) come here:
		// make sure this server has its record.
		s.waitApplied(ctx, lresp.Index)
	}
	if err := s.bindSession(ctx, n.ID, lresp.BindOrder); err != nil {
		return err
	}
	resp.HeartbeatTTL = lresp.HeartbeatTTL
	resp.Servers = s.rpcServers()
	resp.Index = lresp.Index
	resp.AllocIndex = s.store.NodeAllocIndex(n.ID)
	return nil
}

// registerNodeLeader is the leader's half of a registration: it writes the
// node, arms its heartbeat timer and retries blocked placements. A node
// that only reconnects (nothing about it changed, and it is ready) is not
// written: its timer is reset and the registration ranks its session
// binding without a raft entry (bindOrderUnchanged), so a reconnect storm
// after a server failure costs the leader no writes.
func (s *Server) registerNodeLeader(ctx context.Context, req *structs.NodeRegisterRequest, resp *nodeRegisterLeaderResponse) error {
	s.leaderRegistrations.Add(1)
	n := req.Node
	if n == nil || !structs.IsUUID(n.ID) || n.SecretID == "" {
		return structs.BadRequest("invalid node registration")
	}
	old, err := s.store.Node(n.ID)
	if err != nil {
		return err
	}
	if old != nil && old.SecretID != n.SecretID {
		return structs.NewError(http.StatusForbidden, "node secret ID does not match")
	}
	c := n.Copy()
	if c.Status == "" || c.Status == structs.NodeStatusInit {
		c.Status = structs.NodeStatusReady
	}
	if c.SchedulingEligibility == "" {
		c.SchedulingEligibility = structs.NodeSchedulingEligible
	}
	if c.NodePool == "" {
		c.NodePool = "default"
	}
	if old != nil && nodeUnchanged(old, c) {
		commit := s.raft.CommitIndex()
		if ttl, ok := s.hb.resetUnchanged(n.ID, commit); ok {
			s.unchangedRegistrations.Add(1)
			resp.HeartbeatTTL = ttl
			resp.Index = commit
			resp.BindOrder = bindOrderUnchanged(commit)
			return nil
		}
	}
	c.StatusUpdatedAt = time.Now().UnixNano()
	becameReady := old == nil || old.Status != structs.NodeStatusReady || !nodeSchedulingEqual(old, c)
	if old == nil {
		c.Events = []*structs.NodeEvent{{Message: "Node registered", Subsystem: "Cluster", Timestamp: time.Now().UTC()}}
	} else {
		c.Events = old.Events
	}
	idx, err := s.raftApply(ctx, msgUpsertNode, &upsertNodeCmd{Node: c})
	if err != nil {
		return err
	}
	resp.HeartbeatTTL = s.hb.reset(n.ID)
	if becameReady {
		s.retryBlocked(ctx)
	}
	resp.Index = idx
	resp.BindOrder = bindOrderWritten(idx)
	return nil
}

// nodeUnchanged reports whether a registration c (normalised as it would
// be written) would change nothing about the stored ready node old but
// the fields the server keeps itself (status time, events, indexes). Maps
// compare by content, nil equal to empty; times by instant.
func nodeUnchanged(old, c *structs.Node) bool {
	if old.Status != structs.NodeStatusReady || old.StatusDescription != "" ||
		c.Status != old.Status || c.StatusDescription != old.StatusDescription {
		return false
	}
	if old.SecretID != c.SecretID || old.Datacenter != c.Datacenter || old.Name != c.Name ||
		old.HTTPAddr != c.HTTPAddr || old.TLSEnabled != c.TLSEnabled || old.NodeClass != c.NodeClass ||
		old.NodePool != c.NodePool || old.CgroupParent != c.CgroupParent || old.Drain != c.Drain ||
		old.SchedulingEligibility != c.SchedulingEligibility {
		return false
	}
	if !maps.Equal(old.Attributes, c.Attributes) || !maps.Equal(old.Meta, c.Meta) || !maps.Equal(old.Links, c.Links) {
		return false
	}
	if !ptrEqual(old.Resources, c.Resources) || !ptrEqual(old.Reserved, c.Reserved) || !old.NodeResources.Equal(c.NodeResources) ||
		!ptrEqual(old.ReservedResources, c.ReservedResources) {
		return false
	}
	if !maps.EqualFunc(old.Drivers, c.Drivers, driverEqual) {
		return false
	}
	return anyMapEqual(old.HostVolumes, c.HostVolumes) && anyMapEqual(old.HostNetworks, c.HostNetworks) &&
		anyMapEqual(old.CSIControllerPlugins, c.CSIControllerPlugins) && anyMapEqual(old.CSINodePlugins, c.CSINodePlugins)
}

func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func driverEqual(a, b *structs.DriverInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Detected == b.Detected && a.Healthy == b.Healthy && a.HealthDescription == b.HealthDescription &&
		a.UpdateTime.Equal(b.UpdateTime) && maps.Equal(a.Attributes, b.Attributes)
}

// anyMapEqual compares free-form maps; both sides were decoded by the same
// codec, so DeepEqual is exact enough, and a false "changed" only costs a
// write.
func anyMapEqual(a, b map[string]any) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// nodeSchedulingEqual reports whether what placement looks at is unchanged.
func nodeSchedulingEqual(a, b *structs.Node) bool {
	if a.Datacenter != b.Datacenter || a.Name != b.Name || a.NodeClass != b.NodeClass || len(a.Meta) != len(b.Meta) {
		return false
	}
	for k, v := range a.Meta {
		if b.Meta[k] != v {
			return false
		}
	}
	return true
}

// nodeHeartbeat keeps a node alive. The session is bound here; the TTL is
// kept (and the status written) by the leader.
func (s *Server) nodeHeartbeat(ctx context.Context, req *structs.NodeHeartbeatRequest, resp *structs.NodeHeartbeatResponse) error {
	s.nodeHeartbeats.Add(1)
	defer s.metrics.measureSince(keyClientUpdateStatus, time.Now())
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	if sess := rpc.SessionFromContext(ctx); sess != nil && s.sessions.nodeOf(sess) != req.NodeID {
		// A new session of the node: admitted like a registration.
		if err := s.adm.admit(req.NodeID, time.Now()); err != nil {
			return err
		}
	}
	if err := s.bindSession(ctx, req.NodeID, 0); err != nil {
		return err
	}
	var lresp structs.NodeHeartbeatResponse
	if err := s.leaderCall(ctx, methodLeaderNodeHeartbeat, req, &lresp, func(ctx context.Context) error {
		return s.heartbeatNodeLeader(ctx, req, &lresp)
	}); err != nil {
		return err
	}
	resp.HeartbeatTTL = lresp.HeartbeatTTL
	resp.Servers = s.rpcServers()
	resp.Index = lresp.Index
	resp.AllocIndex = s.store.NodeAllocIndex(req.NodeID)
	return nil
}

// heartbeatNodeLeader is the leader's half of a heartbeat.
func (s *Server) heartbeatNodeLeader(ctx context.Context, req *structs.NodeHeartbeatRequest, resp *structs.NodeHeartbeatResponse) error {
	s.leaderHeartbeats.Add(1)
	n, err := s.store.Node(req.NodeID)
	if err != nil {
		return err
	}
	if n == nil {
		return structs.ErrUnknownNode(req.NodeID)
	}
	if n.SecretID != req.SecretID {
		return structs.NewError(http.StatusForbidden, "node secret ID does not match")
	}
	status := req.Status
	if status == "" {
		status = structs.NodeStatusReady
	}
	idx := s.store.LatestIndex()
	if n.Status != status || n.StatusDescription != "" {
		if idx, err = s.raftApply(ctx, msgUpdateNodeStatus, &nodeStatusCmd{
			NodeID: req.NodeID, Status: status, At: time.Now().UnixNano(),
		}); err != nil {
			return err
		}
	}
	resp.HeartbeatTTL = s.hb.reset(req.NodeID)
	if n.Status != status && status == structs.NodeStatusReady {
		s.retryBlocked(ctx)
	}
	resp.Index = idx
	return nil
}

func (s *Server) nodeList(ctx context.Context, req *structs.NodeListRequest, resp *structs.NodeListResponse) error {
	if err := s.requireNodeRead(req.AuthToken); err != nil {
		return err
	}
	var err error
	resp.Index, err = s.store.Blocking(ctx, req.BlockingOptions, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.store.TableIndex(ws, tableNodes)
		nodes, err := s.store.Nodes(req.Prefix)
		if err != nil {
			return 0, err
		}
		resp.Nodes = make([]*structs.NodeListStub, 0, len(nodes))
		for _, n := range nodes {
			resp.Nodes = append(resp.Nodes, n.Stub(req.Resources))
		}
		return idx, nil
	})
	return err
}

// nodeGet reads one node: its ModifyIndex is the read's index, the nodes
// table's when the node is unknown.
func (s *Server) nodeGet(ctx context.Context, req *structs.NodeGetRequest, resp *structs.SingleNodeResponse) error {
	if err := s.requireNodeRead(req.AuthToken); err != nil {
		return err
	}
	var err error
	resp.Index, err = s.store.Blocking(ctx, req.BlockingOptions, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.store.TableIndex(ws, tableNodes)
		n, err := s.store.Node(req.NodeID)
		if err != nil {
			return 0, err
		}
		resp.Node = nil
		if n != nil {
			n.SecretID = "" // n is the store's copy
			resp.Node, idx = n, n.ModifyIndex
		}
		return idx, nil
	})
	return err
}

func (s *Server) statusPeers(ctx context.Context, req *structs.QueryOptions, resp *structs.StatusResponse) error {
	resp.Leader = s.Leader()
	resp.Peers = s.Peers()
	return nil
}
