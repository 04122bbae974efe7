package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"tether/rpc"
	"tether/structs"
	"tether/structs/acl"
)

// ACL token expiration bounds, Nomad's defaults.
const (
	minTokenExpirationTTL = time.Minute
	maxTokenExpirationTTL = 24 * time.Hour

	// maxCachedPolicies bounds the parsed-policy cache.
	maxCachedPolicies = 4096
)

// errACLDisabled answers the ACL endpoints while ACLs are off.
var errACLDisabled = structs.BadRequest("ACL support disabled")

// errInvalidACLToken answers a BootstrapSecret that is not a UUID, in
// Nomad's words.
var errInvalidACLToken = structs.BadRequest("invalid acl token")

// anonymousToken is what a request without a token resolves to.
func anonymousToken() *structs.ACLToken {
	return &structs.ACLToken{
		AccessorID: "anonymous",
		Name:       "Anonymous Token",
		Type:       structs.ACLClientToken,
		Policies:   []string{structs.ACLAnonymousPolicy},
	}
}

// aclState is the server's ACL machinery: a cache of parsed policies
// (keyed by name and valid for one ModifyIndex) and the clock token
// expiry is judged by. The zero value is ready for use.
type aclState struct {
	mu       sync.Mutex
	policies map[string]cachedPolicy

	// now is the clock; nil means time.Now.
	now func() time.Time
}

type cachedPolicy struct {
	modifyIndex uint64
	policy      *acl.Policy
}

func (a *aclState) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

// parsed returns the parsed rules of p, from the cache when p is
// unchanged.
func (a *aclState) parsed(p *structs.ACLPolicy) (*acl.Policy, error) {
	a.mu.Lock()
	c, ok := a.policies[p.Name]
	a.mu.Unlock()
	if ok && c.modifyIndex == p.ModifyIndex {
		return c.policy, nil
	}
	pp, err := acl.Parse(p.Rules)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.policies == nil || len(a.policies) >= maxCachedPolicies {
		a.policies = make(map[string]cachedPolicy)
	}
	a.policies[p.Name] = cachedPolicy{modifyIndex: p.ModifyIndex, policy: pp}
	a.mu.Unlock()
	return pp, nil
}

// ACLEnabled reports whether the server enforces ACLs.
func (s *Server) ACLEnabled() bool { return s.cfg.ACLEnabled }

// registerACLEndpoints adds the ACL methods node agents call. Both
// authenticate the node by its secret: a session never vouches for a
// caller.
func (s *Server) registerACLEndpoints() {
	rpc.HandleUnary(s.mux, structs.MethodACLResolveToken, s.aclResolveTokenRPC)
	rpc.HandleUnary(s.mux, structs.MethodACLGetPolicies, s.aclGetPoliciesRPC)
	rpc.HandleUnary(s.mux, methodLeaderOneTimeExchange, leaderOnly(s, s.exchangeOneTimeToken))
}

func (s *Server) aclResolveTokenRPC(ctx context.Context, req *structs.ResolveACLTokenRequest, resp *structs.ResolveACLTokenResponse) error {
	if err := s.authenticateNode(req.NodeID, req.NodeSecretID); err != nil {
		return err
	}
	if !s.ACLEnabled() {
		return errACLDisabled
	}
	tok, fromLeader, err := s.tokenBySecretOrLeader(req.SecretID)
	if err != nil {
		return err
	}
	// The node fetches what the token holds by name, roles' policies
	// included: roles are resolved here, so a node knows no roles.
	if resp.Policies, err = s.tokenPolicyNames(tok, fromLeader); err != nil {
		return err
	}
	tok.SecretID = ""
	resp.Token = tok
	resp.Index = s.store.aclTablesIndex()
	return nil
}

