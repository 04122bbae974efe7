package agent

import (
	"net/http"

	"github.com/gorilla/mux"
)

// router maps the HTTP API. The same handlers serve servers and node agents;
// the backend decides where a call is answered.
func (a *Agent) router() http.Handler {
	r := mux.NewRouter()

	// Client API (seed endpoints).
	r.Handle("/v1/client/stats", a.wrap(a.clientStats))
	r.Handle("/v1/client/metadata", a.wrap(a.clientMetadata))

	// Node and cluster API the Go client and CLI need.
	r.Handle("/v1/nodes", a.wrap(a.nodesList))
	r.Handle("/v1/node/{id}", a.wrap(a.nodeInfo))
	r.Handle("/v1/agent/self", a.wrap(a.agentSelf))
	r.Handle("/v1/status/leader", a.wrap(a.statusLeader))
	r.Handle("/v1/status/peers", a.wrap(a.statusPeers))

	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
	})
	return r
}
