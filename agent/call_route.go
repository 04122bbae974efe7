package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"tether/rpc"
	"tether/server"
	"tether/structs"
)

// callRoute is where one client call of the HTTP API goes, decided once
// by backend.route and then used for every step of the call (a cat may
// try a data call, offer a data connection and open a stream: one
// decision, one token and allocation lookup for all of them):
//
//   - local: this agent's node runs it in process (its own rpc.Mux); the
//     node checks the token.
//   - srv non-nil: this agent is a server; srv has checked the token and
//     the capability and knows the node, and carries the call down the
//     node's session or to the peer holding it.
//   - neither: a node-only agent asks its server over the node's own
//     session, and the server routes it as above.
type callRoute struct {
	b     *backend
	local bool
	srv   *server.Route
	hdr   http.Header // the response's headers, for where the call went (nil: not asked)
}

// route decides where a client call goes. t names the node (NodeID, ""
// for this agent's own node) or the allocation (AllocID). Malformed IDs
// are refused here (400) before anything is looked up.
func (b *backend) route(ctx context.Context, t server.Target, method string, args any) (*callRoute, error) {
	rt, err := b.decide(ctx, t, method, args)
	if rt != nil {
		rt.hdr = routeHeaderOf(ctx)
		rt.note(nil)
	} else {
		noteNoPath(routeHeaderOf(ctx), err)
	}
	return rt, err
}

// decide is route's decision.
func (b *backend) decide(ctx context.Context, t server.Target, method string, args any) (*callRoute, error) {
	if t.AllocID != "" || t.NodeID == "" && isAllocTarget(method) {
		if err := checkAllocID(t.AllocID); err != nil {
			return nil, err
		}
		if b.client != nil && b.client.HasAlloc(t.AllocID) {
			return &callRoute{b: b, local: true}, nil
		}
	} else {
		if t.NodeID != "" {
			if err := structs.ValidateUUID("node", t.NodeID); err != nil {
				return nil, err
			}
		}
		if b.client != nil && (t.NodeID == "" || t.NodeID == b.client.NodeID()) {
			return &callRoute{b: b, local: true}, nil
		}
		if t.NodeID == "" {
			return nil, structs.ErrNoNodeID
		}
	}
	if b.server == nil {
		return &callRoute{b: b}, nil // relayed by the server
	}
	r, err := b.server.Route(ctx, t, method, args)
	if err != nil {
		return nil, err
	}
	return &callRoute{b: b, srv: r}, nil
}

// isAllocTarget reports whether method is addressed to an allocation (so
// that a missing allocation ID is the caller's error, not "no node").
func isAllocTarget(method string) bool {
	switch method {
	case structs.MethodClientAllocStats, structs.MethodClientAllocGC,
		structs.MethodFsList, structs.MethodFsStat, structs.MethodFsReadAt,
		structs.MethodFsStream, structs.MethodFsLogs, structs.MethodFsArchive,
		structs.MethodClientExec, structs.MethodClientAllocRestart, structs.MethodClientAllocSignal:
		return true
	}
	return false
}

// checkAllocID refuses a missing or malformed allocation ID.
func checkAllocID(allocID string) error {
	if allocID == "" {
		return structs.BadRequest("must provide a valid alloc id")
	}
	return structs.ValidateUUID("alloc", allocID)
}

// call makes a unary client call and fills reply, and counts it in the
// agent's metrics (method, outcome, hops).
func (rt *callRoute) call(ctx context.Context, method string, args, reply any) error {
	start := time.Now()
	err := rt.callOnce(ctx, method, args, reply)
	rt.b.calls.record(method, rt.hops(), start, err)
	rt.note(err)
	return err
}

// hops is the call's "hops" label (agent/telemetry_calls.go): a
// node-only agent's relay takes at least two.
func (rt *callRoute) hops() int {
	switch {
	case rt.local:
		return hopsLocal
	case rt.srv != nil:
		return rt.srv.Hops()
	default:
		return hopsPeer
	}
}

func (rt *callRoute) callOnce(ctx context.Context, method string, args, reply any) error {
	switch {
	case rt.local:
		return rt.b.client.Mux().CallLocal(ctx, method, args, reply)
	case rt.srv != nil:
		return rt.srv.Call(ctx, method, args, reply)
	default:
		return rt.b.client.ServerRPC(ctx, method, args, reply)
	}
}

// rawJSON is a reply already encoded as the HTTP API's JSON.
type rawJSON []byte

// callJSON makes a unary client call for the HTTP API: the node answers
// the reply's JSON (rpc.JSON), which passes through every hop untouched,
// in process, through a server, or relayed by a node-only agent's server.
func (rt *callRoute) callJSON(ctx context.Context, method string, args any) (rawJSON, error) {
	var out rpc.JSON
	if err := rt.call(ctx, method, args, &out); err != nil {
		return nil, err
	}
	noteRelayed(rt.hdr, out.Via, out.Hops)
	return rawJSON(out.Body), nil
}

// noteRelayed records, for a node-only agent's call, where its server
// says the call went: via the server holding the node's session, hops
// from that server (one more from here). An answer that says nothing (a
// local call, a server that does not tell) leaves the headers as they
// are.
func noteRelayed(h http.Header, via string, hops int) {
	if h == nil || via == "" || h.Get(structs.HeaderRelay) == "" {
		return
	}
	h.Set(structs.HeaderNodeServer, via)
	h.Set(structs.HeaderHops, strconv.Itoa(hops+1))
}

// stream opens a streaming client call.
func (rt *callRoute) stream(ctx context.Context, method string, args any) (*rpc.Stream, error) {
	st, err := rt.streamOnce(ctx, method, args)
	rt.note(err)
	return st, err
}

