package agent

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"tether/server"
	"tether/structs"
	"tether/structs/acl"
)

// Cluster operations (Nomad's /v1/regions, /v1/agent/join,
// /v1/agent/force-leave, /v1/agent/servers, /v1/system/gc and
// /v1/operator/raft/peer). Join and force-leave act on this server's
// membership, so a node-only agent answers them 501 as Nomad's client
// agents do; regions, GC and peer removal it relays to its server with
// the caller's token; the server list is the node's own.

// defaultRPCPort is the port of a server address given without one.
const defaultRPCPort = "4647"

// maxAddressParams bounds the ?address= values of one join or set-servers.
// memberlist joins one address after the other, each within its TCP
// timeout (10 s), and cannot be cancelled: 16 bounds a join to what a
// client waits for anyway, and no cluster has more servers to name.
const maxAddressParams = 16

// errNotServer and errNotClient are Nomad's answers for an endpoint of the
// role this agent does not run (the same 501 for both).
var (
	errNotServer = structs.NewError(http.StatusNotImplemented, "Invalid method")
	errNotClient = errNotServer
)

// joinResponse is the /v1/agent/join answer (api.JoinResponse).
type joinResponse struct {
	NumJoined int    `json:"num_joined"`
	Error     string `json:"error"`
}

// addressParams returns the ?address= values, each checked.
func addressParams(r *http.Request, missing string) ([]string, error) {
	addrs := r.URL.Query()["address"]
	if len(addrs) == 0 {
		return nil, structs.BadRequest("%s", missing)
	}
	if len(addrs) > maxAddressParams {
		return nil, structs.BadRequest("too many address parameters (at most %d)", maxAddressParams)
	}
	for _, a := range addrs {
		if err := server.ValidJoinAddr(a); err != nil {
			return nil, structs.BadRequest("invalid address parameter %q: %v", a, err)
		}
	}
	return addrs, nil
}

// regionsList serves GET /v1/regions.
func (a *Agent) regionsList(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	if a.server == nil {
		return nil, errNotServer // a node-only agent forwards it (forward_http.go)
	}
	return a.server.Regions(), nil
}

// agentJoin serves PUT/POST /v1/agent/join?address=...: this server joins
// the membership of the servers at the addresses (agent:write). Servers
// that could not be reached are named in the answer's error, with 200, as
// Nomad answers.
func (a *Agent) agentJoin(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	if _, err := a.authorize(r, (*acl.ACL).AllowAgentWrite); err != nil {
		return nil, err
	}
	if a.server == nil {
		return nil, errNotServer
	}
	addrs, err := addressParams(r, "missing address to join")
	if err != nil {
		return nil, err
	}
	n, err := a.server.Join(addrs)
	out := &joinResponse{NumJoined: n}
	if err != nil {
		if structs.StatusCode(err) < 500 { // this server runs no membership
			return nil, err
		}
		out.Error = err.Error()
	}
	return out, nil
}

// agentForceLeave serves PUT/POST /v1/agent/force-leave?node=&prune=: a
// failed server member is marked left everywhere (agent:write).
func (a *Agent) agentForceLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	if _, err := a.authorize(r, (*acl.ACL).AllowAgentWrite); err != nil {
		return nil, err
	}
	if a.server == nil {
		return nil, errNotServer
	}
	q := r.URL.Query()
	node := q.Get("node")
	if node == "" {
		return nil, structs.BadRequest("missing node to force leave")
	}
	prune := false
	if v := q.Get("prune"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, structs.BadRequest("invalid prune parameter %q: must be a boolean", v)
		}
		prune = b
	}
	if err := a.server.ForceLeave(node, prune); err != nil {
		return nil, err
	}
	return nil, nil
}

// agentServers serves GET and PUT/POST /v1/agent/servers on an agent that
// runs a node: the RPC addresses the node uses (agent:read), or a new
// list of them (agent:write; an address without a port gets 4647).
func (a *Agent) agentServers(w http.ResponseWriter, r *http.Request) (any, error) {
	switch {
	case r.Method == http.MethodGet:
		if _, err := a.authorize(r, (*acl.ACL).AllowAgentRead); err != nil {
			return nil, err
		}
		if a.client == nil {
			return nil, errNotClient
		}
		out := a.client.KnownServers()
		if out == nil {
			out = []string{}
		}
		return out, nil
	case isWrite(r):
		if _, err := a.authorize(r, (*acl.ACL).AllowAgentWrite); err != nil {
			return nil, err
		}
		if a.client == nil {
			return nil, errNotClient
		}
		addrs, err := addressParams(r, "missing server address")
		if err != nil {
			return nil, err
		}
		for i, addr := range addrs {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				// No port: Nomad's default RPC port.
				addrs[i] = net.JoinHostPort(strings.Trim(addr, "[]"), defaultRPCPort)
			}
		}
		a.client.SetServers(addrs)
		return nil, nil
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// systemGC serves PUT/POST /v1/system/gc (management): every node collects
// its terminal allocations. It answers an empty 200.
func (a *Agent) systemGC(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	if a.server == nil {
		return nil, errNotServer
	}
	if err := a.server.SystemGC(r.Context(), requestToken(r)); err != nil {
		return nil, err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
	return nil, nil
}

// operatorRaftPeer serves DELETE /v1/operator/raft/peer?id=|address=
// (operator:write): the server leaves the raft configuration.
func (a *Agent) operatorRaftPeer(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodDelete {
		return nil, structs.ErrInvalidMethod
	}
	q := r.URL.Query()
	req := &server.RaftPeerRequest{ID: q.Get("id"), Address: q.Get("address"), QueryOptions: queryOptionsOf(r, q)}
	if len(req.ID) > 256 || len(req.Address) > 256 {
		return nil, structs.BadRequest("id or address parameter too long")
	}
	if a.server == nil {
		return nil, errNotServer
	}
	return nil, a.server.RemoveRaftPeer(r.Context(), req)
}
