package agent

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"tether/structs"
	"tether/structs/acl"
)

// nodesList serves /v1/nodes?prefix=.
func (a *Agent) nodesList(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	req := &structs.NodeListRequest{Prefix: r.URL.Query().Get("prefix"), QueryOptions: queryOptions(r)}
	resp, err := a.backend.listNodes(r.Context(), req)
	if err != nil {
		return nil, err
	}
	setIndex(w, resp.Index)
	if resp.Nodes == nil {
		resp.Nodes = []*structs.NodeListStub{}
	}
	return resp.Nodes, nil
}

// nodeInfo serves /v1/node/:id.
func (a *Agent) nodeInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	id := mux.Vars(r)["id"]
	req := &structs.NodeSpecificRequest{NodeID: id, QueryOptions: queryOptions(r)}
	resp, err := a.backend.getNode(r.Context(), req)
	if err != nil {
		return nil, err
	}
	if resp.Node == nil {
		return nil, structs.NotFound("node not found")
	}
	setIndex(w, resp.Index)
	return resp.Node.Sanitize(), nil
}

// statusLeader serves /v1/status/leader: the leader's RPC address.
func (a *Agent) statusLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	st, err := a.backend.status(r.Context())
	if err != nil {
		return nil, err
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
	}
	return map[string]any{"config": config, "member": member, "stats": stats}, nil
}
