package server

import (
	"context"
	"errors"
	"io"

	"tether/rpc"
	"tether/structs"
)

// registerStreamForwards registers the streaming client methods a node
// agent relays through the server for its HTTP callers.
func (s *Server) registerStreamForwards() {
	forwardAllocStream[structs.FsReadAtRequest, structs.FsReadAtHeader](s, structs.MethodFsReadAt, func(r *structs.FsReadAtRequest) string { return r.AllocID })
	forwardAllocStream[structs.FsStreamRequest, structs.StreamFrame](s, structs.MethodFsStream, func(r *structs.FsStreamRequest) string { return r.AllocID })
	forwardAllocStream[structs.FsLogsRequest, structs.StreamFrame](s, structs.MethodFsLogs, func(r *structs.FsLogsRequest) string { return r.AllocID })
	forwardAllocStream[structs.FsArchiveRequest, structs.StreamFrame](s, structs.MethodFsArchive, func(r *structs.FsArchiveRequest) string { return r.AllocID })
	fsAllocID := func(r *structs.FsListRequest) string { return r.AllocID }
	forwardAllocRPC[structs.FsListRequest, structs.FsListResponse](s, structs.MethodFsList, fsAllocID)
	forwardAllocRPC[structs.FsListRequest, structs.FsStatResponse](s, structs.MethodFsStat, fsAllocID)
	s.registerExecRoutes() // exec, restart, signal (route_exec.go)
}

// forwardAllocStream registers method so that a caller's stream is bridged
// to the node owning the allocation its request names. The node's first
// message, an Ack, goes on with where the stream went (relayAck).
func forwardAllocStream[Req, Ack any, PA relayed[Ack]](s *Server, method string, allocIDOf func(*Req) string) {
	s.mux.HandleStream(method, func(ctx context.Context, in *rpc.Stream) error {
		var req Req
		if err := in.Recv(&req); err != nil {
			return err
		}
		r, err := s.Route(ctx, Target{AllocID: allocIDOf(&req)}, method, &req)
		if err != nil {
			return err
		}
		out, err := r.OpenStream(ctx, method, &req)
		if err != nil {
			return err
		}
		if err := relayAck[Ack, PA](r, out, in); err != nil {
			out.Close()
			return err
		}
		return BridgeFrames(ctx, out, in)
	})
}

// relayed is a pointer to a stream's first message that carries a
// structs.RelayRoute.
type relayed[T any] interface {
	*T
	SetRelayRoute(via string, hops int)
}

// relayAck passes on the node's first message (a file stream's
// acknowledgement, a read's header) with where the stream went
// (structs.RelayRoute). A message of another shape goes on as it is.
func relayAck[Ack any, PA relayed[Ack]](r *Route, src, dst *rpc.Stream) error {
	m, err := src.RecvMsg()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil // BridgeFrames sees the end again
		}
		return err
	}
	var ack Ack
	if m.Raw() || m.Decode(&ack) != nil {
		return dst.SendMsg(m)
	}
	m.Release()
	via, _ := r.NodeServer()
	PA(&ack).SetRelayRoute(via, r.Hops())
	return dst.Send(&ack)
}

// BridgeFrames copies stream messages from src to dst until src ends, and
// returns src's remote error, if any, for the caller to pass on. Messages
// are relayed as they are, never decoded. Closing either side (ctx done,
// caller gone) closes src, so the far end stops at once.
func BridgeFrames(ctx context.Context, src, dst *rpc.Stream) error {
	defer src.Close()
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()
	for {
		m, err := src.RecvMsg()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := dst.SendMsg(m); err != nil {
			return err
		}
	}
}
