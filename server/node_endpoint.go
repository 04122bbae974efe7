package server

import (
	"context"
	"net/http"
	"time"

	"tether/rpc"
	"tether/structs"
)

// registerEndpoints fills the server's RPC method table: the methods node
// agents call, and forwarding stubs for client methods that a node agent
// relays on behalf of its own HTTP callers.
func (s *Server) registerEndpoints() {
	rpc.HandleUnary(s.mux, structs.MethodNodeRegister, s.nodeRegister)
	rpc.HandleUnary(s.mux, structs.MethodNodeHeartbeat, s.nodeHeartbeat)
	rpc.HandleUnary(s.mux, structs.MethodNodeList, s.nodeList)
	rpc.HandleUnary(s.mux, structs.MethodNodeGet, s.nodeGet)
	rpc.HandleUnary(s.mux, structs.MethodStatusPeers, s.statusPeers)
	rpc.HandleUnary(s.mux, structs.MethodNodeGetClientAllocs, s.nodeGetClientAllocs)
	rpc.HandleUnary(s.mux, structs.MethodNodeUpdateAlloc, s.nodeUpdateAlloc)

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
}

// forwardAllocRPC registers an allocation-targeted client method that the
// server relays to the allocation's node.
func forwardAllocRPC[Req, Resp any](s *Server, method string, allocIDOf func(*Req) string) {
	rpc.HandleUnary(s.mux, method, func(ctx context.Context, req *Req, resp *Resp) error {
		return s.AllocRPC(ctx, allocIDOf(req), method, req, resp)
	})
}

func allocIDOfReq(r *structs.AllocSpecificRequest) string { return r.AllocID }

// forwardNodeRPC registers method on the server so that a caller on any
// session (a node agent relaying for its HTTP API) reaches the named node.
func forwardNodeRPC[Req, Resp any](s *Server, method string, nodeIDOf func(*Req) string) {
	rpc.HandleUnary(s.mux, method, func(ctx context.Context, req *Req, resp *Resp) error {
		return s.NodeRPC(ctx, nodeIDOf(req), method, req, resp)
	})
}

func (s *Server) nodeRegister(ctx context.Context, req *structs.NodeRegisterRequest, resp *structs.NodeRegisterResponse) error {
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
	c.StatusUpdatedAt = time.Now().UnixNano()
	becameReady := old == nil || old.Status != structs.NodeStatusReady || !nodeSchedulingEqual(old, c)
	if old == nil {
		c.Events = []*structs.NodeEvent{{Message: "Node registered", Subsystem: "Cluster", Timestamp: time.Now().UTC().Format(time.RFC3339Nano)}}
	} else {
		c.Events = old.Events
	}
	idx, err := s.store.UpsertNode(c)
	if err != nil {
		return err
	}
	if err := s.bindSession(ctx, n.ID); err != nil {
		return err
	}
	s.hb.reset(n.ID)
	if becameReady {
		s.retryBlocked()
	}
	resp.HeartbeatTTL = s.cfg.HeartbeatTTL
	resp.Servers = s.Peers()
	resp.Index = idx
	return nil
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

func (s *Server) nodeHeartbeat(ctx context.Context, req *structs.NodeHeartbeatRequest, resp *structs.NodeHeartbeatResponse) error {
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
	if err := s.bindSession(ctx, req.NodeID); err != nil {
		return err
	}
	status := req.Status
	if status == "" {
		status = structs.NodeStatusReady
	}
	idx, err := s.store.UpdateNodeStatus(req.NodeID, status, "", time.Now().UnixNano())
	if err != nil {
		return err
	}
	s.hb.reset(req.NodeID)
	if n.Status != status && status == structs.NodeStatusReady {
		s.retryBlocked()
	}
	resp.HeartbeatTTL = s.cfg.HeartbeatTTL
	resp.Servers = s.Peers()
	resp.Index = idx
	return nil
}

func (s *Server) nodeList(ctx context.Context, req *structs.NodeListRequest, resp *structs.NodeListResponse) error {
	nodes, err := s.store.Nodes(req.Prefix)
	if err != nil {
		return err
	}
	resp.Nodes = make([]*structs.NodeListStub, 0, len(nodes))
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, n.Stub())
		if n.ModifyIndex > resp.Index {
			resp.Index = n.ModifyIndex
		}
	}
	return nil
}

func (s *Server) nodeGet(ctx context.Context, req *structs.NodeSpecificRequest, resp *structs.SingleNodeResponse) error {
	n, err := s.store.Node(req.NodeID)
	if err != nil {
		return err
	}
	if n != nil {
		resp.Node = n.Sanitize()
		resp.Index = n.ModifyIndex
	}
	return nil
}

func (s *Server) statusPeers(ctx context.Context, req *structs.QueryOptions, resp *structs.StatusResponse) error {
	resp.Leader = s.Leader()
	resp.Peers = s.Peers()
	return nil
}
