package agent

import (
	"net/http"

	"tether/structs"
	"tether/structs/acl"
)

// resolveACL returns what the request's token may do: resolved by this
// agent's server when it runs one, else by its node through the servers
// (cached). With ACLs disabled everyone may do everything. The token comes
// from X-Nomad-Token or Authorization: Bearer, never from the URL.
func (a *Agent) resolveACL(r *http.Request) (*acl.ACL, error) {
	tok := requestToken(r)
	switch {
	case !a.cfg.ACL.Enabled:
		return acl.ACLsDisabledACL, nil
	case a.server != nil:
		return a.server.ResolveToken(tok)
	case a.client != nil:
		return a.client.ResolveToken(r.Context(), tok)
	}
	return nil, structs.ErrPermissionDenied
}

// authorize resolves the request's token and returns ErrPermissionDenied
// unless allowed says yes. It returns the ACL for further filtering.
func (a *Agent) authorize(r *http.Request, allowed func(*acl.ACL) bool) (*acl.ACL, error) {
	aclObj, err := a.resolveACL(r)
	if err != nil {
		return nil, err
	}
	if !allowed(aclObj) {
		return nil, structs.ErrPermissionDenied
	}
	return aclObj, nil
}

// allowNs returns a check for capability op in namespace ns.
func allowNs(ns, op string) func(*acl.ACL) bool {
	return func(x *acl.ACL) bool { return x.AllowNamespaceOperation(ns, op) }
}

// allowAny lets any caller whose token resolves through.
func allowAny(*acl.ACL) bool { return true }

// allowNsOrWildcard checks op in ns; for the wildcard namespace "*" it
// only resolves the token, and the caller filters per object with the
// returned ACL.
func allowNsOrWildcard(ns, op string) func(*acl.ACL) bool {
	if ns == "*" {
		return allowAny
	}
	return allowNs(ns, op)
}
