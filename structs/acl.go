package structs

import (
	"regexp"
	"time"
)

// ACL token types.
const (
	// ACLClientToken is a token whose rights are the union of its policies.
	ACLClientToken = "client"

	// ACLManagementToken is a token that may do anything.
	ACLManagementToken = "management"
)

// ACLAnonymousPolicy is the name of the policy that applies to requests
// without a token. It grants nothing until an operator creates it.
const ACLAnonymousPolicy = "anonymous"

// ACL RPC methods, served by servers and called by node agents over their
// own session. Both authenticate the caller by its node secret, never by
// the session the call arrived on.
const (
	// MethodACLResolveToken returns the token with a secret.
	MethodACLResolveToken = "ACL.ResolveToken"

	// MethodACLGetPolicies returns policies by name.
	MethodACLGetPolicies = "ACL.GetPolicies"
)

// Limits of ACL objects, as Nomad's.
const (
	// MaxACLNameLength bounds token names.
	MaxACLNameLength = 256

	// MaxACLDescriptionLength bounds policy descriptions.
	MaxACLDescriptionLength = 256

	// MaxACLRulesLength bounds a policy's rules text.
	MaxACLRulesLength = 64 << 10
)

// validACLPolicyName is Nomad's rule for policy names.
var validACLPolicyName = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)

// ValidACLPolicyName reports whether name may name a policy.
func ValidACLPolicyName(name string) bool { return validACLPolicyName.MatchString(name) }

// ACLJobACL is the workload-identity attachment of a policy (Nomad's
// JobACL). Tether has no workload identities; it is kept for the JSON shape.
type ACLJobACL struct {
	Namespace string
	JobID     string
	Group     string
	Task      string
}

// ACLPolicy is a named set of rules in Nomad's policy language.
type ACLPolicy struct {
	Name        string
	Description string
	Rules       string
	JobACL      *ACLJobACL

	CreateIndex uint64
	ModifyIndex uint64
}

// Copy returns a deep copy of p.
func (p *ACLPolicy) Copy() *ACLPolicy {
	if p == nil {
		return nil
	}
	c := *p
	if p.JobACL != nil {
		j := *p.JobACL
		c.JobACL = &j
	}
	return &c
}

// Stub returns the policy's list entry.
func (p *ACLPolicy) Stub() *ACLPolicyListStub {
	return &ACLPolicyListStub{
		Name:        p.Name,
		Description: p.Description,
		JobACL:      p.Copy().JobACL,
		CreateIndex: p.CreateIndex,
		ModifyIndex: p.ModifyIndex,
	}
}

// ACLPolicyListStub is a policy in GET /v1/acl/policies.
type ACLPolicyListStub struct {
	Name        string
	Description string
	JobACL      *ACLJobACL
	CreateIndex uint64
	ModifyIndex uint64
}

// MaxACLLinks bounds the policy links of a role and the role links of a
// token (Nomad sets no bound; this one is far above any real use), so that
// one token cannot make a resolution fetch an unbounded set of policies.
const MaxACLLinks = 256

// ValidACLRoleName reports whether name may name a role: Nomad's rule is
// the policy-name rule.
func ValidACLRoleName(name string) bool { return validACLPolicyName.MatchString(name) }

// ACLRolePolicyLink names a policy a role grants.
type ACLRolePolicyLink struct {
	Name string
}

// ACLRole is a named set of policies (Nomad v1.5+): a token linked to a
// role holds every policy of the role, as the role is when the token is
// used. Its ID is server-assigned; its Name is unique and may change.
type ACLRole struct {
	ID          string
	Name        string
	Description string
	Policies    []*ACLRolePolicyLink

	CreateIndex uint64
	ModifyIndex uint64
}

// Copy returns a deep copy of r.
func (r *ACLRole) Copy() *ACLRole {
	if r == nil {
		return nil
	}
	c := *r
	c.Policies = copyPolicyLinks(r.Policies)
	return &c
}

