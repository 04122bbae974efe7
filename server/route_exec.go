package server

import (
	"context"
	"errors"
	"io"
	"time"

	"tether/rpc"
	"tether/structs"
)

// Calls that act on an allocation's tasks (issue #20): exec, a stream that
// carries the caller's input as well as the node's output, and the unary
// restart and signal. They route like every client call (Server.Route:
// token, allocation, capability on its namespace, node); exec also needs
// alloc-node-exec for a raw_exec task (CheckExecDriver), and through a
// peer it takes Forward.NodeDuplex, which relays both ways.

// methodForwardNodeDuplex is Forward.NodeStream for a stream whose caller
// sends after its arguments (exec): the holder relays both ways.
const methodForwardNodeDuplex = "Forward.NodeDuplex"

// registerExecRoutes registers the peer relay of duplex streams and, for
// node-only agents relaying their HTTP callers, exec, restart and signal.
func (s *Server) registerExecRoutes() {
	s.mux.HandleStream(methodForwardNodeDuplex, func(ctx context.Context, in *rpc.Stream) error {
		out, err := s.openForPeer(ctx, in)
		if err != nil {
			return err
		}
		return BridgeDuplex(ctx, out, in)
	})
	s.mux.HandleStream(structs.MethodClientExec, func(ctx context.Context, in *rpc.Stream) error {
		var req structs.AllocExecRequest
		if err := in.Recv(&req); err != nil {
			return err
		}
		r, err := s.RouteExec(ctx, &req)
		if err != nil {
			return err
		}
		out, err := r.OpenDuplex(ctx, structs.MethodClientExec, &req)
		if err != nil {
			return err
		}
		return BridgeDuplex(ctx, out, in)
	})
	forwardAllocRPC[structs.AllocRestartRequest, structs.GenericResponse](s, structs.MethodClientAllocRestart,
		func(r *structs.AllocRestartRequest) string { return r.AllocID })
	forwardAllocRPC[structs.AllocSignalRequest, structs.GenericResponse](s, structs.MethodClientAllocSignal,
		func(r *structs.AllocSignalRequest) string { return r.AllocID })
}

// RouteExec routes an exec (Server.Route) and checks alloc-node-exec where
// the task's driver needs it (CheckExecDriver).
func (s *Server) RouteExec(ctx context.Context, req *structs.AllocExecRequest) (*Route, error) {
	r, err := s.Route(ctx, Target{AllocID: req.AllocID}, structs.MethodClientExec, req)
	if err != nil {
		return nil, err
	}
	if err := s.CheckExecDriver(req.AuthToken, r.Alloc, req.Task); err != nil {
		return nil, err
	}
	return r, nil
}

// CheckExecDriver refuses an exec into task of a (whose alloc-exec
// Server.Route has checked) when its driver isolates nothing from the
// node (raw_exec) and the token lacks alloc-node-exec, as Nomad requires.
// A task the job does not name is left to the node, which answers it.
func (s *Server) CheckExecDriver(token string, a *structs.Allocation, task string) error {
	if a == nil || a.Job == nil {
		return nil
	}
	tg := a.Job.LookupTaskGroup(a.TaskGroup)
	if tg == nil {
		return nil
	}
	for _, t := range tg.Tasks {
		if t.Name != task {
			continue
		}
		aclObj, err := s.ResolveToken(token)
		if err != nil {
			return err
		}
		if !aclObj.AllowExec(a.Namespace, t.Driver) {
			s.aclDenials.Add(1)
			return structs.ErrPermissionDenied
		}
	}
	return nil
}

// OpenDuplex opens a streaming client call whose caller keeps sending
// (exec) on the route's node: down the node's session here, or through
// the peer holding it, which relays both ways.
func (r *Route) OpenDuplex(ctx context.Context, method string, args any) (*rpc.Stream, error) {
	return forward(ctx, r,
		func(sess *rpc.Session) (*rpc.Stream, error) {
			return sess.OpenStream(ctx, method, args)
		},
		func(addr string) (*rpc.Stream, error) {
			return r.s.openForwardedStream(ctx, addr, methodForwardNodeDuplex, r.NodeID, method, args)
		})
}

// BridgeDuplex relays a duplex stream: node's messages to caller (as
// BridgeFrames, whose result it returns) and caller's to node, both as
// they are. The caller closing its end closes node's, so the far end
// stops at once; node ending stops the caller's copy. Neither direction
// buffers more than one message: a side that does not read holds the
// other back through the transport's flow control.
func BridgeDuplex(ctx context.Context, node, caller *rpc.Stream) error {
	up := make(chan struct{})
	go func() {
		defer close(up)
		for {
			m, err := caller.RecvMsg()
			if err != nil {
				// EOF: the caller closed its end; else it went away, or
				// the node ended first (the deadline below).
				if !errors.Is(err, rpc.ErrTimeout) {
					node.Close()
				}
				return
			}
			if err := node.SendMsg(m); err != nil {
				if !errors.Is(err, io.EOF) {
					node.Close()
				}
				return
			}
		}
	}()
	err := BridgeFrames(ctx, node, caller)
	// The node is done: end the caller's copy (a Recv past its deadline
	// returns; the trailer is written after, with its own deadline).
	caller.SetDeadline(time.Now())
	<-up
	return err
}
