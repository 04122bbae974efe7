package client

import (
	"sync"

	"tether/rpc"
	"tether/structs"
)

// registerJSONForms registers, by reply type, the JSON the HTTP API shows
// for the replies of the node's small methods (rpc.RegisterJSON): a
// server or the node's own HTTP API asks a method for JSON and passes the
// bytes on. Replies not listed encode as they are.
func (c *Client) registerJSONForms() {
	// Host stats change once per sample and are read far more often:
	// encoded once per sample, by the collector, for every node that
	// shares it.
	rpc.RegisterJSON(c.mux, c.stats.json.encode)
	// Metadata changes on applies only: encoded once per change.
	rpc.RegisterJSON(c.mux, c.meta.jsonOf)
	// ls shows the list (never null), stat the one entry.
	rpc.RegisterJSON(c.mux, func(r *structs.FsListResponse) ([]byte, error) {
		if r.Files == nil {
			return []byte("[]"), nil
		}
		return rpc.EncodeJSON(r.Files)
	})
	rpc.RegisterJSON(c.mux, func(r *structs.FsStatResponse) ([]byte, error) {
		return rpc.EncodeJSON(r.Info)
	})
}

// statsJSONCache keeps the JSON of the latest host stats sample: samples
// change once per interval, calls can come thousands of times a second.
type statsJSONCache struct {
	mu   sync.Mutex
	ts   int64
	body []byte
}

// encode returns s encoded, reusing the encoding of the same sample. The
// bytes are shared and must not be modified.
func (c *statsJSONCache) encode(s *structs.HostStats) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body != nil && c.ts == s.Timestamp {
		return c.body, nil
	}
	body, err := rpc.EncodeJSON(s)
	if err != nil {
		return nil, err
	}
	c.ts, c.body = s.Timestamp, body
	return body, nil
}