func copyPolicyLinks(links []*ACLRolePolicyLink) []*ACLRolePolicyLink {
	if links == nil {
		return nil
	}
	out := make([]*ACLRolePolicyLink, len(links))
	for i, l := range links {
		lc := *l
		out[i] = &lc
	}
	return out
}

// PolicyNames returns the names of the policies r links to.
func (r *ACLRole) PolicyNames() []string {
	out := make([]string, 0, len(r.Policies))
	for _, l := range r.Policies {
		out = append(out, l.Name)
	}
	return out
}

// Stub returns the role's list entry.
func (r *ACLRole) Stub() *ACLRoleListStub {
	return &ACLRoleListStub{
		ID:          r.ID,
		Name:        r.Name,
		Description: r.Description,
		Policies:    copyPolicyLinks(r.Policies),
		CreateIndex: r.CreateIndex,
		ModifyIndex: r.ModifyIndex,
	}
}

// ACLRoleListStub is a role in GET /v1/acl/roles.
type ACLRoleListStub struct {
	ID          string
	Name        string
	Description string
	Policies    []*ACLRolePolicyLink
	CreateIndex uint64
	ModifyIndex uint64
}

// ACLTokenRoleLink links a token to a role. A caller may name the role by
// ID or by Name; the stored link carries both, and a read reports the
// role's current name (a link to a deleted role is left out).
type ACLTokenRoleLink struct {
	ID   string
	Name string
}

// ACLToken is a bearer credential: its SecretID is what callers send in
// X-Nomad-Token, its AccessorID what administrators refer to it by.
type ACLToken struct {
	AccessorID string
	SecretID   string
	Name       string
	Type       string
	Policies   []string
	Roles      []*ACLTokenRoleLink
	Global     bool
	CreateTime time.Time

	// ExpirationTime is when the token stops working; nil never.
	ExpirationTime *time.Time `json:",omitempty"`

	// ExpirationTTL is only read at creation: ExpirationTime becomes
	// CreateTime plus ExpirationTTL.
	ExpirationTTL time.Duration `json:",omitempty"`

	CreateIndex uint64
	ModifyIndex uint64
}

// Copy returns a deep copy of t.
func (t *ACLToken) Copy() *ACLToken {
	if t == nil {
		return nil
	}
	c := *t
	c.Policies = append([]string(nil), t.Policies...)
	if t.Roles != nil {
		c.Roles = make([]*ACLTokenRoleLink, len(t.Roles))
		for i, r := range t.Roles {
			rc := *r
			c.Roles[i] = &rc
		}
	}
	if t.ExpirationTime != nil {
		e := *t.ExpirationTime
		c.ExpirationTime = &e
	}
	return &c
}

// IsExpired reports whether the token has an expiration time at or before
// now.
func (t *ACLToken) IsExpired(now time.Time) bool {
	return t != nil && t.ExpirationTime != nil && !t.ExpirationTime.After(now)
}

// HasRole reports whether t links to the role with ID id.
func (t *ACLToken) HasRole(id string) bool {
	for _, l := range t.Roles {
		if l.ID == id {
			return true
		}
	}
	return false
}

// IsManagement reports whether t is a management token.
func (t *ACLToken) IsManagement() bool { return t != nil && t.Type == ACLManagementToken }

// Stub returns the token's list entry, which has no secret.
func (t *ACLToken) Stub() *ACLTokenListStub {
	c := t.Copy()
	return &ACLTokenListStub{
		AccessorID:     c.AccessorID,
		Name:           c.Name,
		Type:           c.Type,
		Policies:       c.Policies,
		Roles:          c.Roles,
		Global:         c.Global,
		CreateTime:     c.CreateTime,
		ExpirationTime: c.ExpirationTime,
		CreateIndex:    c.CreateIndex,
		ModifyIndex:    c.ModifyIndex,
	}
}

// ACLTokenListStub is a token in GET /v1/acl/tokens.
type ACLTokenListStub struct {
	AccessorID     string
	Name           string
	Type           string
	Policies       []string
	Roles          []*ACLTokenRoleLink
	Global         bool
	CreateTime     time.Time
	ExpirationTime *time.Time `json:",omitempty"`
	CreateIndex    uint64
	ModifyIndex    uint64
}

