package agent

import (
	"net/http"

	"github.com/gorilla/mux"

	"tether/server"
	"tether/structs"
)

// clientAllocation serves /v1/client/allocation/:id/:action.
func (a *Agent) clientAllocation(w http.ResponseWriter, r *http.Request) (any, error) {
	vars := mux.Vars(r)
	id, action := vars["id"], vars["action"]
	req := structs.AllocSpecificRequest{AllocID: id, QueryOptions: queryOptions(r)}
	switch action {
	case "stats":
		return a.backend.routeJSON(r.Context(), server.Target{AllocID: id}, structs.MethodClientAllocStats, &req)
	case "gc":
		if err := a.backend.routeCall(r.Context(), server.Target{AllocID: id}, structs.MethodClientAllocGC, &req, &structs.GenericResponse{}); err != nil {
			return nil, err
		}
		// {} decodes for every Go client GC call (Nomad's empty body does
		// not).
		return struct{}{}, nil
	case "checks":
		if err := structs.ValidateUUID("alloc", id); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	default:
		return nil, structs.NotFound("resource not found")
	}
}

// clientGC serves /v1/client/gc: collect every terminal allocation of the
// node. It answers an empty 200 with Content-Length 0.
func (a *Agent) clientGC(w http.ResponseWriter, r *http.Request) (any, error) {
	req := nodeRequest(r)
	if err := a.backend.routeCall(r.Context(), server.Target{NodeID: req.NodeID}, structs.MethodClientGCAll, &req, &structs.GenericResponse{}); err != nil {
		return nil, err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
	return nil, nil
}
