package server

import (
	"context"
	"errors"
	"slices"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"tether/rpc"
	"tether/structs"
)

// A follower's state can lag the leader's: a server that has just
// restarted applies the log past its snapshot only once the leader tells
// it the commit index, and a token or policy made a moment ago may not
// have reached it yet. Behind a load balancer such a server would refuse
// valid tokens ("ACL token not found") for the seconds it takes to catch
// up. So a secret or policy this server does not know is looked up on the
// leader before the caller is refused.
//
// The lookups are bounded: at most aclLeaderLookupRate a second per
// server (a flood of bogus secrets costs the leader no more than that;
// beyond it, an unknown secret is refused at once, as before), concurrent
// lookups of one secret are merged, and each waits aclLeaderLookupTimeout
// at most.
const (
	aclLeaderLookupRate    = 50
	aclLeaderLookupBurst   = 100
	aclLeaderLookupTimeout = 2 * time.Second

	// methodPeerACLLookup asks the leader for a token by secret and for
	// policies by name (acl_leader.go).
	methodPeerACLLookup = "ACL.PeerLookup"
)

// leaderACLLookups is a server's state of its lookups on the leader.
type leaderACLLookups struct {
	limiter *rate.Limiter
	group   singleflight.Group
}

func newLeaderACLLookups() *leaderACLLookups {
	return &leaderACLLookups{limiter: rate.NewLimiter(aclLeaderLookupRate, aclLeaderLookupBurst)}
}

// peerACLLookupRequest names a token secret, policies, or both.
type peerACLLookupRequest struct {
	SecretID string
	Policies []string
}

// peerACLLookupResponse is the leader's answer: the live token with the
// secret (nil if none), the names of the policies its roles hold, and
// those of the named policies, and of the token's (roles' included), that
// exist.
type peerACLLookupResponse struct {
	Token        *structs.ACLToken
	RolePolicies []string
	Policies     map[string]*structs.ACLPolicy
}

// peerACLLookupEndpoint answers a peer's lookup, on the leader only.
func (s *Server) peerACLLookupEndpoint(ctx context.Context, req *peerACLLookupRequest, resp *peerACLLookupResponse) error {
	if err := s.requirePeer(ctx); err != nil {
		return err
	}
	if !s.IsLeader() {
		return errNotLeader
	}
	if len(req.Policies) > maxCachedPolicies {
		return structs.BadRequest("too many policies requested")
	}
	names := req.Policies
	if req.SecretID != "" {
		tok, err := s.tokenBySecret(req.SecretID)
		if err != nil && !errors.Is(err, structs.ErrTokenNotFound) {
			return err
		}
		if tok != nil {
			resp.Token = tok
			if resp.RolePolicies, err = s.store.ACLRolePolicyNames(tok.Roles); err != nil {
				return err
			}
			names = appendNew(slices.Clone(names), append(slices.Clone(tok.Policies), resp.RolePolicies...)...)
		}
	}
	resp.Policies = make(map[string]*structs.ACLPolicy, len(names))
	for _, name := range names {
		p, err := s.store.ACLPolicyByName(name)
		if err != nil {
			return err
		}
		if p != nil {
			resp.Policies[name] = p
		}
	}
	return nil
}

// lookupAtLeader asks the leader for req; ok is false when this server
// leads, knows no leader, is over its lookup rate, or the leader did not
// answer in time: the caller then goes by its own state.
func (s *Server) lookupAtLeader(req *peerACLLookupRequest) (*peerACLLookupResponse, bool) {
	if s.IsLeader() {
		return nil, false
	}
	leader := s.leaderAddr()
	if leader == "" || leader == s.cfg.RPCAdvertise || !s.aclLookups.limiter.Allow() {
		return nil, false
	}
	key := req.SecretID
	for _, p := range req.Policies {
		key += "\x00" + p
	}
	v, err, _ := s.aclLookups.group.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(s.ctx, aclLeaderLookupTimeout)
		defer cancel()
		var resp peerACLLookupResponse
		if err := s.pool.Call(ctx, leader, methodPeerACLLookup, req, &resp); err != nil {
			return nil, err
		}
		return &resp, nil
	})
	if err != nil {
		s.logger.Debug("ACL lookup on the leader failed", "leader", leader, "error", err)
		return nil, false
	}
	s.aclLeaderLookups.Add(1)
	return v.(*peerACLLookupResponse), true
}

// tokenBySecretOrLeader is tokenBySecret, falling back to the leader for
// a secret this server does not know. With the token it returns the
// leader's answer (its copies of the token's policies and its roles'
// policy names), nil when the token is local.
func (s *Server) tokenBySecretOrLeader(secret string) (*structs.ACLToken, *peerACLLookupResponse, error) {
	tok, err := s.tokenBySecret(secret)
	if !errors.Is(err, structs.ErrTokenNotFound) || secret == "" {
		return tok, nil, err
	}
	resp, ok := s.lookupAtLeader(&peerACLLookupRequest{SecretID: secret})
	if !ok || resp.Token == nil || resp.Token.IsExpired(s.acl.clock()) {
		return nil, nil, err
	}
	return resp.Token, resp, nil
}

// registerPeerACLEndpoints registers the leader's lookup for peers.
func (s *Server) registerPeerACLEndpoints() {
	rpc.HandleUnary(s.mux, methodPeerACLLookup, s.peerACLLookupEndpoint)
}
