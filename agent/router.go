package agent

import (
	"io"
	"net/http"
	_ "net/http/pprof" // served under /debug/pprof/ with enable_debug
	"net/url"
	"strings"

	"github.com/gorilla/mux"
)

// router maps the HTTP API. The same handlers serve servers and node agents;
// the backend decides where a call is answered.
func (a *Agent) router() http.Handler {
	r := &routes{mux: mux.NewRouter().UseEncodedPath(), exact: make(map[string]http.Handler)}
	r.mux.Use(unescapeVars)
	if a.telemetry != nil {
		r.metrics = &a.telemetry.http
	}

	// Client API (seed endpoints), each answer saying where the call went
	// (routed, call_route.go).
	r.handle("/v1/client/stats", a.wrap(a.routed(a.clientStats)))
	r.handle("/v1/client/metadata", a.wrap(a.routed(a.clientMetadata)))
	r.handle("/v1/client/gc", a.wrap(a.routed(a.clientGC)))
	r.handle("/v1/client/allocation/{id}/exec", a.wrap(a.routed(a.clientAllocExec))) // before {action}
	r.handle("/v1/client/allocation/{id}/restart", a.wrap(a.routed(a.clientAllocRestart)))
	r.handle("/v1/client/allocation/{id}/signal", a.wrap(a.routed(a.clientAllocSignal)))
	r.handle("/v1/client/allocation/{id}/{action}", a.wrap(a.routed(a.clientAllocation)))
	r.handle("/v1/client/fs/archive/{id}", a.wrap(a.routed(a.clientFSArchive))) // before fs/{op}
	r.handle("/v1/client/fs/{op}/{id:.*}", a.wrap(a.routed(a.clientFS)))
	r.handle("/v1/client/route", a.wrap(a.clientRoute))

	// Jobs and allocations.
	r.handle("/v1/jobs", a.wrap(a.jobsRequest))
	r.handle("/v1/jobs/parse", a.wrap(a.jobsParse))
	r.handle("/v1/job/{id}", a.wrap(a.jobRequest))
	r.handle("/v1/job/{id}/allocations", a.wrap(a.jobAllocations))
	r.handle("/v1/job/{id}/evaluations", a.wrap(a.jobEvaluations))
	r.handle("/v1/job/{id}/summary", a.wrap(a.jobSummary))
	r.handle("/v1/job/{id}/deployment", a.wrap(a.jobDeployment))
	r.handle("/v1/job/{id}/scale", a.wrap(a.jobScale))
	r.handle("/v1/job//scale", a.wrap(a.jobScale))   // no job ID: a 400 naming it, not a redirect
	r.handle("/v1/job/{id}/logs", a.wrap(a.jobLogs)) // job-wide logs (endpoints_joblogs.go)
	r.handle("/v1/evaluations", a.wrap(a.evaluationsList))
	r.handle("/v1/evaluation/{id}", a.wrap(a.evaluationInfo))
	r.handle("/v1/evaluation/{id}/allocations", a.wrap(a.evaluationAllocations))
	r.handle("/v1/allocations", a.wrap(a.allocationsList))
	r.handle("/v1/allocation/{id}", a.wrap(a.allocationInfo))
	r.handle("/v1/allocation/{id}/stop", a.wrap(a.allocationStop))
	r.handle("/v1/node/{id}/allocations", a.wrap(a.nodeAllocations))

	// Node and cluster API the Go client and CLI need.
	r.handle("/v1/nodes", a.wrap(a.nodesList))
	r.handle("/v1/node/{id}", a.wrap(a.nodeInfo))
	r.handle("/v1/agent/self", a.wrap(a.agentSelf))
	r.handle("/v1/agent/sessions", a.wrap(a.agentSessions))
	r.handle("/v1/status/leader", a.wrap(a.statusLeader))
	r.handle("/v1/status/peers", a.wrap(a.statusPeers))
	r.handle("/v1/agent/members", a.wrap(a.agentMembers))
	r.handle("/v1/operator/raft/configuration", a.wrap(a.operatorRaftConfiguration))
	r.handle("/v1/metrics", a.wrap(a.agentMetrics))

	// Cluster operations (endpoints_cluster.go).
	r.handle("/v1/regions", a.wrap(a.regionsList))
	r.handle("/v1/agent/join", a.wrap(a.agentJoin))
	r.handle("/v1/agent/force-leave", a.wrap(a.agentForceLeave))
	r.handle("/v1/agent/servers", a.wrap(a.agentServers))
	r.handle("/v1/system/gc", a.wrap(a.systemGC))
	r.handle("/v1/operator/raft/peer", a.wrap(a.operatorRaftPeer))
	r.handle("/v1/agent/health", a.wrap(a.agentHealth))
	r.handle("/v1/agent/monitor", a.wrap(a.routed(a.agentMonitor)))
	r.handle("/v1/agent/pprof/{profile}", a.wrap(a.routed(a.agentPprof)))

	// ACL administration and the keyring (served by servers).
	a.registerACLRoutes(r)
	a.registerKeyringRoutes(r)

	if a.cfg.EnableDebug {
		r.mux.PathPrefix("/debug/pprof/").Handler(http.DefaultServeMux)
	}

	r.mux.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
	})
	// A node-only agent forwards the servers' endpoints (forward_http.go);
	// every agent serves the web page itself (ui.go).
	return a.withUI(a.forwardingToServers(r))
}

// routes is the API's router: gorilla/mux, and in front of it a map of
// the paths without variables. gorilla/mux matches a request against its
// routes' regular expressions in turn and copies the request twice to
// attach the route and its variables; an exact path needs neither, and
// the hottest calls (stats, metadata) are such paths.
type routes struct {
	mux     *mux.Router
	exact   map[string]http.Handler
	metrics *callMetrics // counts requests by route; nil with telemetry off
}

// unescapeVars hands handlers their path variables decoded. The router
// matches the escaped path, as Nomad does, so that an ID holding a "/"
// (which the Go client sends as %2F) is one variable and not two path
// segments: /v1/job/a%2Fb is job "a/b".
func unescapeVars(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vars := mux.Vars(r)
		decoded := make(map[string]string, len(vars))
		for k, v := range vars {
			d, err := url.PathUnescape(v)
			if err != nil {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, "Invalid escape in path")
				return
			}
			decoded[k] = d
		}
		next.ServeHTTP(w, mux.SetURLVars(r, decoded))
	})
}

// handle routes path to h, on every method (handlers check theirs).
func (rt *routes) handle(path string, h http.Handler) {
	h = rt.metrics.measured(path, h)
	rt.mux.Handle(path, h)
	if !strings.Contains(path, "{") {
		if _, dup := rt.exact[path]; !dup { // the first route wins, as in gorilla/mux
			rt.exact[path] = h
		}
	}
}

func (rt *routes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := rt.exact[r.URL.Path]; ok {
		h.ServeHTTP(w, r)
		return
	}
	rt.mux.ServeHTTP(w, r)
}
