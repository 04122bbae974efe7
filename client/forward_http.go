package client

import (
	"context"
	"errors"

	"tether/rpc"
	"tether/structs"
)

// ForwardHTTP calls HTTP.Forward (structs.MethodHTTPForward) on the node's
// current session: the server replays req against its HTTP API and
// answers the whole response. With no server connection it fails at once
// with structs.ErrNoServers: the caller is answered, never kept waiting
// for a reconnection.
func (c *Client) ForwardHTTP(ctx context.Context, req *structs.HTTPForwardRequest) (*structs.HTTPForwardResponse, error) {
	sess := c.conn.current()
	if sess == nil {
		return nil, structs.ErrNoServers
	}
	var resp structs.HTTPForwardResponse
	if err := sess.Call(ctx, structs.MethodHTTPForward, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ForwardHTTPStream opens HTTP.ForwardStream
// (structs.MethodHTTPForwardStream) on the node's current session, for an
// answer of any size: the server streams the response back. With no
// server connection, or one that dies before the stream opens, it fails
// with structs.ErrNoServers at once.
func (c *Client) ForwardHTTPStream(ctx context.Context, req *structs.HTTPForwardRequest) (*rpc.Stream, error) {
	sess := c.conn.current()
	if sess == nil {
		return nil, structs.ErrNoServers
	}
	st, err := sess.OpenStream(ctx, structs.MethodHTTPForwardStream, req)
	if err != nil {
		if errors.Is(err, rpc.ErrSessionClosed) && ctx.Err() == nil {
			return nil, structs.ErrNoServers
		}
		return nil, err
	}
	return st, nil
}
