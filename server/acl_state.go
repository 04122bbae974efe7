package server

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// ACL tables of the state store.
const (
	tableACLPolicies = "acl_policy"
	tableACLTokens   = "acl_token"
	tableACLRoles    = "acl_role"

	// aclBootstrapKey is the index-table entry that records the index at
	// which ACLs were bootstrapped; its presence makes bootstrap a one-time
	// operation.
	aclBootstrapKey = "acl_token_bootstrap"
)

// aclTableSchemas returns the schema of the ACL tables.
func aclTableSchemas() map[string]*memdb.TableSchema {
	return map[string]*memdb.TableSchema{
		tableACLPolicies: {
			Name: tableACLPolicies,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
			},
		},
		tableACLTokens: {
			Name: tableACLTokens,
			Indexes: map[string]*memdb.IndexSchema{
				"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "AccessorID"}},
				"secret": {Name: "secret", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "SecretID"}},
			},
		},
		tableACLRoles: {
			Name: tableACLRoles,
			Indexes: map[string]*memdb.IndexSchema{
				"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
				"name": {Name: "name", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
			},
		},
	}
}

// errACLBootstrapDone is returned by a second bootstrap.
func errACLBootstrapDone(resetIndex uint64) error {
	return structs.BadRequest("ACL bootstrap already done (reset index: %d)", resetIndex)
}

// --- ACL writes. Each takes plain values so it can be replicated as is. ---

// UpsertACLPolicies stores policies, keeping the CreateIndex of existing
// ones.
func (s *StateStore) UpsertACLPolicies(policies []*structs.ACLPolicy) (uint64, error) {
	return s.write([]string{tableACLPolicies}, func(txn *memdb.Txn, idx uint64) error {
		for _, p := range policies {
			c := p.Copy()
			raw, err := txn.First(tableACLPolicies, "id", c.Name)
			if err != nil {
				return fmt.Errorf("acl policy lookup failed: %w", err)
			}
			if raw != nil {
				c.CreateIndex = raw.(*structs.ACLPolicy).CreateIndex
			} else {
				c.CreateIndex = idx
			}
			c.ModifyIndex = idx
			if err := txn.Insert(tableACLPolicies, c); err != nil {
				return fmt.Errorf("inserting acl policy: %w", err)
			}
		}
		return nil
	})
}

// DeleteACLPolicies removes policies by name; unknown names are ignored.
// Tokens that name a deleted policy keep the name and lose its rights.
func (s *StateStore) DeleteACLPolicies(names []string) (uint64, error) {
	return s.write([]string{tableACLPolicies}, func(txn *memdb.Txn, idx uint64) error {
		for _, n := range names {
			if _, err := txn.DeleteAll(tableACLPolicies, "id", n); err != nil {
				return fmt.Errorf("deleting acl policy: %w", err)
			}
		}
		return nil
	})
}

// UpsertACLTokens stores tokens, keeping the CreateIndex of existing ones.
// A secret already held by another token is refused.
func (s *StateStore) UpsertACLTokens(tokens []*structs.ACLToken) (uint64, error) {
	return s.write([]string{tableACLTokens}, func(txn *memdb.Txn, idx uint64) error {
		return upsertACLTokensTxn(txn, idx, tokens)
	})
}

func upsertACLTokensTxn(txn *memdb.Txn, idx uint64, tokens []*structs.ACLToken) error {
	for _, t := range tokens {
		c := t.Copy()
		if c.AccessorID == "" || c.SecretID == "" {
			return structs.BadRequest("token needs an accessor and a secret ID")
		}
		raw, err := txn.First(tableACLTokens, "secret", c.SecretID)
		if err != nil {
			return fmt.Errorf("acl token lookup failed: %w", err)
		}
		if raw != nil && raw.(*structs.ACLToken).AccessorID != c.AccessorID {
			return structs.BadRequest("secret ID already in use")
		}
		// Links are resolved here, in log order, so that every server
		// stores the same links whatever its own state held when the
		// request arrived.
		if c.Roles, err = resolveRoleLinksTxn(txn, c.Roles); err != nil {
			return err
		}
		raw, err = txn.First(tableACLTokens, "id", c.AccessorID)
		if err != nil {
			return fmt.Errorf("acl token lookup failed: %w", err)
		}
		if raw != nil {
			c.CreateIndex = raw.(*structs.ACLToken).CreateIndex
		} else {
			c.CreateIndex = idx
		}
		c.ModifyIndex = idx
		if err := txn.Insert(tableACLTokens, c); err != nil {
			return fmt.Errorf("inserting acl token: %w", err)
		}
	}
	return nil
}

