package agent

import (
	"net/http"

	"tether/structs"
	"tether/structs/acl"
)

// agentMember is one entry of /v1/agent/members, in Nomad's shape
// (api.AgentMember).
type agentMember struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      string
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// serverMembers is the /v1/agent/members answer (api.ServerMembers).
type serverMembers struct {
	ServerName   string
	ServerRegion string
	ServerDC     string
	Members      []*agentMember
}

// agentMembers serves /v1/agent/members (node:read, as Nomad): the
// servers this server's membership knows, alive, failed or left. A
// node-only agent has no membership and answers 501, as Nomad does.
func (a *Agent) agentMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	if _, err := a.authorize(r, (*acl.ACL).AllowNodeRead); err != nil {
		return nil, err
	}
	if a.server == nil {
		return nil, structs.NewError(http.StatusNotImplemented, "Invalid method")
	}
	out := &serverMembers{
		ServerName:   a.server.MemberName(),
		ServerRegion: a.cfg.Region,
		ServerDC:     a.cfg.Datacenter,
		Members:      []*agentMember{},
	}
	for _, m := range a.server.Members() {
		out.Members = append(out.Members, &agentMember{
			Name: m.Name, Addr: m.Addr, Port: m.Port, Tags: m.Tags, Status: m.Status,
			ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2,
			DelegateMin: 2, DelegateMax: 5, DelegateCur: 4,
		})
	}
	return out, nil
}

// operatorRaftConfiguration serves /v1/operator/raft/configuration
// (operator:read, as Nomad): the raft servers with their IDs, addresses,
// leader and voter flags. A node-only agent forwards it to its server
// (forward_http.go).
func (a *Agent) operatorRaftConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	if _, err := a.authorize(r, (*acl.ACL).AllowOperatorRead); err != nil {
		return nil, err
	}
	if a.server == nil {
		return nil, errNotServer
	}
	return a.server.RaftConfiguration()
}
