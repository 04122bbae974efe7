package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// ACL roles, as Nomad v1.6.5 has them: a role is a named set of policy
// links; a token links to roles by ID or name and holds, whenever it is
// used, its own policies plus every policy its roles have then. Everything
// that depends on another object (the policies a role links, the roles a
// token links, a role name's uniqueness) is checked in the raft apply, in
// log order, so that no server's lag can let a write through that the
// leader's state would refuse. A role's deletion leaves the tokens that
// link it alone: reads leave the dead link out and it grants nothing, as
// in Nomad.

type (
	// aclRolesCmd stores Roles. With Update, each must exist already
	// (an update by ID); without, each is new.
	aclRolesCmd struct {
		Roles  []*structs.ACLRole
		Update bool
	}
)

func init() {
	snapshotTypes[tableACLRoles] = func() any { return new(structs.ACLRole) }
	commands[msgUpsertACLRoles] = cmd(func(st *StateStore, c *aclRolesCmd) (uint64, error) {
		return st.UpsertACLRoles(c.Roles, c.Update)
	})
	commands[msgDeleteACLRoles] = cmd(func(st *StateStore, c *aclDeleteCmd) (uint64, error) {
		return st.DeleteACLRoles(c.Names)
	})
}

// Nomad's answers to role requests.
var (
	errACLRoleNotFound = &structs.Error{Code: http.StatusNotFound, Message: "ACL role not found"}
	errRoleLinkEmpty   = structs.BadRequest("role link requires either an ID or name")
)

// --- State: writes. ---

// UpsertACLRoles stores roles, keeping the CreateIndex of existing ones.
// Every linked policy must exist and no other role may have the name;
// with update every role must exist, without it none may.
func (s *StateStore) UpsertACLRoles(roles []*structs.ACLRole, update bool) (uint64, error) {
	return s.write([]string{tableACLRoles}, func(txn *memdb.Txn, idx uint64) error {
		for _, r := range roles {
			if err := upsertACLRoleTxn(txn, idx, r, update); err != nil {
				return err
			}
		}
		return nil
	})
}

func upsertACLRoleTxn(txn *memdb.Txn, idx uint64, r *structs.ACLRole, update bool) error {
	c := r.Copy()
	if c.ID == "" {
		return structs.BadRequest("role needs an ID")
	}
	for _, l := range c.Policies {
		raw, err := txn.First(tableACLPolicies, "id", l.Name)
		if err != nil {
			return fmt.Errorf("acl policy lookup failed: %w", err)
		}
		if raw == nil {
			return structs.BadRequest("cannot find policy %s", l.Name)
		}
	}
	raw, err := txn.First(tableACLRoles, "name", c.Name)
	if err != nil {
		return fmt.Errorf("acl role lookup failed: %w", err)
	}
	if raw != nil && raw.(*structs.ACLRole).ID != c.ID {
		return structs.BadRequest("role with name %s already exists", c.Name)
	}
	raw, err = txn.First(tableACLRoles, "id", c.ID)
	if err != nil {
		return fmt.Errorf("acl role lookup failed: %w", err)
	}
	switch {
	case raw == nil && update:
		return structs.BadRequest("cannot find role %s", c.ID)
	case raw != nil && !update:
		return structs.BadRequest("role %s already exists", c.ID)
	case raw != nil:
		c.CreateIndex = raw.(*structs.ACLRole).CreateIndex
	default:
		c.CreateIndex = idx
	}
	c.ModifyIndex = idx
	if err := txn.Insert(tableACLRoles, c); err != nil {
		return fmt.Errorf("inserting acl role: %w", err)
	}
	return nil
}

// DeleteACLRoles removes roles by ID; unknown IDs are ignored. Tokens
// keep their links to a deleted role; reads leave such links out.
func (s *StateStore) DeleteACLRoles(ids []string) (uint64, error) {
	return s.write([]string{tableACLRoles}, func(txn *memdb.Txn, idx uint64) error {
		for _, id := range ids {
			if _, err := txn.DeleteAll(tableACLRoles, "id", id); err != nil {
				return fmt.Errorf("deleting acl role: %w", err)
			}
		}
		return nil
	})
}

