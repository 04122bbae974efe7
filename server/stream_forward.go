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
	forwardAllocStream[structs.FsReadAtRequest](s, structs.MethodFsReadAt, func(r *structs.FsReadAtRequest) string { return r.AllocID })
	forwardAllocStream[structs.FsStreamRequest](s, structs.MethodFsStream, func(r *structs.FsStreamRequest) string { return r.AllocID })
	forwardAllocStream[structs.FsLogsRequest](s, structs.MethodFsLogs, func(r *structs.FsLogsRequest) string { return r.AllocID })
	forwardAllocStream[structs.FsArchiveRequest](s, structs.MethodFsArchive, func(r *structs.FsArchiveRequest) string { return r.AllocID })
	fsAllocID := func(r *structs.FsListRequest) string { return r.AllocID }
	forwardAllocRPC[structs.FsListRequest, structs.FsListResponse](s, structs.MethodFsList, fsAllocID)
	forwardAllocRPC[structs.FsListRequest, structs.FsStatResponse](s, structs.MethodFsStat, fsAllocID)
	s.registerExecRoutes() // exec, restart, signal (route_exec.go)
}

// forwardAllocStream registers method so that a caller's stream is bridged
// to the node owning the allocation its request names.
func forwardAllocStream[Req any](s *Server, method string, allocIDOf func(*Req) string) {
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
		return BridgeFrames(ctx, out, in)
	})
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
