package client

import (
	"context"

	"tether/rpc"
	"tether/structs"
)

// registerEndpoints fills the node's RPC method table.
func (c *Client) registerEndpoints() {
	rpc.HandleUnary(c.mux, structs.MethodClientStats, c.hostStats)
	rpc.HandleUnary(c.mux, structs.MethodNodeMetaRead, c.metaRead)
	rpc.HandleUnary(c.mux, structs.MethodNodeMetaApply, c.metaApply)
	rpc.HandleUnary(c.mux, structs.MethodClientAllocStats, c.allocStats)
	rpc.HandleUnary(c.mux, structs.MethodClientAllocGC, c.allocGC)
	rpc.HandleUnary(c.mux, structs.MethodClientGCAll, c.gcAll)
	rpc.HandleUnary(c.mux, structs.MethodClientAllocsChanged, c.allocsChanged)
	c.registerFSEndpoints()
	c.registerArchiveEndpoint()
	c.registerLifecycleEndpoints()
	c.registerJSONForms()
}

// allocsChanged is the servers' push: the node's allocations changed at
// req.Index. It only schedules a pull (the answer does not wait for it), so
// a caller other than the node's server can make the node do no more than
// ask its server once.
func (c *Client) allocsChanged(ctx context.Context, req *structs.AllocsChangedRequest, resp *structs.GenericResponse) error {
	c.allocs.announce(req.Index)
	return nil
}

// runnerFor returns the allocation's runner or a 404.
func (c *Client) runnerFor(allocID string) (*allocRunner, error) {
	if err := structs.ValidateUUID("alloc", allocID); err != nil {
		return nil, err
	}
	ar := c.allocs.get(allocID)
	if ar == nil {
		return nil, structs.ErrUnknownAllocation(allocID)
	}
	return ar, nil
}

func (c *Client) allocStats(ctx context.Context, req *structs.AllocSpecificRequest, resp *structs.AllocResourceUsage) error {
	if err := c.authorizeAlloc(ctx, structs.MethodClientAllocStats, req, req.AllocID); err != nil {
		return err
	}
	ar, err := c.runnerFor(req.AllocID)
	if err != nil {
		return err
	}
	*resp = *ar.stats()
	return nil
}

func (c *Client) allocGC(ctx context.Context, req *structs.AllocSpecificRequest, resp *structs.GenericResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodClientAllocGC, req, req.AllocID); err != nil {
		return err
	}
	if err := structs.ValidateUUID("alloc", req.AllocID); err != nil {
		return err
	}
	return c.allocs.gc(req.AllocID)
}

func (c *Client) gcAll(ctx context.Context, req *structs.NodeSpecificRequest, resp *structs.GenericResponse) error {
	if err := c.authorizeNode(ctx, structs.MethodClientGCAll, req); err != nil {
		return err
	}
	if err := c.checkNode(req.NodeID); err != nil {
		return err
	}
	return c.allocs.gcAll()
}

// checkNode refuses a request addressed to another node: it means a
// server routed it wrongly.
func (c *Client) checkNode(nodeID string) error {
	if nodeID != "" && nodeID != c.id.NodeID {
		return structs.BadRequest("request for node %s reached node %s", nodeID, c.id.NodeID)
	}
	return nil
}

func (c *Client) hostStats(ctx context.Context, req *structs.NodeSpecificRequest, resp *structs.HostStats) error {
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); err != nil {
		return err
	}
	if err := c.checkNode(req.NodeID); err != nil {
		return err
	}
	*resp = *c.stats.Latest()
	return nil
}

func (c *Client) metaRead(ctx context.Context, req *structs.NodeSpecificRequest, resp *structs.NodeMetaResponse) error {
	if err := c.authorizeNode(ctx, structs.MethodNodeMetaRead, req); err != nil {
		return err
	}
	if err := c.checkNode(req.NodeID); err != nil {
		return err
	}
	*resp = *c.meta.read()
	return nil
}

func (c *Client) metaApply(ctx context.Context, req *structs.NodeMetaApplyRequest, resp *structs.NodeMetaResponse) error {
	if err := c.authorizeNode(ctx, structs.MethodNodeMetaApply, req); err != nil {
		return err
	}
	if err := c.checkNode(req.NodeID); err != nil {
		return err
	}
	out, err := c.meta.apply(req.Meta)
	if err != nil {
		return err
	}
	c.conn.triggerSync()
	*resp = *out
	return nil
}
