package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// The keyring, as Nomad's: the cluster's root keys live in raft, one of
// them active. The first leader makes the first key; PUT
// /v1/operator/keyring/rotate makes a new active key and leaves the old
// ones inactive until they are deleted. Every key's public signing key is
// published at /.well-known/jwks.json, which is also how Nomad's own test
// harness knows a new cluster is ready. Key material is made on the
// server that takes the request and travels in the raft command, so every
// server holds the same keys.

// tableRootKeys holds the root keys, by KeyID.
const tableRootKeys = "root_keys"

// TableRootKeys is tableRootKeys for readers outside the package.
const TableRootKeys = tableRootKeys

// Raft commands of the keyring, written with msgIgnoreUnknown: nothing an
// older server reads depends on the table.
const (
	msgRotateRootKey msgType = 28
	msgDeleteRootKey msgType = 29
)

// maxRootKeys bounds the keyring: a rotation past it is refused until old
// keys are deleted, so that a script rotating in a loop cannot grow the
// state without end.
const maxRootKeys = 64

func rootKeyTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableRootKeys,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "KeyID"}},
		},
	}
}

type (
	// rotateRootKeyCmd makes Key the active key and the active one
	// inactive. With OnlyIfEmpty it does nothing when a key exists (the
	// first key, which two leaders in quick succession may both make).
	rotateRootKeyCmd struct {
		Key         *structs.RootKey
		OnlyIfEmpty bool
	}

	// deleteRootKeyCmd deletes an inactive key.
	deleteRootKeyCmd struct {
		KeyID string
	}
)

func init() {
	snapshotTypes[tableRootKeys] = func() any { return new(structs.RootKey) }
	commands[msgRotateRootKey] = cmd(func(st *StateStore, c *rotateRootKeyCmd) (uint64, error) {
		return st.RotateRootKey(c.Key, c.OnlyIfEmpty)
	})
	commands[msgDeleteRootKey] = cmd(func(st *StateStore, c *deleteRootKeyCmd) (uint64, error) {
		return st.DeleteRootKey(c.KeyID)
	})
}

// RotateRootKey stores k as the active key and makes the active one
// inactive; with onlyIfEmpty it stores nothing when the keyring has a key.
func (s *StateStore) RotateRootKey(k *structs.RootKey, onlyIfEmpty bool) (uint64, error) {
	if k == nil || k.KeyID == "" || len(k.SigningKey) != ed25519.SeedSize {
		return 0, structs.BadRequest("root key needs an ID and a signing key")
	}
	return s.write([]string{tableRootKeys}, func(txn *memdb.Txn, idx uint64) error {
		keys, err := rootKeysTxn(txn)
		if err != nil {
			return err
		}
		if onlyIfEmpty && len(keys) > 0 {
			return nil
		}
		if len(keys) >= maxRootKeys {
			return structs.BadRequest("keyring holds %d keys: delete inactive keys before rotating", len(keys))
		}
		for _, old := range keys {
			if old.State == structs.RootKeyStateActive {
				c := old.Copy()
				c.State, c.ModifyIndex = structs.RootKeyStateInactive, idx
				if err := txn.Insert(tableRootKeys, c); err != nil {
					return fmt.Errorf("deactivating root key: %w", err)
				}
			}
		}
		c := k.Copy()
		c.State, c.CreateIndex, c.ModifyIndex = structs.RootKeyStateActive, idx, idx
		if err := txn.Insert(tableRootKeys, c); err != nil {
			return fmt.Errorf("inserting root key: %w", err)
		}
		return nil
	})
}

// DeleteRootKey deletes the inactive key id: 404 for an unknown key, 400
// for the active one (the cluster would have none).
func (s *StateStore) DeleteRootKey(id string) (uint64, error) {
	return s.write([]string{tableRootKeys}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableRootKeys, "id", id)
		if err != nil {
			return fmt.Errorf("root key lookup failed: %w", err)
		}
		if raw == nil {
			return structs.NotFound("root key not found")
		}
		if raw.(*structs.RootKey).State == structs.RootKeyStateActive {
			return structs.BadRequest("active root key cannot be deleted")
		}
		if err := txn.Delete(tableRootKeys, raw); err != nil {
			return fmt.Errorf("deleting root key: %w", err)
		}
		return nil
	})
}

