package agent

import (
	"context"
	"net/http"

	"tether/rpc"
	"tether/server"
	"tether/structs"
	"tether/structs/acl"

	"github.com/hashicorp/go-hclog"
)

// GET /v1/agent/monitor streams an agent's log in the frames of
// fs/stream, as Nomad does: an agent answers for itself, a server
// forwards to the node that node_id names (through the servers, like any
// client call) or to the server that server_id names (through its peer
// pool). Every hop that serves a log checks agent:read itself.

// agentRequest is what Agent.Monitor and Agent.Profile requests share.
type agentRequest interface {
	Target() *structs.AgentTarget
	structs.TokenRequest
}

// registerAgentStreams registers Agent.Monitor and Agent.Profile on mux:
// a server's mux forwards (onServer), a node's serves only itself.
func (a *Agent) registerAgentStreams(mux *rpc.Mux, onServer bool) {
	mux.HandleStream(structs.MethodAgentMonitor, agentStream(a, onServer, structs.MethodAgentMonitor, a.serveMonitor))
	mux.HandleStream(structs.MethodAgentProfile, agentStream(a, onServer, structs.MethodAgentProfile, a.serveProfile))
}

// agentStream is the handler of an agent method: it forwards the call
// when this server is not its target, else serve answers it here.
func agentStream[Req any, P interface {
	*Req
	agentRequest
}](a *Agent, onServer bool, method string, serve func(context.Context, *rpc.Stream, P) error) rpc.StreamHandler {
	return func(ctx context.Context, st *rpc.Stream) error {
		req := P(new(Req))
		if err := st.Recv(req); err != nil {
			return err
		}
		if onServer {
			out, err := a.forwardAgentCall(ctx, method, req)
			if err != nil {
				return err
			}
			if out != nil {
				return server.BridgeFrames(ctx, out, st)
			}
		}
		return serve(ctx, st, req)
	}
}

// forwardAgentCall opens the call on its target when that is another
// node or server; a nil stream means this agent answers.
func (a *Agent) forwardAgentCall(ctx context.Context, method string, req agentRequest) (*rpc.Stream, error) {
	t := req.Target()
	switch {
	case t.Forwarded:
		return nil, nil
	case t.NodeID != "" && t.ServerID != "":
		return nil, errNodeAndServer
	case t.NodeID != "" && (a.client == nil || t.NodeID != a.client.NodeID()):
		if err := structs.ValidateUUID("node", t.NodeID); err != nil {
			return nil, err
		}
		rt, err := a.server.Route(ctx, server.Target{NodeID: t.NodeID}, method, req)
		if err != nil {
			return nil, err
		}
		return rt.OpenStream(ctx, method, req)
	case t.ServerID != "":
		addr, self, err := a.server.ResolveServer(t.ServerID)
		if err != nil || self {
			return nil, err
		}
		t.Forwarded = true
		return a.server.OpenPeerStream(ctx, addr, method, req)
	}
	return nil, nil
}

// errNodeAndServer refuses a call that names both a node and a server.
var errNodeAndServer = structs.BadRequest("Cannot target node and server simultaneously")

// openAgentStream opens an agent method for the HTTP API: on this agent's
// node, through the servers for another node, or on a server.
func (a *Agent) openAgentStream(ctx context.Context, method string, req agentRequest) (*rpc.Stream, error) {
	t := req.Target()
	ownNode := a.client != nil && (t.NodeID == "" || t.NodeID == a.client.NodeID())
	switch {
	case t.NodeID != "" && t.ServerID != "":
		return nil, errNodeAndServer
	case t.NodeID != "" && !ownNode:
		if err := structs.ValidateUUID("node", t.NodeID); err != nil {
			return nil, err
		}
		rt, err := a.backend.route(ctx, server.Target{NodeID: t.NodeID}, method, req)
		if err != nil {
			return nil, err
		}
		return rt.stream(ctx, method, req)
	case t.ServerID != "" && a.server == nil:
		return a.client.ServerStream(ctx, method, req) // the node's server resolves it
	case a.server != nil && (t.ServerID != "" || t.NodeID == ""):
		return a.server.Mux().OpenLocal(ctx, method, req)
	default:
		return a.client.Mux().OpenLocal(ctx, method, req)
	}
}

// agentACL resolves a token for an agent method this agent serves.
func (a *Agent) agentACL(ctx context.Context, token string) (*acl.ACL, error) {
	switch {
	case !a.cfg.ACL.Enabled:
		return acl.ACLsDisabledACL, nil
	case a.server != nil:
		return a.server.ResolveToken(token)
	case a.client != nil:
		return a.client.ResolveToken(ctx, token)
	}
	return nil, structs.ErrPermissionDenied
}

// agentMonitor serves GET /v1/agent/monitor.
func (a *Agent) agentMonitor(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	q := r.URL.Query()
	req := structs.MonitorRequest{
		AgentTarget:  structs.AgentTarget{NodeID: q.Get("node_id"), ServerID: q.Get("server_id")},
		LogLevel:     q.Get("log_level"),
		QueryOptions: queryOptionsOf(r, q),
	}
	if _, err := parseLogLevel(req.LogLevel); err != nil {
		return nil, structs.BadRequest("%v", err)
	}
	var err error
	if req.LogJSON, err = queryBool(q, "log_json", false); err != nil {
		return nil, err
	}
	if req.PlainText, err = queryBool(q, "plain", false); err != nil {
		return nil, err
	}
	if err := a.streams.acquire(); err != nil {
		return nil, err
	}
	defer a.streams.release()
	st, err := a.openAgentStream(r.Context(), structs.MethodAgentMonitor, &req)
	if err != nil {
		return nil, err
	}
	if req.PlainText {
		return nil, a.streamFrames(w, r, st, "text/plain; charset=utf-8", true, nil)
	}
	return nil, a.streamFrames(w, r, st, "application/json", false, nil)
}

// serveMonitor streams this agent's log: an empty frame once the request
// is valid, then frames of whole lines (as many as are queued, up to
// structs.MaxFrameData), until the caller goes away. Lines a slow caller
// could not take are dropped and counted in a notice line.
func (a *Agent) serveMonitor(ctx context.Context, st *rpc.Stream, req *structs.MonitorRequest) error {
	aclObj, err := a.agentACL(ctx, req.AuthToken)
	if err != nil {
		return err
	}
	if !aclObj.AllowAgentRead() {
		return structs.ErrPermissionDenied
	}
	lvl, err := parseLogLevel(req.LogLevel)
	if err != nil {
		return structs.BadRequest("%v", err)
	}
	m := newLogMonitor(a.il, lvl, req.LogJSON)
	defer m.Stop()
	if lvl <= hclog.Debug {
		a.debugMonitors.Add(1) // the HTTP API logs each request for it (http.go)
		defer a.debugMonitors.Add(-1)
	}
	if err := st.Send(&structs.StreamFrame{}); err != nil {
		return err
	}
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return nil
		case line := <-m.lines:
			buf = append(buf[:0], line...)
		}
	fill:
		for len(buf) < structs.MaxFrameData {
			select {
			case line := <-m.lines:
				buf = append(buf, line...)
			default:
				break fill
			}
		}
		if n := m.takeDropped(); n > 0 {
			buf = append(buf, m.droppedNotice(n)...)
		}
		if err := st.Send(&structs.StreamFrame{Data: buf}); err != nil {
			return nil // the caller went away
		}
	}
}
