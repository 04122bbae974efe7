package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-memdb"

	"tether/server"
	"tether/structs"
)

// registerACLRoutes maps /v1/acl/... as Nomad does. The fixed paths come
// before the ones that take an ID.
func (a *Agent) registerACLRoutes(r *routes) {
	r.handle("/v1/acl/bootstrap", a.wrap(a.aclBootstrap))
	r.handle("/v1/acl/policies", a.wrap(a.aclPolicies))
	r.handle("/v1/acl/policy/{name}", a.wrap(a.aclPolicy))
	r.handle("/v1/acl/tokens", a.wrap(a.aclTokens))
	r.handle("/v1/acl/token", a.wrap(a.aclTokenCreate))
	r.handle("/v1/acl/token/self", a.wrap(a.aclTokenSelf))
	r.handle("/v1/acl/token/onetime", a.wrap(a.aclOneTimeToken))
	r.handle("/v1/acl/token/onetime/exchange", a.wrap(a.aclOneTimeExchange))
	r.handle("/v1/acl/token/{id}", a.wrap(a.aclToken))
	r.handle("/v1/acl/roles", a.wrap(a.aclRoles))
	r.handle("/v1/acl/role", a.wrap(a.aclRoleCreate))
	r.handle("/v1/acl/role/name/{name}", a.wrap(a.aclRoleByName))
	r.handle("/v1/acl/role/{id}", a.wrap(a.aclRole))
}

// listIndex is the index the ACL lists answer with: as Nomad's, never 0
// (the Go client's own test expects 1 from a table never written), so
// that a blocking query on the list can always be asked.
func listIndex(idx uint64) uint64 { return max(idx, 1) }

func isWrite(r *http.Request) bool { return r.Method == http.MethodPut || r.Method == http.MethodPost }

// readOptionalBody reads a bounded body that may be empty.
func readOptionalBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, structs.ErrBodyTooLarge
		}
		return nil, structs.BadRequest("reading request body: %v", err)
	}
	return bytes.TrimSpace(b), nil
}

// aclBootstrap serves PUT/POST /v1/acl/bootstrap: the first management
// token, once.
func (a *Agent) aclBootstrap(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	body, err := readOptionalBody(r)
	if err != nil {
		return nil, err
	}
	var req structs.ACLBootstrapRequest
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, structs.BadRequest("failed to decode request body: %v", err)
		}
	}
	tok, err := s.BootstrapACL(r.Context(), req.BootstrapSecret)
	if err != nil {
		return nil, err
	}
	setIndex(w, tok.ModifyIndex)
	return tok, nil
}

// aclPolicies serves GET /v1/acl/policies.
func (a *Agent) aclPolicies(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	out, idx, err := s.ACLPolicies(requestToken(r))
	if err != nil {
		return nil, err
	}
	setIndex(w, listIndex(idx))
	return out, nil
}

// aclPolicy serves GET, PUT/POST and DELETE /v1/acl/policy/:name.
func (a *Agent) aclPolicy(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	name := mux.Vars(r)["name"]
	tok := requestToken(r)
	switch {
	case r.Method == http.MethodGet:
		p, err := s.ACLPolicy(tok, name)
		if err != nil {
			return nil, err
		}
		setIndex(w, p.ModifyIndex)
		return p, nil
	case isWrite(r):
		body, err := readBody(r)
		if err != nil {
			return nil, err
		}
		var p structs.ACLPolicy
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, structs.BadRequest("failed to decode request body: %v", err)
		}
		if p.Name == "" {
			p.Name = name
		}
		if p.Name != name {
			return nil, structs.BadRequest("ACL policy name does not match request path")
		}
		idx, err := s.UpsertACLPolicy(r.Context(), tok, &p)
		if err != nil {
			return nil, err
		}
		setIndex(w, idx)
		return nil, nil
	case r.Method == http.MethodDelete:
		idx, err := s.DeleteACLPolicy(r.Context(), tok, name)
		if err != nil {
			return nil, err
		}
		setIndex(w, idx)
		return nil, nil
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// aclTokens serves GET /v1/acl/tokens.
func (a *Agent) aclTokens(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	out, idx, err := s.ACLTokens(requestToken(r))
	if err != nil {
		return nil, err
	}
	setIndex(w, listIndex(idx))
	return out, nil
}

// tokenBody is a token as callers send it. ExpirationTTL arrives as a
// duration string ("10m", as the Go client sends) or as nanoseconds.
type tokenBody struct {
	AccessorID     string
	SecretID       string
	Name           string
	Type           string
	Policies       []string
	Roles          []*structs.ACLTokenRoleLink
	Global         bool
	ExpirationTime *time.Time
	ExpirationTTL  json.RawMessage
}

// decodeToken parses a token from the request body.
func decodeToken(r *http.Request) (*structs.ACLToken, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var tb tokenBody
	if err := json.Unmarshal(body, &tb); err != nil {
		return nil, structs.BadRequest("failed to decode request body: %v", err)
	}
	t := &structs.ACLToken{
		AccessorID:     tb.AccessorID,
		SecretID:       tb.SecretID,
		Name:           tb.Name,
		Type:           tb.Type,
		Policies:       tb.Policies,
		Roles:          tb.Roles,
		Global:         tb.Global,
		ExpirationTime: tb.ExpirationTime,
	}
	if t.ExpirationTTL, err = parseTTL(tb.ExpirationTTL); err != nil {
		return nil, err
	}
	return t, nil
}

// parseTTL reads a duration given as a string or a number of nanoseconds.
func parseTTL(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, structs.BadRequest("invalid ExpirationTTL %q: %v", s, err)
		}
		return d, nil
	}
	var n float64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, structs.BadRequest("ExpirationTTL must be a duration string or nanoseconds")
	}
	return time.Duration(n), nil
}

