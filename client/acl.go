package client

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"tether/structs"
	"tether/structs/acl"
)

// defaultACLCacheTTL is Nomad's default token and policy cache TTL.
const defaultACLCacheTTL = 30 * time.Second

// maxCachedTokens and maxCachedPolicies bound the node's ACL caches.
const (
	maxCachedTokens   = 4096
	maxCachedPolicies = 1024
)

// aclCache resolves tokens for the node's own checks. It asks the servers
// (ACL.ResolveToken, ACL.GetPolicies over the node's session, signed with
// the node secret) and keeps answers for a TTL, so a token deleted on the
// servers stops working here within ACLTokenTTL. When the servers cannot be
// reached, an expired entry is used rather than failing, as Nomad does; a
// server's answer that the token is gone always wins. The zero value is
// ready for use.
type aclCache struct {
	mu       sync.Mutex
	tokens   map[string]*cachedToken // by secret ("" = anonymous)
	policies map[string]*cachedPolicy

	// now is the clock; nil means time.Now.
	now func() time.Time

	// call reaches the servers; nil means the node's session (ServerRPC).
	call func(ctx context.Context, method string, args, reply any) error

	// Counters for odd branches.
	staleUsed atomic.Uint64 // expired entries used because servers were unreachable
	evictions atomic.Uint64 // entries dropped because a cache was full
}

// cachedToken is a resolved token and the names of every policy it holds
// (its own and its roles', which the servers resolve).
type cachedToken struct {
	token    *structs.ACLToken
	policies []string
	fetched  time.Time
}

// cachedPolicy is a parsed policy; nil policy means the servers said it
// does not exist (a token may name a deleted policy).
type cachedPolicy struct {
	policy  *acl.Policy
	fetched time.Time
}

func (a *aclCache) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

func ttlOr(d time.Duration) time.Duration {
	if d <= 0 {
		return defaultACLCacheTTL
	}
	return d
}

// ResolveToken returns what the token with secret may do on this node ("" is
// the anonymous caller). With ACLs disabled everyone may do everything. An
// unknown or expired token is ErrTokenNotFound.
func (c *Client) ResolveToken(ctx context.Context, secret string) (*acl.ACL, error) {
	if !c.cfg.ACLEnabled {
		return acl.ACLsDisabledACL, nil
	}
	entry, err := c.resolveTokenObject(ctx, secret)
	if err != nil {
		return nil, err
	}
	tok := entry.token
	if tok.IsExpired(c.acl.clock()) {
		return nil, structs.ErrTokenNotFound
	}
	if tok.IsManagement() {
		return acl.ManagementACL, nil
	}
	policies, err := c.resolvePolicies(ctx, entry.policies)
	if err != nil {
		return nil, err
	}
	return acl.NewACL(policies), nil
}

// aclServerCall calls an ACL method on the servers, bounded in time.
func (c *Client) aclServerCall(ctx context.Context, method string, args, reply any) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if c.acl.call != nil {
		return c.acl.call(cctx, method, args, reply)
	}
	return c.ServerRPC(cctx, method, args, reply)
}

// isDefinitiveACLError reports whether a server answered that the token
// does not work (as opposed to not answering at all).
func isDefinitiveACLError(err error) bool {
	return errors.Is(err, structs.ErrTokenNotFound) || errors.Is(err, structs.ErrPermissionDenied) ||
		structs.StatusCode(err) == 400 || structs.StatusCode(err) == 403
}

func (c *Client) resolveTokenObject(ctx context.Context, secret string) (*cachedToken, error) {
	a := &c.acl
	ttl := ttlOr(c.cfg.ACLTokenTTL)
	now := a.clock()
	a.mu.Lock()
	entry := a.tokens[secret]
	a.mu.Unlock()
	if entry != nil && now.Sub(entry.fetched) < ttl {
		return entry, nil
	}
	var resp structs.ResolveACLTokenResponse
	req := &structs.ResolveACLTokenRequest{NodeID: c.id.NodeID, NodeSecretID: c.id.SecretID, SecretID: secret}
	err := c.aclServerCall(ctx, structs.MethodACLResolveToken, req, &resp)
	if err == nil && resp.Token == nil {
		err = structs.ErrTokenNotFound
	}
	if err != nil {
		if isDefinitiveACLError(err) {
			a.mu.Lock()
			delete(a.tokens, secret)
			a.mu.Unlock()
			if errors.Is(err, structs.ErrTokenNotFound) {
				return nil, structs.ErrTokenNotFound
			}
			return nil, err
		}
		if entry != nil {
			a.staleUsed.Add(1)
			c.logger.Warn("cannot resolve ACL token; using the expired cached entry", "error", err)
			return entry, nil
		}
		return nil, err
	}
	a.mu.Lock()
	if a.tokens == nil {
		a.tokens = make(map[string]*cachedToken)
	}
	if _, ok := a.tokens[secret]; !ok && len(a.tokens) >= maxCachedTokens {
		a.evictTokensLocked(now, ttl)
	}
	fresh := &cachedToken{token: resp.Token, policies: resp.Policies, fetched: now}
	if fresh.policies == nil {
		// A server that predates roles: the token's own are all it holds.
		fresh.policies = resp.Token.Policies
	}
	a.tokens[secret] = fresh
	a.mu.Unlock()
	return fresh, nil
}

