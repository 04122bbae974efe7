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
// node running allocID, when this server holds that node's session (the
// node dials back the address it reached this server at). The connection
// arrives on conns; cancel releases the token.
func (s *Server) OfferData(allocID string) (token []byte, conns <-chan net.Conn, cancel func(), ok bool) {
	a, err := s.ResolveAlloc(allocID)
	if err != nil || s.sessions.get(a.NodeID) == nil {
		return nil, nil, nil, false
	}
	token, conns, cancel, err = s.rpcSrv.ExpectData()
	if err != nil {
		return nil, nil, nil, false
	}
	return token, conns, cancel, true
}

// PoolData keeps a data connection from the node running allocID whose
// transfer ended exactly at its length, for that node's next data call.
func (s *Server) PoolData(allocID string, dc net.Conn) {
	a, err := s.ResolveAlloc(allocID)
	if err != nil || s.sessions.get(a.NodeID) == nil {
		dc.Close()
		return
	}
	s.rpcSrv.PoolData(a.NodeID, dc)
}

// AllocDataCall makes method's data call to the node running allocID on
// a pooled data connection, after the checks AllocStream makes. With
// dc nil and a nil error there was no connection to make it on, and the
// caller opens a stream instead. An error is the call's answer (the
// node's, or the caller's token's). Otherwise reply is filled and the
// bytes follow: head, then dc; the caller reads them and then gives dc
// to keep if they came whole (it goes back to the node's pool), or
// closes it.
func (s *Server) AllocDataCall(ctx context.Context, allocID, method string, args, reply any) (dc net.Conn, head []byte, keep func(net.Conn), err error) {
	if err := s.checkToken(args); err != nil {
		return nil, nil, nil, err
	}
	a, err := s.ResolveAlloc(allocID)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := s.authorizeClientCall(method, args); err != nil {
		return nil, nil, nil, err
	}
	dc = s.rpcSrv.TakeData(a.NodeID)
	if dc == nil {
		return nil, nil, nil, nil
	}
	head, err = s.rpcSrv.CallData(ctx, dc, method, args, reply)
	var re *rpc.RemoteError
	switch {
	case err == nil:
		s.dataCalls.Add(1)
		return dc, head, func(c net.Conn) { s.rpcSrv.PoolData(a.NodeID, c) }, nil
	case errors.As(err, &re):
		s.rpcSrv.PoolData(a.NodeID, dc) // answered: still good
		return nil, nil, nil, err
	case errors.Is(err, rpc.ErrDataConnLost):
		// Not served. The node closed it: most likely it restarted, and
		// the rest of its pool is as dead. Drop them all; the stream
		// serves this read, and the next reads make new connections.
		dc.Close()
		s.DropData(a.NodeID)
		return nil, nil, nil, nil
	default:
		dc.Close()
		return nil, nil, nil, err
	}
}

// DropData closes the data connections pooled for nodeID; its next bulk
// reads take a stream and dial again.
func (s *Server) DropData(nodeID string) { s.rpcSrv.DropData(nodeID) }