// aclTokenCreate serves PUT/POST /v1/acl/token.
func (a *Agent) aclTokenCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	t, err := decodeToken(r)
	if err != nil {
		return nil, err
	}
	out, err := s.CreateACLToken(r.Context(), requestToken(r), t)
	if err != nil {
		return nil, err
	}
	setIndex(w, out.ModifyIndex)
	return out, nil
}

// aclTokenSelf serves GET /v1/acl/token/self.
func (a *Agent) aclTokenSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	t, err := s.ACLTokenSelf(requestToken(r))
	if err != nil {
		return nil, err
	}
	setIndex(w, t.ModifyIndex)
	return t, nil
}

// aclToken serves GET, PUT/POST and DELETE /v1/acl/token/:accessor_id.
func (a *Agent) aclToken(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	tok := requestToken(r)
	switch {
	case r.Method == http.MethodGet:
		t, err := s.ACLToken(tok, id)
		if err != nil {
			return nil, err
		}
		setIndex(w, t.ModifyIndex)
		return t, nil
	case isWrite(r):
		t, err := decodeToken(r)
		if err != nil {
			return nil, err
		}
		out, err := s.UpdateACLToken(r.Context(), tok, id, t)
		if err != nil {
			return nil, err
		}
		setIndex(w, out.ModifyIndex)
		return out, nil
	case r.Method == http.MethodDelete:
		idx, err := s.DeleteACLToken(r.Context(), tok, id)
		if err != nil {
			return nil, err
		}
		setIndex(w, idx)
		return nil, nil
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// aclOneTimeToken serves PUT/POST /v1/acl/token/onetime: a one-time
// secret standing for the caller's own token.
func (a *Agent) aclOneTimeToken(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	ott, idx, err := s.UpsertOneTimeToken(r.Context(), requestToken(r))
	if err != nil {
		return nil, err
	}
	setIndex(w, idx)
	return &structs.OneTimeTokenUpsertResponse{OneTimeToken: ott}, nil
}

// aclOneTimeExchange serves PUT/POST /v1/acl/token/onetime/exchange: the
// token a one-time secret stands for, once.
func (a *Agent) aclOneTimeExchange(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var req structs.OneTimeTokenExchangeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, structs.BadRequest("failed to decode request body: %v", err)
	}
	tok, idx, err := s.ExchangeOneTimeToken(r.Context(), req.OneTimeSecretID)
	if err != nil {
		return nil, err
	}
	setIndex(w, idx)
	return &structs.OneTimeTokenExchangeResponse{Token: tok}, nil
}

// aclRoles serves GET /v1/acl/roles (?prefix= on the ID), a blocking
// query on the roles table.
func (a *Agent) aclRoles(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	tok, prefix := requestToken(r), r.URL.Query().Get("prefix")
	var out []*structs.ACLRoleListStub
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		list, idx, err := s.ACLRoles(ws, tok, prefix)
		out = list
		return listIndex(idx), err
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// aclRoleCreate serves PUT/POST /v1/acl/role.
func (a *Agent) aclRoleCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	return a.aclRoleUpsert(w, r, "")
}

// aclRoleUpsert stores the role in the body: a new one when pathID is "",
// else the role with that ID, which the body must name.
func (a *Agent) aclRoleUpsert(w http.ResponseWriter, r *http.Request, pathID string) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var role structs.ACLRole
	if err := json.Unmarshal(body, &role); err != nil {
		return nil, structs.BadRequest("failed to decode request body: %v", err)
	}
	if pathID != "" && role.ID != pathID {
		return nil, structs.BadRequest("ACL role ID does not match request path")
	}
	out, err := s.UpsertACLRole(r.Context(), requestToken(r), &role)
	if err != nil {
		return nil, err
	}
	setIndex(w, out.ModifyIndex)
	return out, nil
}

// aclRole serves GET (blocking), PUT/POST and DELETE /v1/acl/role/:id.
func (a *Agent) aclRole(w http.ResponseWriter, r *http.Request) (any, error) {
	id := mux.Vars(r)["id"]
	switch {
	case r.Method == http.MethodGet:
		return a.aclRoleRead(w, r, func(s *server.Server, ws memdb.WatchSet, tok string) (*structs.ACLRole, uint64, error) {
			return s.ACLRole(ws, tok, id)
		})
	case isWrite(r):
		return a.aclRoleUpsert(w, r, id)
	case r.Method == http.MethodDelete:
		s, err := a.needServer()
		if err != nil {
			return nil, err
		}
		idx, err := s.DeleteACLRole(r.Context(), requestToken(r), id)
		if err != nil {
			return nil, err
		}
		setIndex(w, idx)
		return nil, nil
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// aclRoleByName serves GET /v1/acl/role/name/:name (blocking).
func (a *Agent) aclRoleByName(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	name := mux.Vars(r)["name"]
	return a.aclRoleRead(w, r, func(s *server.Server, ws memdb.WatchSet, tok string) (*structs.ACLRole, uint64, error) {
		return s.ACLRoleByName(ws, tok, name)
	})
}

// aclRoleRead runs one role read as a blocking query on the role.
func (a *Agent) aclRoleRead(w http.ResponseWriter, r *http.Request, read func(*server.Server, memdb.WatchSet, string) (*structs.ACLRole, uint64, error)) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	tok := requestToken(r)
	var out *structs.ACLRole
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		role, idx, err := read(s, ws, tok)
		out = role
		return idx, err
	}); err != nil {
		return nil, err
	}
	return out, nil
}