// evictTokensLocked drops expired tokens, and the oldest ones when that is
// not enough, so the cache stays bounded.
func (a *aclCache) evictTokensLocked(now time.Time, ttl time.Duration) {
	for k, e := range a.tokens {
		if now.Sub(e.fetched) >= ttl {
			delete(a.tokens, k)
		}
	}
	if len(a.tokens) < maxCachedTokens {
		return
	}
	keys := make([]string, 0, len(a.tokens))
	for k := range a.tokens {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return a.tokens[keys[i]].fetched.Before(a.tokens[keys[j]].fetched) })
	for _, k := range keys[:len(keys)-maxCachedTokens+1] {
		delete(a.tokens, k)
		a.evictions.Add(1)
	}
}

func (c *Client) resolvePolicies(ctx context.Context, names []string) ([]*acl.Policy, error) {
	a := &c.acl
	ttl := ttlOr(c.cfg.ACLPolicyTTL)
	now := a.clock()
	out := make([]*acl.Policy, 0, len(names))
	var missing []string
	stale := map[string]*cachedPolicy{}
	a.mu.Lock()
	for _, n := range names {
		e := a.policies[n]
		if e != nil && now.Sub(e.fetched) < ttl {
			if e.policy != nil {
				out = append(out, e.policy)
			}
			continue
		}
		if e != nil {
			stale[n] = e
		}
		missing = append(missing, n)
	}
	a.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	var resp structs.GetACLPoliciesResponse
	req := &structs.GetACLPoliciesRequest{NodeID: c.id.NodeID, NodeSecretID: c.id.SecretID, Names: missing}
	if err := c.aclServerCall(ctx, structs.MethodACLGetPolicies, req, &resp); err != nil {
		if isDefinitiveACLError(err) || len(stale) != len(missing) {
			return nil, err
		}
		a.staleUsed.Add(1)
		c.logger.Warn("cannot fetch ACL policies; using expired cached entries", "error", err)
		for _, n := range missing {
			if p := stale[n].policy; p != nil {
				out = append(out, p)
			}
		}
		return out, nil
	}
	fresh := make(map[string]*cachedPolicy, len(missing))
	for _, n := range missing {
		e := &cachedPolicy{fetched: now}
		if p := resp.Policies[n]; p != nil {
			pp, err := acl.Parse(p.Rules)
			if err != nil {
				c.logger.Error("ACL policy from the servers does not parse; ignoring it", "policy", n, "error", err)
			} else {
				e.policy = pp
			}
		}
		fresh[n] = e
		if e.policy != nil {
			out = append(out, e.policy)
		}
	}
	a.mu.Lock()
	if a.policies == nil || len(a.policies)+len(fresh) > maxCachedPolicies {
		if a.policies != nil {
			a.evictions.Add(uint64(len(a.policies)))
		}
		a.policies = make(map[string]*cachedPolicy, len(fresh))
	}
	for n, e := range fresh {
		a.policies[n] = e
	}
	a.mu.Unlock()
	return out, nil
}

// authorizeNode checks a node method (stats, metadata, GC all) against the
// request's token. It runs before anything else, the node check included.
func (c *Client) authorizeNode(ctx context.Context, method string, req structs.TokenRequest) error {
	if !c.cfg.ACLEnabled {
		return nil
	}
	aclObj, err := c.ResolveToken(ctx, req.RequestToken())
	if err != nil {
		return err
	}
	if !aclObj.AllowClientMethod(method, "") {
		return structs.ErrPermissionDenied
	}
	return nil
}

// authorizeAlloc checks an allocation method against the request's token
// and the namespace of the allocation as this node knows it. A bad token is
// reported first; an allocation this node does not know is left to the
// handler, which answers its own 404.
func (c *Client) authorizeAlloc(ctx context.Context, method string, req structs.TokenRequest, allocID string) error {
	if !c.cfg.ACLEnabled {
		return nil
	}
	aclObj, err := c.ResolveToken(ctx, req.RequestToken())
	if err != nil {
		return err
	}
	ns := ""
	if ar := c.allocs.get(allocID); ar != nil {
		ns = ar.alloc().Namespace
	} else if !aclObj.IsManagement() {
		return nil
	}
	if !aclObj.AllowClientMethod(method, ns) {
		return structs.ErrPermissionDenied
	}
	return nil
}
