package server

import (
	"context"
	"errors"
	"net"

	"tether/rpc"
)

// Bulk reads of a node whose session this server holds go around the
// session (rpc/dataconn.go, rpc/datacall.go): the first on a data
// connection the node dials back with a token, the next ones as data
// calls on the connections earlier reads left behind.

// OfferData returns a data connection token for a bulk transfer from the
// route's node, when this server holds that node's session (the node
// dials back the address it reached this server at). The connection
// arrives on conns; cancel releases the token.
func (r *Route) OfferData() (token []byte, conns <-chan net.Conn, cancel func(), ok bool) {
	if !r.Local() {
		return nil, nil, nil, false
	}
	token, conns, cancel, err := r.s.rpcSrv.ExpectData()
	if err != nil {
		return nil, nil, nil, false
	}
	return token, conns, cancel, true
}

// PoolData keeps a data connection from the route's node whose transfer
// ended exactly at its length, for that node's next data call.
func (r *Route) PoolData(dc net.Conn) {
	if !r.Local() {
		dc.Close()
		return
	}
	r.s.rpcSrv.PoolData(r.NodeID, dc)
}

// DataCall makes method's data call to the route's node on a pooled data
// connection. With dc nil and a nil error there was no connection to make
// it on, and the caller opens a stream instead. An error is the node's
// answer. Otherwise reply is filled and the bytes follow: head, then dc;
// the caller reads them and then gives dc to keep if they came whole (it
// goes back to the node's pool), or closes it.
func (r *Route) DataCall(ctx context.Context, method string, args, reply any) (dc net.Conn, head []byte, keep func(net.Conn), err error) {
	s := r.s
	dc = s.rpcSrv.TakeData(r.NodeID)
	if dc == nil {
		return nil, nil, nil, nil
	}
	head, err = s.rpcSrv.CallData(ctx, dc, method, args, reply)
	var re *rpc.RemoteError
	switch {
	case err == nil:
		s.dataCalls.Add(1)
		return dc, head, func(c net.Conn) { s.rpcSrv.PoolData(r.NodeID, c) }, nil
	case errors.As(err, &re):
		s.rpcSrv.PoolData(r.NodeID, dc) // answered: still good
		return nil, nil, nil, err
	case errors.Is(err, rpc.ErrDataConnLost):
		// Not served. The node closed it: most likely it restarted, and
		// the rest of its pool is as dead. Drop them all; the stream
		// serves this read, and the next reads make new connections.
		dc.Close()
		s.DropData(r.NodeID)
		return nil, nil, nil, nil
	default:
		dc.Close()
		return nil, nil, nil, err
	}
}

// DropData closes the data connections pooled for nodeID; its next bulk
// reads take a stream and dial again.
func (s *Server) DropData(nodeID string) { s.rpcSrv.DropData(nodeID) }