// RootKeys returns the keyring's keys, oldest first, and the table's
// index; ws, when set, wakes on a write to the table.
func (s *StateStore) RootKeys(ws memdb.WatchSet) ([]*structs.RootKey, uint64, error) {
	idx := s.TableIndex(ws, tableRootKeys)
	keys, err := rootKeysTxn(s.db.Txn(false))
	return keys, idx, err
}

func rootKeysTxn(txn *memdb.Txn) ([]*structs.RootKey, error) {
	it, err := txn.Get(tableRootKeys, "id")
	if err != nil {
		return nil, fmt.Errorf("listing root keys: %w", err)
	}
	var out []*structs.RootKey
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.RootKey))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex < out[j].CreateIndex })
	return out, nil
}

// newRootKey makes fresh key material.
func newRootKey(now time.Time) (*structs.RootKey, error) {
	k := &structs.RootKey{
		KeyID:      structs.GenerateUUID(),
		Algorithm:  structs.RootKeyAlgorithm,
		CreateTime: now.UnixNano(),
		Key:        make([]byte, 32),
		SigningKey: make([]byte, ed25519.SeedSize),
	}
	if _, err := rand.Read(k.Key); err != nil {
		return nil, fmt.Errorf("making root key: %w", err)
	}
	if _, err := rand.Read(k.SigningKey); err != nil {
		return nil, fmt.Errorf("making signing key: %w", err)
	}
	return k, nil
}

// KeyringRotate makes a new active root key. algorithm may be empty or
// Nomad's only one; full (re-encrypting what the old key encrypted) has
// nothing more to do here, as no data is encrypted with root keys.
func (s *Server) KeyringRotate(ctx context.Context, algorithm string) (*structs.RootKeyMeta, uint64, error) {
	if algorithm != "" && algorithm != structs.RootKeyAlgorithm {
		return nil, 0, structs.BadRequest("Invalid algorithm %q: the keyring supports %s", algorithm, structs.RootKeyAlgorithm)
	}
	k, err := newRootKey(time.Now())
	if err != nil {
		return nil, 0, err
	}
	idx, err := s.raftApply(ctx, msgRotateRootKey|msgIgnoreUnknown, &rotateRootKeyCmd{Key: k})
	if err != nil {
		return nil, 0, err
	}
	// As Nomad's, the answer is the key as made, before the write gave it
	// indexes: CreateIndex and ModifyIndex are 0 and the write's index
	// travels beside it (X-Nomad-Index). Clients rely on it: the Go
	// client's own test lists the keyring blocking on the returned
	// CreateIndex and expects an answer at once.
	k.State = structs.RootKeyStateActive
	return k.Meta(), idx, nil
}

// KeyringDelete deletes the inactive root key id.
func (s *Server) KeyringDelete(ctx context.Context, id string) (uint64, error) {
	if !structs.IsUUID(id) {
		return 0, structs.BadRequest("Invalid key ID %q", id)
	}
	return s.raftApply(ctx, msgDeleteRootKey|msgIgnoreUnknown, &deleteRootKeyCmd{KeyID: id})
}

// ensureRootKey makes the first root key when the keyring is empty; the
// leader runs it when it takes office.
func (s *Server) ensureRootKey(ctx context.Context) error {
	keys, _, err := s.store.RootKeys(nil)
	if err != nil || len(keys) > 0 {
		return err
	}
	k, err := newRootKey(time.Now())
	if err != nil {
		return err
	}
	_, err = s.raftApply(ctx, msgRotateRootKey|msgIgnoreUnknown, &rotateRootKeyCmd{Key: k, OnlyIfEmpty: true})
	return err
}

// JWKS returns the public signing keys of the keyring as a JSON Web Key
// Set.
func JWKS(keys []*structs.RootKey) *structs.JWKS {
	out := &structs.JWKS{Keys: make([]structs.JWK, 0, len(keys))}
	for _, k := range keys {
		pub := ed25519.NewKeyFromSeed(k.SigningKey).Public().(ed25519.PublicKey)
		out.Keys = append(out.Keys, structs.JWK{
			KeyType: "OKP", Curve: "Ed25519", Use: "sig", Algorithm: "EdDSA",
			KeyID: k.KeyID, X: base64.RawURLEncoding.EncodeToString(pub),
		})
	}
	return out
}