func (rt *callRoute) streamOnce(ctx context.Context, method string, args any) (*rpc.Stream, error) {
	switch {
	case rt.local:
		return rt.b.client.Mux().OpenLocal(ctx, method, args)
	case rt.srv != nil:
		return rt.srv.OpenStream(ctx, method, args)
	default:
		return rt.b.client.ServerStream(ctx, method, args)
	}
}

// offerData offers the node a data connection for a bulk read, when this
// agent is the server holding the node's session (server.Route.OfferData).
// With no offer, token and conns are nil and the bytes come on the
// stream. cancel, never nil, releases the offer.
func (rt *callRoute) offerData() (token []byte, conns <-chan net.Conn, cancel func()) {
	if rt.srv != nil {
		if token, conns, cancel, ok := rt.srv.OfferData(); ok {
			return token, conns, cancel
		}
	}
	return nil, nil, func() {}
}

// streamWithData opens method on the node's stream after offering it a
// data connection for the bytes (offerData), whose token it writes to
// *token; with token nil it offers none. The caller calls done once the
// stream has ended, which withdraws an offer the node did not take.
func (rt *callRoute) streamWithData(ctx context.Context, method string, args any, token *[]byte) (st *rpc.Stream, data <-chan net.Conn, done func(), err error) {
	done = func() {}
	if token != nil {
		*token, data, done = rt.offerData()
	}
	if st, err = rt.stream(ctx, method, args); err != nil {
		done()
		return nil, nil, nil, err
	}
	return st, data, done, nil
}

// poolData hands a data connection whose transfer ended cleanly to the
// server, for the node's next data call.
func (rt *callRoute) poolData(dc net.Conn) {
	if rt.srv == nil {
		dc.Close()
		return
	}
	rt.srv.PoolData(dc)
}

// dataCall makes a bulk read as a data call (server.Route.DataCall) when
// this agent is a server with a pooled data connection of the node; else
// dc is nil and the read takes a stream.
func (rt *callRoute) dataCall(ctx context.Context, method string, args, reply any) (dc net.Conn, head []byte, keep func(net.Conn), err error) {
	if rt.srv == nil {
		return nil, nil, nil, nil
	}
	dc, head, keep, err = rt.srv.DataCall(ctx, method, args, reply)
	rt.note(err)
	return dc, head, keep, err
}

// routeJSON routes a unary client call and answers the HTTP API's JSON
// (callRoute.callJSON).
func (b *backend) routeJSON(ctx context.Context, t server.Target, method string, args any) (rawJSON, error) {
	rt, err := b.route(ctx, t, method, args)
	if err != nil {
		return nil, err
	}
	return rt.callJSON(ctx, method, args)
}

// routeCall routes a unary client call and fills reply.
func (b *backend) routeCall(ctx context.Context, t server.Target, method string, args, reply any) error {
	rt, err := b.route(ctx, t, method, args)
	if err != nil {
		return err
	}
	return rt.call(ctx, method, args, reply)
}

// Where a call went, in the headers of its answer (README, "Why a call
// went where it did"): the handlers of client calls are registered
// through Agent.routed, which puts the response's header map in the
// request's context with X-Tether-Served-By set; the route then sets
// X-Tether-Node-Server and X-Tether-Hops after each step of the call
// (before the handler writes anything), and the reason of a "No path to
// node" beside Nomad's body.

// routeHeaderKey is the context key of the response's header map.
type routeHeaderKey struct{}

// routed wraps a client call's handler so that its answer says where the
// call went.
func (a *Agent) routed(h handlerFunc) handlerFunc {
	name := a.servedBy()
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		hdr := w.Header()
		hdr.Set(structs.HeaderServedBy, name)
		return h(w, r.WithContext(context.WithValue(r.Context(), routeHeaderKey{}, hdr)))
	}
}

// servedBy is the name this agent answers under: a server's member name,
// else the node's name.
func (a *Agent) servedBy() string {
	if a.server != nil {
		return a.server.MemberName()
	}
	return a.cfg.Name
}

// routeHeaderOf returns the header map routed put in ctx, or nil.
func routeHeaderOf(ctx context.Context) http.Header {
	h, _ := ctx.Value(routeHeaderKey{}).(http.Header)
	return h
}

// note records where the route's last step went, and why it went
// nowhere if err says so.
func (rt *callRoute) note(err error) {
	h := rt.hdr
	if h == nil {
		return
	}
	switch {
	case rt.local:
		h.Set(structs.HeaderHops, "0")
	case rt.srv != nil:
		if name, addr := rt.srv.NodeServer(); addr != "" {
			h.Set(structs.HeaderNodeServer, name)
			h.Set(structs.HeaderHops, strconv.Itoa(rt.srv.Hops()))
		}
	default:
		// A node-only agent's server routes the call on; how far is its
		// business (GET /v1/client/route tells).
		h.Set(structs.HeaderRelay, rt.b.client.ServerAddr())
	}
	noteNoPath(h, err)
}

// noteNoPath puts the reason of a "No path to node" in h.
func noteNoPath(h http.Header, err error) {
	var np *structs.NoPathError
	if h == nil || !errors.As(err, &np) {
		return
	}
	h.Del(structs.HeaderNodeServer)
	h.Del(structs.HeaderHops)
	h.Set(structs.HeaderNoPathReason, np.Reason)
	if !np.Since.IsZero() {
		h.Set(structs.HeaderNoPathSince, np.Since.UTC().Format(time.RFC3339Nano))
	}
	if np.Server != "" {
		h.Set(structs.HeaderNoPathServer, np.Server)
	}
}
