package client

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// fakeACLServer answers the node's ACL calls from maps, counts them, and
// can be made unreachable.
type fakeACLServer struct {
	mu       sync.Mutex
	tokens   map[string]*structs.ACLToken
	policies map[string]*structs.ACLPolicy
	down     bool
	calls    map[string]int
	lastNode string
}

func (f *fakeACLServer) call(ctx context.Context, method string, args, reply any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	if f.down {
		return structs.NewError(http.StatusServiceUnavailable, "No cluster leader")
	}
	switch method {
	case structs.MethodACLResolveToken:
		req := args.(*structs.ResolveACLTokenRequest)
		f.lastNode = req.NodeID + "/" + req.NodeSecretID
		if req.SecretID == "" {
			reply.(*structs.ResolveACLTokenResponse).Token = &structs.ACLToken{AccessorID: "anonymous", Type: "client", Policies: []string{"anonymous"}}
			return nil
		}
		t := f.tokens[req.SecretID]
		if t == nil {
			// As it arrives after an RPC hop.
			return &rpc.RemoteError{Code: 403, Message: "ACL token not found"}
		}
		reply.(*structs.ResolveACLTokenResponse).Token = t.Copy()
	case structs.MethodACLGetPolicies:
		req := args.(*structs.GetACLPoliciesRequest)
		out := map[string]*structs.ACLPolicy{}
		for _, n := range req.Names {
			if p := f.policies[n]; p != nil {
				out[n] = p.Copy()
			}
		}
		reply.(*structs.GetACLPoliciesResponse).Policies = out
	default:
		return errors.New("unexpected method " + method)
	}
	return nil
}

func (f *fakeACLServer) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeACLServer) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newACLTestClient returns a node agent skeleton with ACLs on, talking to
// a fake server, with one allocation in namespace "web".
func newACLTestClient(t *testing.T) (*Client, *fakeACLServer, *fakeClock, string) {
	t.Helper()
	srv := &fakeACLServer{
		tokens: map[string]*structs.ACLToken{
			"node-read": {AccessorID: "a1", Type: "client", Policies: []string{"nr"}},
			"web-fs":    {AccessorID: "a2", Type: "client", Policies: []string{"wf"}},
			"mgmt":      {AccessorID: "a3", Type: "management"},
		},
		policies: map[string]*structs.ACLPolicy{
			"nr": {Name: "nr", Rules: `node { policy = "read" }`},
			"wf": {Name: "wf", Rules: `namespace "web" { capabilities = ["read-fs"] }`},
		},
		calls: map[string]int{},
	}
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := &Client{
		cfg:    &Config{ACLEnabled: true, ACLTokenTTL: 30 * time.Second, ACLPolicyTTL: time.Minute, StateDir: t.TempDir()},
		logger: hclog.NewNullLogger(),
		id:     identity{NodeID: "node-1", SecretID: "node-secret"},
	}
	c.allocs = newAllocManager(c)
	allocID := structs.GenerateUUID()
	c.allocs.runners[allocID] = &allocRunner{a: &structs.Allocation{ID: allocID, Namespace: "web"}}
	c.acl.now = clk.now
	c.acl.call = srv.call
	return c, srv, clk, allocID
}

func qo(tok string) structs.QueryOptions { return structs.QueryOptions{AuthToken: tok} }

func TestClientACL_Checks(t *testing.T) {
	c, srv, _, allocID := newACLTestClient(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
		want int // 0 = allowed
	}{
		{"stats node-read", c.authorizeNode(ctx, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo("node-read")}), 0},
		{"meta apply node-read", c.authorizeNode(ctx, structs.MethodNodeMetaApply, &structs.NodeSpecificRequest{QueryOptions: qo("node-read")}), 403},
		{"stats anonymous", c.authorizeNode(ctx, structs.MethodClientStats, &structs.NodeSpecificRequest{}), 403},
		{"stats unknown token", c.authorizeNode(ctx, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo("bogus")}), 403},
		{"ls web-fs", c.authorizeAlloc(ctx, structs.MethodFsList, &structs.FsListRequest{QueryOptions: qo("web-fs")}, allocID), 0},
		{"logs web-fs", c.authorizeAlloc(ctx, structs.MethodFsLogs, &structs.FsLogsRequest{QueryOptions: qo("web-fs")}, allocID), 0},
		{"alloc stats web-fs", c.authorizeAlloc(ctx, structs.MethodClientAllocStats, &structs.AllocSpecificRequest{QueryOptions: qo("web-fs")}, allocID), 403},
		// The request's own namespace is ignored: the alloc's counts.
		{"ls node-read claiming ns web", c.authorizeAlloc(ctx, structs.MethodFsList, &structs.FsListRequest{QueryOptions: structs.QueryOptions{AuthToken: "node-read", Namespace: "web"}}, allocID), 403},
		{"gc management", c.authorizeAlloc(ctx, structs.MethodClientAllocGC, &structs.AllocSpecificRequest{QueryOptions: qo("mgmt")}, allocID), 0},
		// An allocation the node does not know is left to the handler's 404.
		{"unknown alloc", c.authorizeAlloc(ctx, structs.MethodFsList, &structs.FsListRequest{QueryOptions: qo("node-read")}, structs.GenerateUUID()), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == 0 {
				if tc.err != nil {
					t.Fatalf("got %v; want allowed", tc.err)
				}
				return
			}
			if got := structs.StatusCode(tc.err); got != tc.want {
				t.Fatalf("got %d %v; want %d", got, tc.err, tc.want)
			}
		})
	}
	if err := c.authorizeNode(ctx, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo("bogus")}); !errors.Is(err, structs.ErrTokenNotFound) {
		t.Fatalf("unknown token err = %v; want ErrTokenNotFound", err)
	}
	if srv.lastNode != "node-1/node-secret" {
		t.Fatalf("node authenticated as %q; want its ID and secret", srv.lastNode)
	}
}

