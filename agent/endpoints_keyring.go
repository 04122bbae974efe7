package agent

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-memdb"

	"tether/server"
	"tether/structs"
	"tether/structs/acl"
)

// registerKeyringRoutes maps the keyring (server/keyring.go) as Nomad
// does: the operator endpoints need a management token; the public keys
// at /.well-known/jwks.json need none.
func (a *Agent) registerKeyringRoutes(r *routes) {
	r.handle("/v1/operator/keyring/keys", a.wrap(a.keyringList))
	r.handle("/v1/operator/keyring/rotate", a.wrap(a.keyringRotate))
	r.handle("/v1/operator/keyring/key/{id}", a.wrap(a.keyringDelete))
	r.handle("/.well-known/jwks.json", a.wrap(a.jwks))
}

// keyringList serves GET /v1/operator/keyring/keys, a blocking query on
// the keyring.
func (a *Agent) keyringList(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.keyringServer(r)
	if err != nil {
		return nil, err
	}
	out := []*structs.RootKeyMeta{}
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		keys, idx, err := s.State().RootKeys(ws)
		out = out[:0]
		for _, k := range keys {
			out = append(out, k.Meta())
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// keyringRotate serves PUT/POST /v1/operator/keyring/rotate?algo=&full=:
// a new active key.
func (a *Agent) keyringRotate(w http.ResponseWriter, r *http.Request) (any, error) {
	if !isWrite(r) {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.keyringServer(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if _, err := boolParam(q, "full"); err != nil {
		return nil, err
	}
	if v := q.Get("publish_time"); v != "" {
		// A key published ahead of its use needs a timer on the leader
		// to activate it; Tether's keyring activates on rotation.
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return nil, structs.BadRequest("Invalid publish_time %q", v)
		}
		return nil, structs.BadRequest("publish_time is not supported: keys become active when rotated")
	}
	key, idx, err := s.KeyringRotate(r.Context(), q.Get("algo"))
	if err != nil {
		return nil, err
	}
	setIndex(w, idx)
	return &structs.KeyringRotateResponse{Key: key}, nil
}

// keyringDelete serves DELETE /v1/operator/keyring/key/:id?force=: an
// inactive key goes.
func (a *Agent) keyringDelete(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodDelete {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.keyringServer(r)
	if err != nil {
		return nil, err
	}
	if _, err := boolParam(r.URL.Query(), "force"); err != nil {
		return nil, err
	}
	idx, err := s.KeyringDelete(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		return nil, err
	}
	setIndex(w, idx)
	return nil, nil
}

// keyringServer is the server once the caller is found to hold a
// management token (any caller while ACLs are off).
func (a *Agent) keyringServer(r *http.Request) (*server.Server, error) {
	if _, err := a.authorize(r, (*acl.ACL).IsManagement); err != nil {
		return nil, err
	}
	return a.needServer()
}

// jwks serves GET /.well-known/jwks.json: the public signing key of every
// root key, for anyone (the keys are public).
func (a *Agent) jwks(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	keys, idx, err := s.State().RootKeys(nil)
	if err != nil {
		return nil, err
	}
	a.setMeta(w, idx)
	return server.JWKS(keys), nil
}
