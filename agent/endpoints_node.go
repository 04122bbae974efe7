package agent

import (
	"net/http"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"tether/structs"
	"tether/structs/acl"
)

// nodesList serves /v1/nodes?prefix=&resources=, a blocking query on the
// nodes table.
func (a *Agent) nodesList(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	q := r.URL.Query()
	opts, err := blockingOptions(q)
	if err != nil {
		return nil, err
	}
	resources, err := boolParam(q, "resources")
	if err != nil {
		return nil, err
	}
	filter, err := parseFilter(q)
	if err != nil {
		return nil, err
	}
	req := &structs.NodeListRequest{Prefix: q.Get("prefix"), Resources: resources, QueryOptions: queryOptionsOf(r, q), BlockingOptions: opts}
	ctx, cancel := a.queryContext(r, opts)
	defer cancel()
	resp, err := a.backend.listNodes(ctx, req)
	if err != nil {
		return nil, err
	}
	a.setMeta(w, resp.Index)
	if resp.Nodes == nil {
		resp.Nodes = []*structs.NodeListStub{}
	}
	return filterList(filter, resp.Nodes)
}

// nodeInfo serves /v1/node/:id, a blocking query on the node.
func (a *Agent) nodeInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	q := r.URL.Query()
	opts, err := blockingOptions(q)
	if err != nil {
		return nil, err
	}
	req := &structs.NodeGetRequest{NodeID: mux.Vars(r)["id"], QueryOptions: queryOptionsOf(r, q), BlockingOptions: opts}
	ctx, cancel := a.queryContext(r, opts)
	defer cancel()
	resp, err := a.backend.getNode(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.Node == nil {
		return nil, structs.NotFound("node not found")
	}
	a.setMeta(w, resp.Index)
	return resp.Node.Sanitize(), nil
}

// boolParam reads a boolean query parameter, false when absent; anything
// strconv.ParseBool does not take is a 400 naming it.
func boolParam(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, structs.BadRequest("Failed to parse value of %q (%v) as a bool: %v", name, v, err)
	}
	return b, nil
}

// statusLeader serves /v1/status/leader: the leader's RPC address, or,
// while no leader is known, Nomad's 500 "No cluster leader" (the official
// client's Status().Leader() then returns an error, and its test server
// waits for a 200).
func (a *Agent) statusLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	st, err := a.backend.status(r.Context())
	if err != nil {
		return nil, err
	}
	if st.Leader == "" {
		return nil, structs.NewError(http.StatusInternalServerError, "No cluster leader")
	}
	return st.Leader, nil
}

// statusPeers serves /v1/status/peers: the voters' RPC addresses.
func (a *Agent) statusPeers(w http.ResponseWriter, r *http.Request) (any, error) {
	st, err := a.backend.status(r.Context())
	if err != nil {
		return nil, err
	}
	if st.Peers == nil {
		st.Peers = []string{}
	}
	return st.Peers, nil
}

// agentSelf serves /v1/agent/self in Nomad's lower-case shape.
func (a *Agent) agentSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := a.authorize(r, (*acl.ACL).AllowAgentRead); err != nil {
		return nil, err
	}
	cfg := a.cfg
	config := map[string]any{
		"Region":     cfg.Region,
		"Datacenter": cfg.Datacenter,
		"NodeName":   cfg.Name,
		"Name":       cfg.Name,
		"Version":    map[string]any{"Version": NomadVersion, "Revision": "tether-" + Version},
		"Server":     map[string]any{"Enabled": cfg.Server.Enabled},
		"Client":     map[string]any{"Enabled": cfg.Client.Enabled},
		"ACL":        map[string]any{"Enabled": cfg.ACL.Enabled},
		"DevMode":    cfg.DevMode,
	}
	tags := map[string]string{"region": cfg.Region, "dc": cfg.Datacenter, "build": NomadVersion}
	if cfg.Server.Enabled {
		tags["role"] = "nomad"
	}
	member := map[string]any{
		"Name":   cfg.Name + "." + cfg.Region,
		"Addr":   a.advertiseHost(),
		"Port":   a.serfPort(),
		"Tags":   tags,
		"Status": "alive",
	}
	stats := map[string]map[string]string{}
	if a.client != nil {
		stats["client"] = map[string]string{"node_id": a.client.NodeID(), "known_servers": strings.Join(a.client.KnownServers(), ","),
			"server": a.client.ServerAddr()}
	}
	if a.server != nil {
		stats["nomad"] = map[string]string{"server": "true", "leader": strconv.FormatBool(a.server.IsLeader()),
			"leader_addr": a.server.Leader(), "known_servers": strconv.Itoa(len(a.server.Peers()))}
		stats["raft"] = a.server.RaftStats()
		tether := map[string]string{}
		for k, v := range a.server.Stats() {
			tether[k] = strconv.FormatUint(v, 10)
		}
		stats["tether"] = tether
	}
	stats["runtime"] = runtimeStats()
	return map[string]any{"config": config, "member": member, "stats": stats}, nil
}

// runtimeMetrics are the runtime/metrics samples runtimeStats reads
// (no stop-the-world, unlike runtime.ReadMemStats).
var runtimeMetrics = []string{
	"/gc/heap/live:bytes",                // live heap after the last GC
	"/memory/classes/heap/objects:bytes", // heap objects, live and not yet swept
	"/memory/classes/heap/stacks:bytes",  // goroutine stacks
	"/memory/classes/total:bytes",        // all the runtime has mapped
	"/sched/goroutines:goroutines",       // goroutines now
}

// runtimeStats is the "runtime" block of /v1/agent/self: Nomad's keys
// (arch, cpu_count, goroutines, kernel.name, max_procs, version) and the
// process's memory figures in bytes.
func runtimeStats() map[string]string {
	samples := make([]metrics.Sample, len(runtimeMetrics))
	for i, name := range runtimeMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	u := func(i int) string {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return "0"
		}
		return strconv.FormatUint(samples[i].Value.Uint64(), 10)
	}
	return map[string]string{
		"arch":               runtime.GOARCH,
		"cpu_count":          strconv.Itoa(runtime.NumCPU()),
		"goroutines":         u(4),
		"kernel.name":        runtime.GOOS,
		"max_procs":          strconv.Itoa(runtime.GOMAXPROCS(0)),
		"version":            runtime.Version(),
		"heap_live_bytes":    u(0),
		"heap_objects_bytes": u(1),
		"stack_bytes":        u(2),
		"total_bytes":        u(3),
	}
}

// agentSessions serves /v1/agent/sessions on a server: the IDs of the
// nodes whose session is on this server (Tether's own; Nomad has none).
func (a *Agent) agentSessions(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	if _, err := a.authorize(r, (*acl.ACL).AllowAgentRead); err != nil {
		return nil, err
	}
	if a.server == nil {
		return nil, structs.NewError(http.StatusBadRequest, "not a server")
	}
	return map[string]any{"NodeIDs": a.server.SessionNodeIDs()}, nil
}
