package client

import (
	"context"
	"errors"

	"tether/rpc"
	"tether/structs"
)

// ForwardHTTP opens HTTP.Forward (structs.MethodHTTPForward) on the node's
// current session: the server replays req against its HTTP API and streams
// the answer back. With no server connection, or one that dies before the
// stream opens, it fails with structs.ErrNoServers at once: the caller is
// answered, never kept waiting for a reconnection.
func (c *Client) ForwardHTTP(ctx context.Context, req *structs.HTTPForwardRequest) (*rpc.Stream, error) {
	sess := c.conn.current()
	if sess == nil {
		return nil, structs.ErrNoServers
	}
	st, err := sess.OpenStream(ctx, structs.MethodHTTPForward, req)
	if err != nil {
		if errors.Is(err, rpc.ErrSessionClosed) && ctx.Err() == nil {
			return nil, structs.ErrNoServers
		}
		return nil, err
	}
	return st, nil
}