func (s *Server) aclGetPoliciesRPC(ctx context.Context, req *structs.GetACLPoliciesRequest, resp *structs.GetACLPoliciesResponse) error {
	if err := s.authenticateNode(req.NodeID, req.NodeSecretID); err != nil {
		return err
	}
	if !s.ACLEnabled() {
		return errACLDisabled
	}
	if len(req.Names) > maxCachedPolicies {
		return structs.BadRequest("too many policies requested")
	}
	resp.Policies = make(map[string]*structs.ACLPolicy, len(req.Names))
	var missing []string
	for _, name := range req.Names {
		p, err := s.store.ACLPolicyByName(name)
		if err != nil {
			return err
		}
		if p != nil {
			resp.Policies[name] = p
		} else {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		// This server may lag the leader (acl_leader.go).
		if lr, ok := s.lookupAtLeader(&peerACLLookupRequest{Policies: missing}); ok {
			for name, p := range lr.Policies {
				resp.Policies[name] = p
			}
		}
	}
	resp.Index = s.store.aclTablesIndex()
	return nil
}

// tokenBySecret returns a copy of the live token with the secret: the
// anonymous token for "", ErrTokenNotFound for an unknown or expired one.
func (s *Server) tokenBySecret(secret string) (*structs.ACLToken, error) {
	if secret == "" {
		return anonymousToken(), nil
	}
	tok, err := s.store.ACLTokenBySecretID(secret)
	if err != nil {
		return nil, err
	}
	if tok == nil || tok.IsExpired(s.acl.clock()) {
		return nil, structs.ErrTokenNotFound
	}
	return tok, nil
}

// ResolveToken returns what the token with the secret may do ("" is the
// anonymous caller). With ACLs disabled everyone may do everything. An
// unknown or expired token is ErrTokenNotFound.
func (s *Server) ResolveToken(secret string) (*acl.ACL, error) {
	if !s.ACLEnabled() {
		return acl.ACLsDisabledACL, nil
	}
	tok, fromLeader, err := s.tokenBySecretOrLeader(secret)
	if err != nil {
		return nil, err
	}
	return s.aclForToken(tok, fromLeader)
}

// aclForToken merges the token's policies, its roles' included. Policies
// and roles deleted since the token was made are skipped. fromLeader is
// the leader's answer for a token this server did not know yet (its
// copies of the policies, and its roles' policy names); a policy in
// neither place grants nothing.
func (s *Server) aclForToken(tok *structs.ACLToken, fromLeader *peerACLLookupResponse) (*acl.ACL, error) {
	if tok.IsManagement() {
		return acl.ManagementACL, nil
	}
	names, err := s.tokenPolicyNames(tok, fromLeader)
	if err != nil {
		return nil, err
	}
	var parsed []*acl.Policy
	for _, name := range names {
		p, err := s.store.ACLPolicyByName(name)
		if err != nil {
			return nil, err
		}
		if fromLeader != nil {
			if lp, ok := fromLeader.Policies[name]; ok && (p == nil || lp.ModifyIndex > p.ModifyIndex) {
				p = lp
			}
		}
		if p == nil {
			continue
		}
		pp, err := s.acl.parsed(p)
		if err != nil {
			// Rules are validated when stored; a policy that no longer
			// parses grants nothing.
			s.logger.Error("stored ACL policy does not parse; ignoring it", "policy", name, "error", err)
			continue
		}
		parsed = append(parsed, pp)
	}
	return acl.NewACL(parsed), nil
}

// --- ACL administration (HTTP /v1/acl/...). Each takes the caller's token
// secret and checks it. ---

// requireManagement returns an error unless secret is a management token.
func (s *Server) requireManagement(secret string) error {
	if !s.ACLEnabled() {
		return errACLDisabled
	}
	aclObj, err := s.ResolveToken(secret)
	if err != nil {
		return err
	}
	if !aclObj.IsManagement() {
		return structs.ErrPermissionDenied
	}
	return nil
}

// BootstrapACL creates the initial management token, once. secret is the
// operator's chosen SecretID, or "" for a random one.
func (s *Server) BootstrapACL(ctx context.Context, secret string) (*structs.ACLToken, error) {
	if !s.ACLEnabled() {
		return nil, errACLDisabled
	}
	if secret == "" {
		secret = structs.GenerateUUID()
	} else if !structs.IsUUID(secret) {
		return nil, errInvalidACLToken
	}
	if idx := s.store.ACLBootstrapIndex(); idx != 0 {
		return nil, errACLBootstrapDone(idx)
	}
	tok := &structs.ACLToken{
		AccessorID: structs.GenerateUUID(),
		SecretID:   secret,
		Name:       "Bootstrap Token",
		Type:       structs.ACLManagementToken,
		Global:     true,
		CreateTime: s.acl.clock().UTC(),
	}
	if _, err := s.applyACLBootstrap(ctx, tok); err != nil {
		return nil, err
	}
	return s.store.ACLTokenByAccessorID(tok.AccessorID)
}

// validatePolicy checks a policy as Nomad does, naming the rules line of
// any error.
func validatePolicy(p *structs.ACLPolicy) error {
	if !structs.ValidACLPolicyName(p.Name) {
		return structs.BadRequest("invalid name '%s'", p.Name)
	}
	if len(p.Description) > structs.MaxACLDescriptionLength {
		return structs.BadRequest("description longer than %d", structs.MaxACLDescriptionLength)
	}
	if len(p.Rules) > structs.MaxACLRulesLength {
		return structs.BadRequest("rules longer than %d bytes", structs.MaxACLRulesLength)
	}
	if p.JobACL != nil {
		return structs.BadRequest("JobACL (workload identity policies) is not supported")
	}
	if _, err := acl.Parse(p.Rules); err != nil {
		return structs.BadRequest("failed to parse rules: %v", err)
	}
	return nil
}

// UpsertACLPolicy creates or replaces a policy. Management only.
func (s *Server) UpsertACLPolicy(ctx context.Context, secret string, p *structs.ACLPolicy) (uint64, error) {
	if err := s.requireManagement(secret); err != nil {
		return 0, err
	}
	if p == nil {
		return 0, structs.BadRequest("missing policy")
	}
	if err := validatePolicy(p); err != nil {
		return 0, err
	}
	c := p.Copy()
	c.CreateIndex, c.ModifyIndex = 0, 0
	return s.applyACLPolicies(ctx, []*structs.ACLPolicy{c})
}

// DeleteACLPolicy removes a policy. Management only.
func (s *Server) DeleteACLPolicy(ctx context.Context, secret, name string) (uint64, error) {
	if err := s.requireManagement(secret); err != nil {
		return 0, err
	}
	return s.applyACLPolicyDelete(ctx, []string{name})
}

// callerToken resolves the caller for the read endpoints that non-
// management tokens may use on their own objects.
func (s *Server) callerToken(secret string) (*structs.ACLToken, error) {
	if !s.ACLEnabled() {
		return nil, errACLDisabled
	}
	return s.tokenBySecret(secret)
}

// ACLPolicy returns a policy. Management tokens may read any; others only
// the policies they hold, directly or through a role.
func (s *Server) ACLPolicy(secret, name string) (*structs.ACLPolicy, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, err
	}
	held, err := s.tokenPolicyNames(tok, nil)
	if err != nil {
		return nil, err
	}
	if !tok.IsManagement() && !slices.Contains(held, name) {
		return nil, structs.ErrPermissionDenied
	}
	p, err := s.store.ACLPolicyByName(name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errACLPolicyNotFound
	}
	return p, nil
}

