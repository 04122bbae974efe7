package client

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"

	"tether/rpc"
	"tether/structs"
)

// registerJSONEndpoints adds the JSON variants of the small client
// methods (see structs.JSONMethodSuffix). Each runs the same handler, with
// the same checks, and encodes what the HTTP API returns for it.
func (c *Client) registerJSONEndpoints() {
	registerJSON(c, structs.MethodClientStats, c.hostStats, func(r *structs.HostStats) any { return c.statsJSON.get(r) })
	rpc.HandleUnary(c.mux, structs.MethodNodeMetaRead+structs.JSONMethodSuffix, c.metaReadJSON)
	registerJSON(c, structs.MethodNodeMetaApply, c.metaApply, func(r *structs.NodeMetaResponse) any { return r })
	registerJSON(c, structs.MethodClientAllocStats, c.allocStats, func(r *structs.AllocResourceUsage) any { return r })
	registerJSON(c, structs.MethodFsList, c.fsList, func(r *structs.FsListResponse) any {
		if r.Files == nil {
			return []*structs.AllocFileInfo{}
		}
		return r.Files
	})
	registerJSON(c, structs.MethodFsStat, c.fsStat, func(r *structs.FsStatResponse) any { return r.Info })
}

// registerJSON registers method+JSONMethodSuffix: fn's reply, projected to
// what the HTTP API returns, encoded as JSON (HTML characters kept, no
// trailing newline).
func registerJSON[Req, Resp any](c *Client, method string, fn func(context.Context, *Req, *Resp) error, project func(*Resp) any) {
	rpc.HandleUnary(c.mux, method+structs.JSONMethodSuffix, func(ctx context.Context, req *Req, out *structs.JSONResponse) error {
		var resp Resp
		if err := fn(ctx, req, &resp); err != nil {
			return err
		}
		v := project(&resp)
		if raw, ok := v.(json.RawMessage); ok {
			// Already encoded (host stats, once per sample): encoding/json
			// would only validate and compact it again, which was a sixth
			// of what a forwarded stats call cost the node.
			out.Body = raw
			return nil
		}
		body, err := encodeJSON(v)
		if err != nil {
			return err
		}
		out.Body = body
		return nil
	})
}

// statsJSONCache keeps the JSON of the latest host stats sample: samples
// change once per interval, calls can come thousands of times a second.
type statsJSONCache struct {
	mu   sync.Mutex
	ts   int64
	body json.RawMessage
}

// get returns s encoded, reusing the encoding of the same sample.
func (c *statsJSONCache) get(s *structs.HostStats) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body != nil && c.ts == s.Timestamp {
		return c.body
	}
	body, err := encodeJSON(s)
	if err != nil {
		return s
	}
	c.ts, c.body = s.Timestamp, body
	return c.body
}

// metaReadJSON is metaRead's JSON variant: the same checks, and the
// metadata encoded once per change rather than per call.
func (c *Client) metaReadJSON(ctx context.Context, req *structs.NodeSpecificRequest, out *structs.JSONResponse) error {
	if err := c.checkMetaRead(ctx, req); err != nil {
		return err
	}
	body, err := c.meta.readJSON()
	if err != nil {
		return err
	}
	out.Body = body
	return nil
}

// encodeJSON encodes v as the HTTP API does: HTML characters kept, no
// trailing newline.
func encodeJSON(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
