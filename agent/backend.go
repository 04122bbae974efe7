package agent

import (
	"context"

	"tether/client"
	"tether/server"
	"tether/structs"
)

// backend answers the HTTP API's calls from whatever runs in this process:
// the local node for calls that name no node or this node, the server's
// forwarding layer for other nodes, and, on a node-only agent, the servers
// reached over the node's own session. Client calls are decided once, by
// route (route.go); server calls go to serverCall.
type backend struct {
	server *server.Server // nil on a node-only agent
	client *client.Client // nil on a server-only agent
	calls  *callMetrics   // nil with telemetry off
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
func (b *backend) getNode(ctx context.Context, req *structs.NodeGetRequest) (*structs.SingleNodeResponse, error) {
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