// ACLPolicies lists policies: all of them for management tokens, the
// ones the caller holds (directly or through a role) for others.
func (s *Server) ACLPolicies(secret string) ([]*structs.ACLPolicyListStub, uint64, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, 0, err
	}
	held, err := s.tokenPolicyNames(tok, nil)
	if err != nil {
		return nil, 0, err
	}
	all, idx, err := s.store.ACLPolicies()
	if err != nil {
		return nil, 0, err
	}
	out := make([]*structs.ACLPolicyListStub, 0, len(all))
	for _, p := range all {
		if tok.IsManagement() || slices.Contains(held, p.Name) {
			out = append(out, p.Stub())
		}
	}
	return out, idx, nil
}

// validateToken checks a token about to be stored; existing is the stored
// version on update, nil on create. Its role links are resolved when it
// is stored (resolveRoleLinksTxn).
func (s *Server) validateToken(t, existing *structs.ACLToken) error {
	if len(t.Name) > structs.MaxACLNameLength {
		return structs.BadRequest("token name too long")
	}
	if len(t.Roles) > structs.MaxACLLinks {
		return structs.BadRequest("token links more than %d roles", structs.MaxACLLinks)
	}
	for _, l := range t.Roles {
		if l == nil || l.ID == "" && l.Name == "" {
			return errRoleLinkEmpty
		}
	}
	switch t.Type {
	case structs.ACLClientToken:
		if len(t.Policies) == 0 && len(t.Roles) == 0 {
			return structs.BadRequest("client token missing policies or roles")
		}
	case structs.ACLManagementToken:
		if len(t.Policies) != 0 || len(t.Roles) != 0 {
			return structs.BadRequest("management token cannot be associated with policies or roles")
		}
	default:
		return structs.BadRequest("token type must be client or management")
	}
	seen := map[string]bool{}
	for _, name := range t.Policies {
		if seen[name] {
			return structs.BadRequest("policy %s listed twice", name)
		}
		// A policy need not exist yet (Nomad v1.6.5): a token may be made
		// before its policy, and grants nothing of it until it exists.
		if !structs.ValidACLPolicyName(name) {
			return structs.BadRequest("invalid policy name '%s'", name)
		}
		seen[name] = true
	}
	if existing != nil && existing.Global != t.Global {
		return structs.BadRequest("cannot toggle global mode")
	}
	return nil
}

