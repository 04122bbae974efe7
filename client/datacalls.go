package client

import (
	"context"
	"net"
	"sync"

	"tether/rpc"
	"tether/structs"
)

// dataCallers owns the goroutines that answer a server's data calls on
// the data connections earlier bulk reads left open (rpc.ServeDataCalls,
// with the bulk methods of the node's mux).
// The zero value is ready to use.
type dataCallers struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// serveDataCalls answers the server's data calls on dc, a data connection
// whose transfer ended exactly at its length, until either side closes it
// or the agent stops.
func (c *Client) serveDataCalls(dc net.Conn) {
	d := &c.dataCallers
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		dc.Close()
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		rpc.ServeDataCalls(c.ctx, dc, c.rpcCfg, c.mux)
	}()
}

// stop waits for the data call goroutines, which end with the agent's
// context; later connections are closed at once.
func (d *dataCallers) stop() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.wg.Wait()
}

// fsReadAtBulk answers a cat or readat made as a data call, with the
// same checks and the same bytes as on the stream (fsReadAt): the header,
// then exactly its length, by sendfile(2) where the connection allows.
func (c *Client) fsReadAtBulk(ctx context.Context, req *structs.FsReadAtRequest, resp *structs.FsReadAtHeader, reply *rpc.BulkReply) error {
	r, err := c.OpenReadAt(ctx, req)
	if err != nil {
		return err
	}
	defer r.Close()
	*resp = *r.Header()
	dc, err := reply.Send()
	if err != nil {
		return err
	}
	return sendData(ctx, dc, r)
}
