package agent

import (
	"context"
	"net"

	"tether/client"
	"tether/rpc"
	"tether/server"
	"tether/structs"
)

// backend answers the HTTP API's calls from whatever runs in this process:
// the local node for calls that name no node or this node, the server's
// forwarding layer for other nodes, and, on a node-only agent, the servers
// reached over the node's own session.
type backend struct {
	server *server.Server // nil on a node-only agent
	client *client.Client // nil on a server-only agent
}

// nodeRPC runs a client method on nodeID ("" = this agent's node).
func (b *backend) nodeRPC(ctx context.Context, nodeID, method string, args, reply any) error {
	if nodeID != "" {
		if err := structs.ValidateUUID("node", nodeID); err != nil {
			return err
		}
	}
	switch {
	case b.localNode(nodeID):
		return b.client.Mux().CallLocal(ctx, method, args, reply)
	case nodeID == "":
		return structs.ErrNoNodeID
	case b.server != nil:
		return b.server.NodeRPC(ctx, nodeID, method, args, reply)
	default:
		// A node-only agent asks its server, which forwards to the node.
		return b.client.ServerRPC(ctx, method, args, reply)
	}
}

// serverCall runs a server method: in process on a server, over the
// node's session on a node-only agent.
func (b *backend) serverCall(ctx context.Context, method string, args, reply any) error {
	if b.server != nil {
		return b.server.Mux().CallLocal(ctx, method, args, reply)
	}
	return b.client.ServerRPC(ctx, method, args, reply)
}

// listNodes lists nodes whose ID starts with prefix.
func (b *backend) listNodes(ctx context.Context, req *structs.NodeListRequest) (*structs.NodeListResponse, error) {
	var resp structs.NodeListResponse
	err := b.serverCall(ctx, structs.MethodNodeList, req, &resp)
	return &resp, err
}

// getNode returns a node (nil when unknown).
func (b *backend) getNode(ctx context.Context, req *structs.NodeSpecificRequest) (*structs.SingleNodeResponse, error) {
	var resp structs.SingleNodeResponse
	err := b.serverCall(ctx, structs.MethodNodeGet, req, &resp)
	return &resp, err
}

// status returns the leader and peers.
func (b *backend) status(ctx context.Context) (*structs.StatusResponse, error) {
	if b.server != nil {
		return &structs.StatusResponse{Leader: b.server.Leader(), Peers: b.server.Peers()}, nil
	}
	var resp structs.StatusResponse
	err := b.client.ServerRPC(ctx, structs.MethodStatusPeers, &structs.QueryOptions{}, &resp)
	return &resp, err
}

// localNode reports whether nodeID ("" = this agent's node) is served in
// process.
func (b *backend) localNode(nodeID string) bool {
	return b.client != nil && (nodeID == "" || nodeID == b.client.NodeID())
}

// localAlloc reports whether this agent's node runs the allocation.
func (b *backend) localAlloc(allocID string) bool {
	return b.client != nil && b.client.HasAlloc(allocID)
}

// checkAllocID refuses a missing or malformed allocation ID.
func checkAllocID(allocID string) error {
	if allocID == "" {
		return structs.BadRequest("must provide a valid alloc id")
	}
	return structs.ValidateUUID("alloc", allocID)
}

// allocRPC runs a client method on the node that owns allocID: this node
// when it runs the allocation, else through the servers.
func (b *backend) allocRPC(ctx context.Context, allocID, method string, args, reply any) error {
	if err := checkAllocID(allocID); err != nil {
		return err
	}
	switch {
	case b.localAlloc(allocID):
		return b.client.Mux().CallLocal(ctx, method, args, reply)
	case b.server != nil:
		return b.server.AllocRPC(ctx, allocID, method, args, reply)
	default:
		return b.client.ServerRPC(ctx, method, args, reply)
	}
}