// setExpiration fills ExpirationTime from ExpirationTTL on a new token and
// checks the bounds.
func setExpiration(t *structs.ACLToken, now time.Time) error {
	if t.ExpirationTTL < 0 {
		return structs.BadRequest("token expiration TTL must not be negative")
	}
	if t.ExpirationTTL > 0 {
		if t.ExpirationTime != nil {
			return structs.BadRequest("cannot set both expiration TTL and expiration time")
		}
		e := t.CreateTime.Add(t.ExpirationTTL)
		t.ExpirationTime = &e
	}
	if t.ExpirationTime != nil {
		d := t.ExpirationTime.Sub(now)
		if d < minTokenExpirationTTL {
			return structs.BadRequest("expiration time cannot be less than %s in the future", minTokenExpirationTTL)
		}
		if d > maxTokenExpirationTTL {
			return structs.BadRequest("expiration time cannot be more than %s in the future", maxTokenExpirationTTL)
		}
	}
	return nil
}

// CreateACLToken creates a token with server-chosen IDs. Management only.
func (s *Server) CreateACLToken(ctx context.Context, secret string, t *structs.ACLToken) (*structs.ACLToken, error) {
	if err := s.requireManagement(secret); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, structs.BadRequest("missing token")
	}
	if t.AccessorID != "" {
		return nil, structs.BadRequest("cannot specify Accessor ID")
	}
	c := t.Copy()
	if err := s.validateToken(c, nil); err != nil {
		return nil, err
	}
	now := s.acl.clock().UTC()
	c.AccessorID = structs.GenerateUUID()
	c.SecretID = structs.GenerateUUID()
	c.CreateTime = now
	if err := setExpiration(c, now); err != nil {
		return nil, err
	}
	return s.storeToken(ctx, c)
}

// UpdateACLToken changes a token's name, type and policies; its IDs,
// creation and expiration stay. An unknown accessor with a SecretID given
// creates that client token (Nomad's upload). Management only.
func (s *Server) UpdateACLToken(ctx context.Context, secret, accessorID string, t *structs.ACLToken) (*structs.ACLToken, error) {
	if err := s.requireManagement(secret); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, structs.BadRequest("missing token")
	}
	if t.AccessorID != "" && t.AccessorID != accessorID {
		return nil, structs.BadRequest("token accessor ID does not match request path")
	}
	existing, err := s.store.ACLTokenByAccessorID(accessorID)
	if err != nil {
		return nil, err
	}
	c := t.Copy()
	c.AccessorID = accessorID
	if existing == nil {
		if c.SecretID == "" {
			return nil, structs.BadRequest("cannot find token %s", accessorID)
		}
		if !structs.IsUUID(accessorID) || !structs.IsUUID(c.SecretID) {
			return nil, structs.BadRequest("uploaded token IDs must be UUIDs")
		}
		if c.Type == structs.ACLManagementToken {
			return nil, structs.BadRequest("cannot upload management tokens")
		}
		if err := s.validateToken(c, nil); err != nil {
			return nil, err
		}
		now := s.acl.clock().UTC()
		c.CreateTime = now
		if err := setExpiration(c, now); err != nil {
			return nil, err
		}
		return s.storeToken(ctx, c)
	}
	if c.SecretID != "" && c.SecretID != existing.SecretID {
		return nil, structs.BadRequest("cannot change a token's secret ID")
	}
	// What a read returned may be sent back unchanged; a different
	// expiration may not.
	if c.ExpirationTTL != 0 && c.ExpirationTTL != existing.ExpirationTTL ||
		c.ExpirationTime != nil && (existing.ExpirationTime == nil || !c.ExpirationTime.Equal(*existing.ExpirationTime)) {
		return nil, structs.BadRequest("cannot change a token's expiration")
	}
	if err := s.validateToken(c, existing); err != nil {
		return nil, err
	}
	c.SecretID = existing.SecretID
	c.CreateTime = existing.CreateTime
	c.ExpirationTime = existing.ExpirationTime
	c.ExpirationTTL = existing.ExpirationTTL
	return s.storeToken(ctx, c)
}

