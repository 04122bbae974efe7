package agent

import (
	"net/http"

	"tether/structs"
)

// clientRoute serves GET /v1/client/route?node_id=|alloc_id=, a Tether
// addition: where a client call for the node (or the allocation's node)
// would go from this agent, and why it would find no path, as JSON
// (structs.RouteExplain). A server answers itself (Server.ExplainRoute,
// which checks node:read); a node-only agent asks its server and adds its
// own hop. A call for the agent's own node is answered in process: 0 hops.
func (a *Agent) clientRoute(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	q := r.URL.Query()
	req := structs.RouteExplainRequest{NodeID: q.Get("node_id"), AllocID: q.Get("alloc_id"), QueryOptions: queryOptionsOf(r, q)}
	var out *structs.RouteExplain
	if a.server != nil {
		var err error
		if out, err = a.server.ExplainRoute(r.Context(), &req); err != nil {
			return nil, err
		}
	} else {
		out = new(structs.RouteExplain)
		if err := a.backend.client.ServerRPC(r.Context(), structs.MethodRouteExplain, &req, out); err != nil {
			return nil, err
		}
		out.ServedBy, out.Relay = a.cfg.Name, a.backend.client.ServerAddr()
		if out.Reachable {
			out.Hops++
		}
	}
	if c := a.backend.client; c != nil && (req.AllocID == "" && out.NodeID == c.NodeID() || req.AllocID != "" && c.HasAlloc(req.AllocID)) {
		// backend.route serves it in process, whatever the servers say.
		*out = structs.RouteExplain{NodeID: out.NodeID, AllocID: out.AllocID, ServedBy: a.servedBy(), Reachable: true, NodeStatus: out.NodeStatus}
	}
	return out, nil
}