// allocStream opens a streaming client method on the node that owns
// allocID.
func (b *backend) allocStream(ctx context.Context, allocID, method string, args any) (*rpc.Stream, error) {
	if err := checkAllocID(allocID); err != nil {
		return nil, err
	}
	switch {
	case b.localAlloc(allocID):
		return b.client.Mux().OpenLocal(ctx, method, args)
	case b.server != nil:
		return b.server.AllocStream(ctx, allocID, method, args)
	default:
		return b.client.ServerStream(ctx, method, args)
	}
}

// offerData offers the node running allocID a data connection for a bulk
// read, when this agent is the server holding the node's session (see
// server.OfferData). With no offer, token and conns are nil and the bytes
// come on the stream. cancel, never nil, releases the offer.
func (b *backend) offerData(allocID string) (token []byte, conns <-chan net.Conn, cancel func()) {
	if b.server != nil && !b.localAlloc(allocID) {
		if token, conns, cancel, ok := b.server.OfferData(allocID); ok {
			return token, conns, cancel
		}
	}
	return nil, nil, func() {}
}

// poolData hands a data connection from the node running allocID whose
// transfer ended cleanly to the server, for that node's next data call.
func (b *backend) poolData(allocID string, dc net.Conn) {
	if b.server == nil {
		dc.Close()
		return
	}
	b.server.PoolData(allocID, dc)
}

// allocDataCall makes a bulk read of the node running allocID as a data
// call (server.AllocDataCall), when this agent is a server that has a
// data connection of that node to make it on; else dc is nil and the
// read takes a stream.
func (b *backend) allocDataCall(ctx context.Context, allocID, method string, args, reply any) (dc net.Conn, head []byte, keep func(net.Conn), err error) {
	if err := checkAllocID(allocID); err != nil {
		return nil, nil, nil, err
	}
	if b.server == nil || b.localAlloc(allocID) {
		return nil, nil, nil, nil
	}
	return b.server.AllocDataCall(ctx, allocID, method, args, reply)
}

// rawJSON is a reply already encoded as the HTTP API's JSON.
type rawJSON []byte

// nodeRPCJSON is nodeRPC for the HTTP API: the node answers the method's
// JSON variant, in process or through a server that passes the bytes
// through untouched; a node-only agent asking its server for another node
// gets the typed reply, for the HTTP layer to encode.
// project gives what the HTTP API returns from reply.
func (b *backend) nodeRPCJSON(ctx context.Context, nodeID, method string, args, reply any, project func() any) (any, error) {
	if b.localNode(nodeID) { // "" or this node's own (valid) ID
		return b.localJSON(ctx, method, args)
	}
	if b.server != nil {
		var out structs.JSONResponse
		if err := b.server.NodeRPC(ctx, nodeID, method+structs.JSONMethodSuffix, args, &out); err != nil {
			return nil, err
		}
		return rawJSON(out.Body), nil
	}
	if err := b.nodeRPC(ctx, nodeID, method, args, reply); err != nil {
		return nil, err
	}
	return project(), nil
}

// localJSON runs the JSON variant of a client method of this agent's node
// in process: the same bytes a server would pass through, and host stats
// encoded once per sample rather than per call.
func (b *backend) localJSON(ctx context.Context, method string, args any) (any, error) {
	var out structs.JSONResponse
	if err := b.client.Mux().CallLocal(ctx, method+structs.JSONMethodSuffix, args, &out); err != nil {
		return nil, err
	}
	return rawJSON(out.Body), nil
}

// allocRPCJSON is allocRPC for the HTTP API, as nodeRPCJSON.
func (b *backend) allocRPCJSON(ctx context.Context, allocID, method string, args, reply any, project func() any) (any, error) {
	if err := checkAllocID(allocID); err != nil {
		return nil, err
	}
	if b.localAlloc(allocID) {
		return b.localJSON(ctx, method, args)
	}
	if b.server != nil {
		var out structs.JSONResponse
		if err := b.server.AllocRPC(ctx, allocID, method+structs.JSONMethodSuffix, args, &out); err != nil {
			return nil, err
		}
		return rawJSON(out.Body), nil
	}
	if err := b.allocRPC(ctx, allocID, method, args, reply); err != nil {
		return nil, err
	}
	return project(), nil
}
