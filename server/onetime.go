package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// One-time tokens, as Nomad's: a caller holding a token asks for a
// one-time secret that stands for it (PUT /v1/acl/token/onetime); whoever
// holds that secret may exchange it, once and within
// structs.OneTimeTokenTTL, for the token itself (PUT
// /v1/acl/token/onetime/exchange). Both are raft writes; the exchange is
// one command that deletes the one-time token and fails when it is gone or
// expired, so two exchanges of one secret cannot both succeed, on any
// server.

// tableOneTimeTokens holds the one-time tokens, by secret.
const tableOneTimeTokens = "acl_one_time_token"

// oneTimeTokenTableSchema is the schema of tableOneTimeTokens.
func oneTimeTokenTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableOneTimeTokens,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "OneTimeSecretID"}},
		},
	}
}

// maxExpiredSweep bounds how many expired one-time tokens one write
// removes, so that no raft entry does unbounded work.
const maxExpiredSweep = 1000

type (
	// upsertOneTimeTokenCmd stores Token and removes tokens expired at At.
	upsertOneTimeTokenCmd struct {
		Token *structs.OneTimeToken
		At    time.Time
	}

	// exchangeOneTimeTokenCmd deletes the one-time token with Secret, and
	// fails with 403 when there is none or it expired at At.
	exchangeOneTimeTokenCmd struct {
		Secret string
		At     time.Time
	}

	// expireOneTimeTokensCmd removes the tokens expired at At.
	expireOneTimeTokensCmd struct {
		At time.Time
	}
)

func init() {
	snapshotTypes[tableOneTimeTokens] = func() any { return new(structs.OneTimeToken) }
	commands[msgUpsertOneTimeToken] = cmd(func(st *StateStore, c *upsertOneTimeTokenCmd) (uint64, error) {
		return st.UpsertOneTimeToken(c.Token, c.At)
	})
	commands[msgExchangeOneTimeToken] = cmd(func(st *StateStore, c *exchangeOneTimeTokenCmd) (uint64, error) {
		return st.ExchangeOneTimeToken(c.Secret, c.At)
	})
	commands[msgExpireOneTimeTokens] = cmd(func(st *StateStore, c *expireOneTimeTokensCmd) (uint64, error) {
		return st.ExpireOneTimeTokens(c.At)
	})
}

// UpsertOneTimeToken stores t and removes (up to maxExpiredSweep) tokens
// expired at now, so the table holds about what was made in the last TTL.
func (s *StateStore) UpsertOneTimeToken(t *structs.OneTimeToken, now time.Time) (uint64, error) {
	if t == nil || t.OneTimeSecretID == "" || t.AccessorID == "" {
		return 0, structs.BadRequest("one-time token needs a secret and an accessor ID")
	}
	return s.write([]string{tableOneTimeTokens}, func(txn *memdb.Txn, idx uint64) error {
		if err := expireOneTimeTokensTxn(txn, now); err != nil {
			return err
		}
		c := t.Copy()
		c.CreateIndex, c.ModifyIndex = idx, idx
		if err := txn.Insert(tableOneTimeTokens, c); err != nil {
			return fmt.Errorf("inserting one-time token: %w", err)
		}
		return nil
	})
}

// ExchangeOneTimeToken deletes the one-time token with secret. It fails
// with 403 Permission denied, and writes nothing, when there is none or it
// expired at now (an expired one is left to the next sweep).
func (s *StateStore) ExchangeOneTimeToken(secret string, now time.Time) (uint64, error) {
	return s.write([]string{tableOneTimeTokens}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableOneTimeTokens, "id", secret)
		if err != nil {
			return fmt.Errorf("one-time token lookup failed: %w", err)
		}
		if raw == nil || !raw.(*structs.OneTimeToken).ExpiresAt.After(now) {
			return structs.ErrPermissionDenied
		}
		if err := txn.Delete(tableOneTimeTokens, raw); err != nil {
			return fmt.Errorf("deleting one-time token: %w", err)
		}
		return nil
	})
}

// ExpireOneTimeTokens removes (up to maxExpiredSweep) tokens expired at
// now.
func (s *StateStore) ExpireOneTimeTokens(now time.Time) (uint64, error) {
	return s.write([]string{tableOneTimeTokens}, func(txn *memdb.Txn, idx uint64) error {
		return expireOneTimeTokensTxn(txn, now)
	})
}

func expireOneTimeTokensTxn(txn *memdb.Txn, now time.Time) error {
	it, err := txn.Get(tableOneTimeTokens, "id")
	if err != nil {
		return fmt.Errorf("listing one-time tokens: %w", err)
	}
	var expired []any
	for raw := it.Next(); raw != nil && len(expired) < maxExpiredSweep; raw = it.Next() {
		if !raw.(*structs.OneTimeToken).ExpiresAt.After(now) {
			expired = append(expired, raw)
		}
	}
	for _, raw := range expired {
		if err := txn.Delete(tableOneTimeTokens, raw); err != nil {
			return fmt.Errorf("deleting expired one-time token: %w", err)
		}
	}
	return nil
}