// ACLBootstrapRequest is the optional body of POST /v1/acl/bootstrap: an
// operator-chosen secret for the management token.
type ACLBootstrapRequest struct {
	BootstrapSecret string
}

// RequestToken returns the caller's ACL token secret, so code that only
// sees a request as `any` can authorise it.
func (q QueryOptions) RequestToken() string { return q.AuthToken }

// TokenRequest is implemented by every request that carries QueryOptions.
type TokenRequest interface {
	RequestToken() string
}

// TokenOf returns the token secret a request carries, "" (anonymous) for
// requests that carry none.
func TokenOf(req any) string {
	if tr, ok := req.(TokenRequest); ok {
		return tr.RequestToken()
	}
	return ""
}

// ResolveACLTokenRequest asks a server for the token with SecretID ("" is
// the anonymous token). The caller is a node agent and proves it with its
// own ID and secret.
type ResolveACLTokenRequest struct {
	NodeID       string
	NodeSecretID string
	SecretID     string
}

// ResolveACLTokenResponse carries the resolved token, with its SecretID
// blanked, and the names of every policy it holds: its own and those of
// its roles, as the server's state has them. (A server that predates
// roles sends no Policies; the token's own are then all it holds.)
type ResolveACLTokenResponse struct {
	Token    *ACLToken
	Policies []string
	Index    uint64
}

// GetACLPoliciesRequest asks a server for policies by name; the caller is
// a node agent, authenticated as in ResolveACLTokenRequest.
type GetACLPoliciesRequest struct {
	NodeID       string
	NodeSecretID string
	Names        []string
}

// GetACLPoliciesResponse maps each requested policy that exists to it.
type GetACLPoliciesResponse struct {
	Policies map[string]*ACLPolicy
	Index    uint64
}

// AllocRequest is implemented by requests that name an allocation, so the
// namespace a call is checked against is always the allocation's own.
type AllocRequest interface {
	RequestAllocID() string
}

// RequestAllocID returns the allocation the request names.
func (r *AllocSpecificRequest) RequestAllocID() string { return r.AllocID }

// RequestAllocID returns the allocation the request names.
func (r *FsListRequest) RequestAllocID() string { return r.AllocID }

// RequestAllocID returns the allocation the request names.
func (r *FsReadAtRequest) RequestAllocID() string { return r.AllocID }

// RequestAllocID returns the allocation the request names.
func (r *FsStreamRequest) RequestAllocID() string { return r.AllocID }

// RequestAllocID returns the allocation the request names.
func (r *FsLogsRequest) RequestAllocID() string { return r.AllocID }

// OneTimeTokenTTL is how long a one-time token can be exchanged, as in
// Nomad.
const OneTimeTokenTTL = 10 * time.Minute

// OneTimeToken is a secret that can be exchanged once, within
// OneTimeTokenTTL, for the ACL token it was made from (the UI's sign-in
// link). It is replicated like every ACL object.
type OneTimeToken struct {
	OneTimeSecretID string
	AccessorID      string
	ExpiresAt       time.Time
	CreateIndex     uint64
	ModifyIndex     uint64
}

// Copy returns a copy of t.
func (t *OneTimeToken) Copy() *OneTimeToken {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// OneTimeTokenUpsertResponse is the answer of PUT /v1/acl/token/onetime.
type OneTimeTokenUpsertResponse struct {
	OneTimeToken *OneTimeToken
}

// OneTimeTokenExchangeRequest is the body of PUT
// /v1/acl/token/onetime/exchange.
type OneTimeTokenExchangeRequest struct {
	OneTimeSecretID string
}

// OneTimeTokenExchangeResponse is the answer of PUT
// /v1/acl/token/onetime/exchange: the token the one-time secret stood for.
type OneTimeTokenExchangeResponse struct {
	Token *ACLToken
}
