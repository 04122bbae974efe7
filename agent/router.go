package agent

import (
	"net/http"
	_ "net/http/pprof" // served under /debug/pprof/ with enable_debug

	"github.com/gorilla/mux"
)

// router maps the HTTP API. The same handlers serve servers and node agents;
// the backend decides where a call is answered.
func (a *Agent) router() http.Handler {
	r := mux.NewRouter()

	// Client API (seed endpoints).
	r.Handle("/v1/client/stats", a.wrap(a.clientStats))
	r.Handle("/v1/client/metadata", a.wrap(a.clientMetadata))
	r.Handle("/v1/client/gc", a.wrap(a.clientGC))
	r.Handle("/v1/client/allocation/{id}/{action}", a.wrap(a.clientAllocation))
	r.Handle("/v1/client/fs/{op}/{id:.*}", a.wrap(a.clientFS))

	// Jobs and allocations.
	r.Handle("/v1/jobs", a.wrap(a.jobsRequest))
	r.Handle("/v1/job/{id}", a.wrap(a.jobRequest))
	r.Handle("/v1/job/{id}/allocations", a.wrap(a.jobAllocations))
	r.Handle("/v1/job/{id}/evaluations", a.wrap(a.jobEvaluations))
	r.Handle("/v1/job/{id}/summary", a.wrap(a.jobSummary))
	r.Handle("/v1/job/{id}/deployment", a.wrap(a.jobDeployment))
	r.Handle("/v1/evaluations", a.wrap(a.evaluationsList))
	r.Handle("/v1/evaluation/{id}", a.wrap(a.evaluationInfo))
	r.Handle("/v1/evaluation/{id}/allocations", a.wrap(a.evaluationAllocations))
	r.Handle("/v1/allocations", a.wrap(a.allocationsList))
	r.Handle("/v1/allocation/{id}", a.wrap(a.allocationInfo))
	r.Handle("/v1/allocation/{id}/stop", a.wrap(a.allocationStop))
	r.Handle("/v1/node/{id}/allocations", a.wrap(a.nodeAllocations))

	// Node and cluster API the Go client and CLI need.
	r.Handle("/v1/nodes", a.wrap(a.nodesList))
	r.Handle("/v1/node/{id}", a.wrap(a.nodeInfo))
	r.Handle("/v1/agent/self", a.wrap(a.agentSelf))
	r.Handle("/v1/status/leader", a.wrap(a.statusLeader))
	r.Handle("/v1/status/peers", a.wrap(a.statusPeers))
	r.Handle("/v1/agent/members", a.wrap(a.agentMembers))
	r.Handle("/v1/operator/raft/configuration", a.wrap(a.operatorRaftConfiguration))

	// ACL administration (served by servers).
	a.registerACLRoutes(r)

	if a.cfg.EnableDebug {
		r.PathPrefix("/debug/pprof/").Handler(http.DefaultServeMux)
	}

	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
	})
	return r
}