// OneTimeToken returns a copy of the one-time token with secret, or nil.
func (s *StateStore) OneTimeToken(secret string) (*structs.OneTimeToken, error) {
	raw, err := s.db.Txn(false).First(tableOneTimeTokens, "id", secret)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.OneTimeToken).Copy(), nil
}

// UpsertOneTimeToken makes a one-time token for the caller's own token.
// The anonymous caller has none to stand for: 403.
func (s *Server) UpsertOneTimeToken(ctx context.Context, secret string) (*structs.OneTimeToken, uint64, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, 0, err
	}
	if secret == "" || tok.AccessorID == anonymousToken().AccessorID {
		return nil, 0, structs.ErrPermissionDenied
	}
	now := s.acl.clock().UTC()
	ott := &structs.OneTimeToken{
		OneTimeSecretID: structs.GenerateUUID(),
		AccessorID:      tok.AccessorID,
		ExpiresAt:       now.Add(structs.OneTimeTokenTTL),
	}
	idx, err := s.raftApply(ctx, msgUpsertOneTimeToken|msgIgnoreUnknown, &upsertOneTimeTokenCmd{Token: ott, At: now})
	if err != nil {
		return nil, 0, err
	}
	ott.CreateIndex, ott.ModifyIndex = idx, idx
	return ott, idx, nil
}

// methodLeaderOneTimeExchange runs an exchange on the leader, whose state
// has every one-time token committed so far (server-to-server).
const methodLeaderOneTimeExchange = "Leader.ACLOneTimeExchange"

// oneTimeExchangeRequest and oneTimeExchangeResponse carry an exchange to
// the leader.
type (
	oneTimeExchangeRequest struct {
		Secret string
	}
	oneTimeExchangeResponse struct {
		Token *structs.ACLToken
		Index uint64
	}
)

// ExchangeOneTimeToken spends a one-time secret and returns the ACL token
// it stood for. No caller token is needed: the secret is the credential.
// An unknown, spent or expired secret, or one whose token has since been
// deleted or expired, is 403 Permission denied. It runs on the leader (a
// follower may not have applied a token made a moment ago); an unknown
// secret writes nothing.
func (s *Server) ExchangeOneTimeToken(ctx context.Context, oneTimeSecret string) (*structs.ACLToken, uint64, error) {
	if !s.ACLEnabled() {
		return nil, 0, errACLDisabled
	}
	if oneTimeSecret == "" {
		return nil, 0, structs.BadRequest("missing OneTimeSecretID")
	}
	if !structs.IsUUID(oneTimeSecret) {
		return nil, 0, structs.ErrPermissionDenied
	}
	req := &oneTimeExchangeRequest{Secret: oneTimeSecret}
	var resp oneTimeExchangeResponse
	err := s.leaderCall(ctx, methodLeaderOneTimeExchange, req, &resp, func(ctx context.Context) error {
		return s.exchangeOneTimeToken(ctx, req, &resp)
	})
	if err != nil {
		return nil, 0, err
	}
	s.waitApplied(ctx, resp.Index)
	return resp.Token, resp.Index, nil
}

// exchangeOneTimeToken is the exchange on the leader.
func (s *Server) exchangeOneTimeToken(ctx context.Context, req *oneTimeExchangeRequest, resp *oneTimeExchangeResponse) error {
	ott, err := s.store.OneTimeToken(req.Secret)
	if err != nil {
		return err
	}
	now := s.acl.clock().UTC()
	if ott == nil || !ott.ExpiresAt.After(now) {
		return structs.ErrPermissionDenied
	}
	// The command fails unless it deletes the token itself: of two
	// exchanges of one secret, one wins.
	idx, err := s.raftApply(ctx, msgExchangeOneTimeToken|msgIgnoreUnknown, &exchangeOneTimeTokenCmd{Secret: req.Secret, At: now})
	if err != nil {
		return err
	}
	tok, err := s.store.ACLTokenByAccessorID(ott.AccessorID)
	if err != nil {
		return err
	}
	if tok == nil || tok.IsExpired(now) {
		return structs.ErrPermissionDenied
	}
	resp.Token, resp.Index = tok, idx
	return nil
}

// expireOneTimeTokens removes the expired one-time tokens (system GC).
func (s *Server) expireOneTimeTokens(ctx context.Context) error {
	if !s.ACLEnabled() {
		return nil
	}
	_, err := s.raftApply(ctx, msgExpireOneTimeTokens|msgIgnoreUnknown, &expireOneTimeTokensCmd{At: s.acl.clock().UTC()})
	return err
}
