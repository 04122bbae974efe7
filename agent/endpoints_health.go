package agent

import (
	"net/http"

	"tether/structs"
)

// GET /v1/agent/health answers whether each role of the agent can do its
// work, in Nomad's shape, with no token (load balancers have none): a
// server is healthy while it knows a leader, a node while it has a
// session with a server. Any unhealthy role makes the answer a 500.

// healthPart is one role's health.
type healthPart struct {
	Ok      bool   `json:"ok"`
	Message string `json:"message"`
}

// healthResponse has one key per role asked for.
type healthResponse struct {
	Client *healthPart `json:"client,omitempty"`
	Server *healthPart `json:"server,omitempty"`
}

// agentHealth serves GET /v1/agent/health[?type=server|client]. Without
// type it reports every role the agent has. A type the agent lacks is
// answered as Nomad does: ok false, "<role> not enabled", and no error
// status of its own; an unknown type is a 400.
func (a *Agent) agentHealth(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	wantClient, wantServer := a.client != nil, a.server != nil
	if types, ok := r.URL.Query()["type"]; ok {
		wantClient, wantServer = false, false
		for _, t := range types {
			switch t {
			case "client":
				wantClient = true
			case "server":
				wantServer = true
			default:
				return nil, structs.BadRequest("invalid type %q for parameter type; want server or client", t)
			}
		}
	}
	var out healthResponse
	code := http.StatusOK
	if wantClient {
		out.Client = a.clientHealth()
		if out.Client.Message != "client not enabled" && !out.Client.Ok {
			code = http.StatusInternalServerError
		}
	}
	if wantServer {
		out.Server = a.serverHealth()
		if out.Server.Message != "server not enabled" && !out.Server.Ok {
			code = http.StatusInternalServerError
		}
	}
	if out.Client == nil && out.Server == nil {
		return nil, structs.NewError(http.StatusInternalServerError, "agent runs neither a server nor a client")
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, r, code, &out)
	return nil, nil
}

// clientHealth is the node's part: it needs a session with a server.
func (a *Agent) clientHealth() *healthPart {
	switch c := a.client; {
	case c == nil:
		return &healthPart{Message: "client not enabled"}
	case len(c.KnownServers()) == 0:
		return &healthPart{Message: "no known servers"}
	case !c.Connected():
		return &healthPart{Message: "no connection to a server"}
	}
	return &healthPart{Ok: true, Message: "ok"}
}

// serverHealth is the server's part: it needs a leader.
func (a *Agent) serverHealth() *healthPart {
	switch s := a.server; {
	case s == nil:
		return &healthPart{Message: "server not enabled"}
	case s.Leader() == "":
		return &healthPart{Message: "No cluster leader"}
	}
	return &healthPart{Ok: true, Message: "ok"}
}