// TestClientACL_CacheTTL checks that tokens are served from the cache
// within ACLTokenTTL and re-resolved after it, so a deleted token stops
// working within the TTL; and that policies have their own TTL.
func TestClientACL_CacheTTL(t *testing.T) {
	c, srv, clk, _ := newACLTestClient(t)
	ctx := context.Background()
	req := &structs.NodeSpecificRequest{QueryOptions: qo("node-read")}
	for i := 0; i < 3; i++ {
		if err := c.authorizeNode(ctx, structs.MethodClientStats, req); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.count(structs.MethodACLResolveToken); n != 1 {
		t.Fatalf("resolve calls within TTL = %d; want 1", n)
	}
	srv.set(func() { delete(srv.tokens, "node-read") })
	clk.advance(29 * time.Second)
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); err != nil {
		t.Fatalf("deleted token inside TTL: %v; want still cached", err)
	}
	clk.advance(2 * time.Second)
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); !errors.Is(err, structs.ErrTokenNotFound) {
		t.Fatalf("deleted token after TTL: %v; want ErrTokenNotFound", err)
	}
	if n := srv.count(structs.MethodACLGetPolicies); n != 1 {
		t.Fatalf("policy fetches = %d; want 1 (policy TTL is 1m)", n)
	}

	// A policy change reaches the node after ACLPolicyTTL.
	srv.set(func() {
		srv.tokens["node-read"] = &structs.ACLToken{AccessorID: "a1", Type: "client", Policies: []string{"nr"}}
		srv.policies["nr"] = &structs.ACLPolicy{Name: "nr", Rules: `node { policy = "deny" }`}
	})
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); err != nil {
		t.Fatalf("cached policy: %v; want allowed until the policy TTL", err)
	}
	clk.advance(time.Minute)
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); !errors.Is(err, structs.ErrPermissionDenied) {
		t.Fatalf("after policy TTL: %v; want Permission denied", err)
	}
}

func TestClientACL_ServersUnreachable(t *testing.T) {
	c, srv, clk, _ := newACLTestClient(t)
	ctx := context.Background()
	req := &structs.NodeSpecificRequest{QueryOptions: qo("node-read")}
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); err != nil {
		t.Fatal(err)
	}
	srv.set(func() { srv.down = true })
	clk.advance(2 * time.Minute)
	if err := c.authorizeNode(ctx, structs.MethodClientStats, req); err != nil {
		t.Fatalf("servers down, expired entry: %v; want the stale entry used", err)
	}
	if c.acl.staleUsed.Load() == 0 {
		t.Fatalf("stale use not counted")
	}
	// A token never seen cannot be resolved without servers.
	err := c.authorizeNode(ctx, structs.MethodClientStats, &structs.NodeSpecificRequest{QueryOptions: qo("mgmt")})
	if got := structs.StatusCode(err); got != http.StatusServiceUnavailable {
		t.Fatalf("uncached token with servers down = %d %v; want 503", got, err)
	}
}

func TestClientACL_ExpiredTokenRefusedFromCache(t *testing.T) {
	c, srv, clk, _ := newACLTestClient(t)
	exp := clk.now().Add(10 * time.Second)
	srv.set(func() {
		srv.tokens["short"] = &structs.ACLToken{AccessorID: "a9", Type: "management", ExpirationTime: &exp}
	})
	ctx := context.Background()
	req := &structs.NodeSpecificRequest{QueryOptions: qo("short")}
	if err := c.authorizeNode(ctx, structs.MethodClientGCAll, req); err != nil {
		t.Fatal(err)
	}
	clk.advance(11 * time.Second) // still inside the cache TTL
	if err := c.authorizeNode(ctx, structs.MethodClientGCAll, req); !errors.Is(err, structs.ErrTokenNotFound) {
		t.Fatalf("expired cached token: %v; want ErrTokenNotFound", err)
	}
}

func TestClientACL_Bounded(t *testing.T) {
	c, srv, _, _ := newACLTestClient(t)
	ctx := context.Background()
	srv.set(func() {
		for i := 0; i < maxCachedTokens+10; i++ {
			srv.tokens[structs.GenerateUUID()] = &structs.ACLToken{Type: "management"}
		}
	})
	srv.mu.Lock()
	secrets := make([]string, 0, len(srv.tokens))
	for s := range srv.tokens {
		secrets = append(secrets, s)
	}
	srv.mu.Unlock()
	for _, s := range secrets {
		_, _ = c.ResolveToken(ctx, s)
	}
	c.acl.mu.Lock()
	n := len(c.acl.tokens)
	c.acl.mu.Unlock()
	if n > maxCachedTokens {
		t.Fatalf("cached tokens = %d; want at most %d", n, maxCachedTokens)
	}
}

func TestClientACL_Disabled(t *testing.T) {
	c, srv, _, allocID := newACLTestClient(t)
	c.cfg.ACLEnabled = false
	ctx := context.Background()
	if err := c.authorizeNode(ctx, structs.MethodClientGCAll, &structs.NodeSpecificRequest{}); err != nil {
		t.Fatalf("ACLs off: %v", err)
	}
	if err := c.authorizeAlloc(ctx, structs.MethodFsLogs, &structs.FsLogsRequest{}, allocID); err != nil {
		t.Fatalf("ACLs off: %v", err)
	}
	if n := srv.count(structs.MethodACLResolveToken); n != 0 {
		t.Fatalf("ACLs off resolved %d tokens; want none", n)
	}
}