// resolveRoleLinksTxn returns links with each one's role found by ID (the
// ID wins when both are given) or else by name, carrying both, in the
// given order without repeats. A link to no role is a 400.
func resolveRoleLinksTxn(txn *memdb.Txn, links []*structs.ACLTokenRoleLink) ([]*structs.ACLTokenRoleLink, error) {
	if len(links) == 0 {
		return links, nil
	}
	out := make([]*structs.ACLTokenRoleLink, 0, len(links))
	for _, l := range links {
		if l == nil {
			return nil, errRoleLinkEmpty
		}
		index, key := "id", l.ID
		if key == "" {
			index, key = "name", l.Name
		}
		if key == "" {
			return nil, errRoleLinkEmpty
		}
		raw, err := txn.First(tableACLRoles, index, key)
		if err != nil {
			return nil, fmt.Errorf("acl role lookup failed: %w", err)
		}
		if raw == nil {
			return nil, structs.BadRequest("cannot find role %s", key)
		}
		r := raw.(*structs.ACLRole)
		if !slices.ContainsFunc(out, func(o *structs.ACLTokenRoleLink) bool { return o.ID == r.ID }) {
			out = append(out, &structs.ACLTokenRoleLink{ID: r.ID, Name: r.Name})
		}
	}
	return out, nil
}

// currentRoleLinks sets tok's role links (tok is the caller's copy) to the
// roles as they are: each link's current name, links to deleted roles
// left out.
func currentRoleLinks(txn *memdb.Txn, tok *structs.ACLToken) *structs.ACLToken {
	if len(tok.Roles) == 0 {
		return tok
	}
	live := tok.Roles[:0]
	for _, l := range tok.Roles {
		raw, err := txn.First(tableACLRoles, "id", l.ID)
		if err != nil || raw == nil {
			continue
		}
		l.Name = raw.(*structs.ACLRole).Name
		live = append(live, l)
	}
	tok.Roles = live
	return tok
}

// --- State: reads. ---

// ACLRoleByID returns a copy of the role, or nil, and adds it to ws.
func (s *StateStore) ACLRoleByID(ws memdb.WatchSet, id string) (*structs.ACLRole, error) {
	return s.aclRoleBy(ws, "id", id)
}

// ACLRoleByName returns a copy of the role, or nil, and adds it to ws.
func (s *StateStore) ACLRoleByName(ws memdb.WatchSet, name string) (*structs.ACLRole, error) {
	return s.aclRoleBy(ws, "name", name)
}

func (s *StateStore) aclRoleBy(ws memdb.WatchSet, index, value string) (*structs.ACLRole, error) {
	ch, raw, err := s.db.Txn(false).FirstWatch(tableACLRoles, index, value)
	if err != nil {
		return nil, fmt.Errorf("acl role lookup failed: %w", err)
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*structs.ACLRole).Copy(), nil
}

// ACLRoles returns copies of the roles whose ID starts with prefix ("" for
// all), by ID, and the roles table index, which it adds to ws.
func (s *StateStore) ACLRoles(ws memdb.WatchSet, prefix string) ([]*structs.ACLRole, uint64, error) {
	txn := s.db.Txn(false)
	idx := tableIndexOf(txn, ws, tableACLRoles)
	it, err := txn.Get(tableACLRoles, "id_prefix", prefix)
	if err != nil {
		return nil, 0, fmt.Errorf("listing acl roles: %w", err)
	}
	var out []*structs.ACLRole
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.ACLRole).Copy())
	}
	return out, idx, nil
}

// ACLRolePolicyNames returns the names of the policies of the roles links
// point to (by ID), without repeats; a link to a deleted role adds none.
func (s *StateStore) ACLRolePolicyNames(links []*structs.ACLTokenRoleLink) ([]string, error) {
	txn := s.db.Txn(false)
	var out []string
	for _, l := range links {
		raw, err := txn.First(tableACLRoles, "id", l.ID)
		if err != nil {
			return nil, fmt.Errorf("acl role lookup failed: %w", err)
		}
		if raw != nil {
			out = appendNew(out, raw.(*structs.ACLRole).PolicyNames()...)
		}
	}
	return out, nil
}

// appendNew appends the names not in dst yet.
func appendNew(dst []string, names ...string) []string {
	for _, n := range names {
		if !slices.Contains(dst, n) {
			dst = append(dst, n)
		}
	}
	return dst
}

// --- Server: what a token holds. ---

// tokenPolicyNames returns the names of every policy tok holds: its own,
// then its roles'. fromLeader is the leader's answer for a token this
// server did not know (its role policies are the leader's); nil means the
// token is local.
func (s *Server) tokenPolicyNames(tok *structs.ACLToken, fromLeader *peerACLLookupResponse) ([]string, error) {
	if tok.IsManagement() {
		return nil, nil
	}
	var viaRoles []string
	switch {
	case fromLeader != nil:
		viaRoles = fromLeader.RolePolicies
	case len(tok.Roles) > 0:
		var err error
		if viaRoles, err = s.store.ACLRolePolicyNames(tok.Roles); err != nil {
			return nil, err
		}
	}
	return appendNew(slices.Clone(tok.Policies), viaRoles...), nil
}