func (s *Server) storeToken(ctx context.Context, t *structs.ACLToken) (*structs.ACLToken, error) {
	t.CreateIndex, t.ModifyIndex = 0, 0
	if _, err := s.applyACLTokens(ctx, []*structs.ACLToken{t}); err != nil {
		return nil, err
	}
	return s.store.ACLTokenByAccessorID(t.AccessorID)
}

// DeleteACLToken removes a token. Management only.
func (s *Server) DeleteACLToken(ctx context.Context, secret, accessorID string) (uint64, error) {
	if err := s.requireManagement(secret); err != nil {
		return 0, err
	}
	existing, err := s.store.ACLTokenByAccessorID(accessorID)
	if err != nil {
		return 0, err
	}
	if existing == nil {
		return 0, structs.BadRequest("Cannot delete nonexistent tokens: %s", accessorID)
	}
	return s.applyACLTokenDelete(ctx, []string{accessorID})
}

// ACLToken returns a token by accessor ID. Management tokens may read any;
// others only themselves.
func (s *Server) ACLToken(secret, accessorID string) (*structs.ACLToken, error) {
	tok, err := s.callerToken(secret)
	if err != nil {
		return nil, err
	}
	if !tok.IsManagement() && tok.AccessorID != accessorID {
		return nil, structs.ErrPermissionDenied
	}
	t, err := s.store.ACLTokenByAccessorID(accessorID)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, errACLTokenNotFound
	}
	return t, nil
}

// ACLTokenSelf returns the caller's own token. Without a token there is
// none: ErrTokenNotFound.
func (s *Server) ACLTokenSelf(secret string) (*structs.ACLToken, error) {
	if !s.ACLEnabled() {
		return nil, errACLDisabled
	}
	if secret == "" {
		return nil, structs.ErrTokenNotFound
	}
	return s.tokenBySecret(secret)
}

// ACLTokens lists every token, without secrets. Management only.
func (s *Server) ACLTokens(secret string) ([]*structs.ACLTokenListStub, uint64, error) {
	if err := s.requireManagement(secret); err != nil {
		return nil, 0, err
	}
	all, idx, err := s.store.ACLTokens()
	if err != nil {
		return nil, 0, err
	}
	out := make([]*structs.ACLTokenListStub, 0, len(all))
	for _, t := range all {
		out = append(out, t.Stub())
	}
	return out, idx, nil
}

// requireNodeRead returns an error unless the token may read nodes.
func (s *Server) requireNodeRead(secret string) error {
	aclObj, err := s.ResolveToken(secret)
	if err != nil {
		return err
	}
	if !aclObj.AllowNodeRead() {
		return structs.ErrPermissionDenied
	}
	return nil
}

// The ACL writes reach the state store through these five calls only, each
// one StateStore write method with plain arguments, so that they are
// replicated like every other write (routed through raft where the
// server's other writes are).

func (s *Server) applyACLBootstrap(ctx context.Context, tok *structs.ACLToken) (uint64, error) {
	return s.raftApply(ctx, msgACLBootstrap, &aclTokensCmd{Tokens: []*structs.ACLToken{tok}})
}

func (s *Server) applyACLPolicies(ctx context.Context, policies []*structs.ACLPolicy) (uint64, error) {
	return s.raftApply(ctx, msgUpsertACLPolicies, &aclPoliciesCmd{Policies: policies})
}

func (s *Server) applyACLPolicyDelete(ctx context.Context, names []string) (uint64, error) {
	return s.raftApply(ctx, msgDeleteACLPolicies, &aclDeleteCmd{Names: names})
}

func (s *Server) applyACLTokens(ctx context.Context, tokens []*structs.ACLToken) (uint64, error) {
	return s.raftApply(ctx, msgUpsertACLTokens, &aclTokensCmd{Tokens: tokens})
}

func (s *Server) applyACLTokenDelete(ctx context.Context, accessorIDs []string) (uint64, error) {
	return s.raftApply(ctx, msgDeleteACLTokens, &aclDeleteCmd{Names: accessorIDs})
}