// DeleteACLTokens removes tokens by accessor ID; unknown IDs are ignored.
func (s *StateStore) DeleteACLTokens(accessorIDs []string) (uint64, error) {
	return s.write([]string{tableACLTokens}, func(txn *memdb.Txn, idx uint64) error {
		for _, id := range accessorIDs {
			if _, err := txn.DeleteAll(tableACLTokens, "id", id); err != nil {
				return fmt.Errorf("deleting acl token: %w", err)
			}
		}
		return nil
	})
}

// BootstrapACLTokens stores the first management token. It succeeds once
// in the life of the state; later calls return a 400 saying it is done.
func (s *StateStore) BootstrapACLTokens(token *structs.ACLToken) (uint64, error) {
	return s.write([]string{tableACLTokens, aclBootstrapKey}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableIndex, "id", aclBootstrapKey)
		if err != nil {
			return fmt.Errorf("bootstrap index lookup failed: %w", err)
		}
		if raw != nil {
			return errACLBootstrapDone(raw.(*indexEntry).Value)
		}
		if token == nil || token.Type != structs.ACLManagementToken {
			return structs.BadRequest("bootstrap token must be a management token")
		}
		return upsertACLTokensTxn(txn, idx, []*structs.ACLToken{token})
	})
}

// --- ACL reads. ---

// ACLPolicyByName returns a copy of the policy, or nil.
func (s *StateStore) ACLPolicyByName(name string) (*structs.ACLPolicy, error) {
	raw, err := s.db.Txn(false).First(tableACLPolicies, "id", name)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.ACLPolicy).Copy(), nil
}

// ACLPolicies returns copies of every policy, by name, and the policies
// table index.
func (s *StateStore) ACLPolicies() ([]*structs.ACLPolicy, uint64, error) {
	txn := s.db.Txn(false)
	idx := tableIndexOf(txn, nil, tableACLPolicies)
	it, err := txn.Get(tableACLPolicies, "id")
	if err != nil {
		return nil, 0, err
	}
	var out []*structs.ACLPolicy
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.ACLPolicy).Copy())
	}
	return out, idx, nil
}

// ACLTokenByAccessorID returns a copy of the token, or nil.
func (s *StateStore) ACLTokenByAccessorID(id string) (*structs.ACLToken, error) {
	return s.aclTokenBy("id", id)
}

// aclTokenBy returns a copy of the token found by the index, with its role
// links as the roles are now, or nil.
func (s *StateStore) aclTokenBy(index, value string) (*structs.ACLToken, error) {
	txn := s.db.Txn(false)
	raw, err := txn.First(tableACLTokens, index, value)
	if err != nil || raw == nil {
		return nil, err
	}
	return currentRoleLinks(txn, raw.(*structs.ACLToken).Copy()), nil
}

// ACLTokenBySecretID returns a copy of the token, or nil. The empty secret
// matches nothing.
func (s *StateStore) ACLTokenBySecretID(secret string) (*structs.ACLToken, error) {
	if secret == "" {
		return nil, nil
	}
	return s.aclTokenBy("secret", secret)
}

// ACLTokens returns copies of every token, oldest first, and the tokens
// table index.
func (s *StateStore) ACLTokens() ([]*structs.ACLToken, uint64, error) {
	txn := s.db.Txn(false)
	idx := tableIndexOf(txn, nil, tableACLTokens)
	it, err := txn.Get(tableACLTokens, "id")
	if err != nil {
		return nil, 0, err
	}
	var out []*structs.ACLToken
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, currentRoleLinks(txn, raw.(*structs.ACLToken).Copy()))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreateIndex < out[j].CreateIndex })
	return out, idx, nil
}

// ACLBootstrapIndex returns the index at which ACLs were bootstrapped, 0
// when they were not.
func (s *StateStore) ACLBootstrapIndex() uint64 {
	return tableIndexOf(s.db.Txn(false), nil, aclBootstrapKey)
}

// aclTablesIndex returns the newest index of the ACL tables.
func (s *StateStore) aclTablesIndex() uint64 {
	txn := s.db.Txn(false)
	return max(tableIndexOf(txn, nil, tableACLPolicies), tableIndexOf(txn, nil, tableACLTokens), tableIndexOf(txn, nil, tableACLRoles))
}

// The 404s for a token or policy read by accessor ID or name.
var (
	errACLTokenNotFound  = &structs.Error{Code: http.StatusNotFound, Message: "ACL token not found"}
	errACLPolicyNotFound = &structs.Error{Code: http.StatusNotFound, Message: "ACL policy not found"}
)

// init registers the ACL tables with the snapshot codec (fsm.go), so ACL
// objects survive snapshots and restarts like the rest of the state.
func init() {
	snapshotTypes[tableACLPolicies] = func() any { return new(structs.ACLPolicy) }
	snapshotTypes[tableACLTokens] = func() any { return new(structs.ACLToken) }
}