// --- Server: the role endpoints (HTTP /v1/acl/role...). ---

// validateRole checks a role as Nomad does, and drops repeated policy
// links. Whether the policies exist is checked when it is stored.
func validateRole(r *structs.ACLRole) error {
	if !structs.ValidACLRoleName(r.Name) {
		return structs.BadRequest("invalid name '%s'", r.Name)
	}
	if len(r.Description) > structs.MaxACLDescriptionLength {
		return structs.BadRequest("description longer than %d", structs.MaxACLDescriptionLength)
	}
	if len(r.Policies) == 0 {
		return structs.BadRequest("at least one policy should be specified")
	}
	if len(r.Policies) > structs.MaxACLLinks {
		return structs.BadRequest("role links more than %d policies", structs.MaxACLLinks)
	}
	links := make([]*structs.ACLRolePolicyLink, 0, len(r.Policies))
	for _, l := range r.Policies {
		if l == nil || l.Name == "" {
			return structs.BadRequest("policy link requires a name")
		}
		if !slices.ContainsFunc(links, func(o *structs.ACLRolePolicyLink) bool { return o.Name == l.Name }) {
			links = append(links, l)
		}
	}
	r.Policies = links
	return nil
}

// UpsertACLRole creates a role (r.ID empty: the server picks one) or
// updates the role with r.ID. Management only.
func (s *Server) UpsertACLRole(ctx context.Context, secret string, r *structs.ACLRole) (*structs.ACLRole, error) {
	if err := s.requireManagement(secret); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, structs.BadRequest("missing role")
	}
	c := r.Copy()
	if err := validateRole(c); err != nil {
		return nil, err
	}
	update := c.ID != ""
	if !update {
		c.ID = structs.GenerateUUID()
	}
	c.CreateIndex, c.ModifyIndex = 0, 0
	if _, err := s.raftApply(ctx, msgUpsertACLRoles|msgIgnoreUnknown, &aclRolesCmd{Roles: []*structs.ACLRole{c}, Update: update}); err != nil {
		return nil, err
	}
	return s.store.ACLRoleByID(nil, c.ID)
}

// DeleteACLRole removes a role. Management only.
func (s *Server) DeleteACLRole(ctx context.Context, secret, id string) (uint64, error) {
	if err := s.requireManagement(secret); err != nil {
		return 0, err
	}
	existing, err := s.store.ACLRoleByID(nil, id)
	if err != nil {
		return 0, err
	}
	if existing == nil {
		return 0, errACLRoleNotFound
	}
	return s.raftApply(ctx, msgDeleteACLRoles|msgIgnoreUnknown, &aclDeleteCmd{Names: []string{id}})
}

// ACLRole returns the role with the ID and the index to answer with,
// adding it to ws. Management tokens may read any role; others only the
// roles they link to.
func (s *Server) ACLRole(ws memdb.WatchSet, secret, id string) (*structs.ACLRole, uint64, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, 0, err
	}
	if !tok.IsManagement() && !tok.HasRole(id) {
		return nil, 0, structs.ErrPermissionDenied
	}
	return roleOrNotFound(s.store.ACLRoleByID(ws, id))
}

// ACLRoleByName returns the role with the name, as ACLRole.
func (s *Server) ACLRoleByName(ws memdb.WatchSet, secret, name string) (*structs.ACLRole, uint64, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, 0, err
	}
	r, idx, err := roleOrNotFound(s.store.ACLRoleByName(ws, name))
	if err != nil {
		return nil, 0, err
	}
	if !tok.IsManagement() && !tok.HasRole(r.ID) {
		return nil, 0, structs.ErrPermissionDenied
	}
	return r, idx, nil
}

func roleOrNotFound(r *structs.ACLRole, err error) (*structs.ACLRole, uint64, error) {
	if err != nil {
		return nil, 0, err
	}
	if r == nil {
		return nil, 0, errACLRoleNotFound
	}
	return r, r.ModifyIndex, nil
}

// ACLRoles lists the roles whose ID starts with prefix, and the roles
// table index, adding it to ws: all of them for management tokens, the
// ones the caller links to for others.
func (s *Server) ACLRoles(ws memdb.WatchSet, secret, prefix string) ([]*structs.ACLRoleListStub, uint64, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, 0, err
	}
	all, idx, err := s.store.ACLRoles(ws, prefix)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*structs.ACLRoleListStub, 0, len(all))
	for _, r := range all {
		if tok.IsManagement() || tok.HasRole(r.ID) {
			out = append(out, r.Stub())
		}
	}
	return out, idx, nil
}
