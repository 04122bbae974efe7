package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/structs"
)

// TestNodeForward_GoClient drives a node-only agent's HTTP API with the
// official Go client, ACLs on: the servers' endpoints answer through the
// node as they answer on the server, with the caller's token.
func TestNodeForward_GoClient(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withACL(time.Second))
	nodeID := node.Client().NodeID()
	secret := bootstrap(t, srv)
	mgmt := apiWithToken(t, node, secret)

	leader, err := mgmt.Status().Leader()
	if err != nil || leader != srv.RPCAddr() {
		t.Fatalf("Status().Leader() = %q, %v; want %q", leader, err, srv.RPCAddr())
	}
	self, _, err := mgmt.ACLTokens().Self(nil)
	if err != nil || self.SecretID != secret || self.Type != "management" {
		t.Fatalf("ACLTokens().Self() = %+v, %v; want the bootstrap token", self, err)
	}

	// nomad node status -self: the node's own ID from /v1/agent/self,
	// answered by the node, then the node from the servers.
	info, err := mgmt.Agent().Self()
	if err != nil || info.Stats["client"]["node_id"] != nodeID {
		t.Fatalf("Agent().Self() client stats = %v, %v; want node_id %s", info.Stats["client"], err, nodeID)
	}
	n, meta, err := mgmt.Nodes().Info(nodeID, nil)
	if err != nil || n.ID != nodeID || meta.LastIndex == 0 || !meta.KnownLeader {
		t.Fatalf("Nodes().Info = %+v, %+v, %v; want node %s with an index and a known leader", n, meta, err, nodeID)
	}
	nodes, _, err := mgmt.Nodes().List(nil)
	if err != nil || len(nodes) != 1 || nodes[0].ID != nodeID {
		t.Fatalf("Nodes().List = %v, %v; want [%s]", nodes, err, nodeID)
	}

	job := &nomad.Job{ID: ptr("fwd"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1ms"})}}}}
	reg, _, err := mgmt.Jobs().Register(job, nil)
	if err != nil || reg.EvalID == "" {
		t.Fatalf("Jobs().Register = %+v, %v; want an evaluation", reg, err)
	}
	jobs, _, err := mgmt.Jobs().List(nil)
	if err != nil || len(jobs) != 1 || jobs[0].ID != "fwd" {
		t.Fatalf("Jobs().List = %v, %v; want [fwd]", jobs, err)
	}
	got, _, err := mgmt.Jobs().Info("fwd", nil)
	if err != nil || *got.ID != "fwd" || len(got.TaskGroups) != 1 {
		t.Fatalf("Jobs().Info = %+v, %v; want job fwd", got, err)
	}
	evals, _, err := mgmt.Evaluations().List(nil)
	if err != nil || !hasEval(evals, reg.EvalID) {
		t.Fatalf("Evaluations().List = %v, %v; want evaluation %s", evals, err, reg.EvalID)
	}
	waitFor(t, 20*time.Second, "the job's allocation through the node", func() (bool, error) {
		allocs, _, err := mgmt.Allocations().List(nil)
		return err == nil && len(allocs) == 1 && allocs[0].JobID == "fwd" && allocs[0].NodeID == nodeID, err
	})

	members, err := mgmt.Agent().Members()
	if err != nil || len(members.Members) != 1 || members.ServerName == "" {
		t.Fatalf("Agent().Members() = %+v, %v; want the one server", members, err)
	}
	raft, err := mgmt.Operator().RaftGetConfiguration(nil)
	if err != nil || len(raft.Servers) != 1 || !raft.Servers[0].Leader {
		t.Fatalf("Operator().RaftGetConfiguration() = %+v, %v; want one leader", raft, err)
	}

	// Refusals keep the server's status and text.
	nodeRead := apiWithToken(t, node, makeToken(t, apiWithToken(t, srv, secret), "node-read", `node { policy = "read" }`))
	if _, _, err := nodeRead.Jobs().List(nil); err == nil || !isDenied(err) || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("Jobs().List with a node-read token: %v; want 403 Permission denied", err)
	}
	if _, _, err := nodeRead.Nodes().List(nil); err != nil {
		t.Fatalf("Nodes().List with a node-read token: %v", err)
	}
	bogus := apiWithToken(t, node, structs.GenerateUUID())
	if _, _, err := bogus.Nodes().List(nil); err == nil || !isDenied(err) {
		t.Fatalf("Nodes().List with an unknown token: %v; want 403", err)
	}
}

// hasEval reports whether evals holds the evaluation id.
func hasEval(evals []*nomad.Evaluation, id string) bool {
	for _, e := range evals {
		if e.ID == id {
			return true
		}
	}
	return false
}

// TestNodeForward_SameAnswers sends the same requests to a server and to a
// node-only agent and wants the same status, body and query headers:
// successes, refusals and bad input, with the token in either header.
func TestNodeForward_SameAnswers(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withACL(time.Second))
	secret := bootstrap(t, srv)

	big := bytes.Repeat([]byte("x"), structs.MaxHTTPForwardBody+1)
	cases := []struct {
		name, method, path string
		body               []byte
		hdr                []string
		wantCode           int
	}{
		{"nodes", "GET", "/v1/nodes", nil, []string{"X-Nomad-Token", secret}, 200},
		{"nodes bearer", "GET", "/v1/nodes?prefix=" + node.Client().NodeID()[:4], nil, []string{"Authorization", "Bearer " + secret}, 200},
		{"nodes pretty", "GET", "/v1/nodes?pretty=1", nil, []string{"X-Nomad-Token", secret}, 200},
		{"no token", "GET", "/v1/jobs", nil, nil, 403},
		{"unknown token", "GET", "/v1/jobs", nil, []string{"X-Nomad-Token", structs.GenerateUUID()}, 403},
		{"unknown node", "GET", "/v1/node/" + structs.GenerateUUID(), nil, []string{"X-Nomad-Token", secret}, 404},
		{"unknown job", "GET", "/v1/job/nope", nil, []string{"X-Nomad-Token", secret}, 404},
		{"bad job body", "PUT", "/v1/jobs", []byte("{"), []string{"X-Nomad-Token", secret}, 400},
		{"empty job body", "PUT", "/v1/jobs", nil, []string{"X-Nomad-Token", secret}, 400},
		{"body over the limit", "PUT", "/v1/jobs", big, []string{"X-Nomad-Token", secret}, 413},
		{"token self", "GET", "/v1/acl/token/self", nil, []string{"X-Nomad-Token", secret}, 200},
		{"unknown path", "GET", "/v1/nope", nil, []string{"X-Nomad-Token", secret}, 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var answers [2]struct {
				code int
				body string
				hdr  http.Header
			}
			for i, a := range []*testAgent{srv, node} {
				var body *bytes.Reader
				if tc.body != nil {
					body = bytes.NewReader(tc.body)
				} else {
					body = bytes.NewReader(nil)
				}
				answers[i].code, answers[i].body, answers[i].hdr = do(t, tc.method, a.URL()+tc.path, body, tc.hdr...)
			}
			s, n := answers[0], answers[1]
			if s.code != tc.wantCode {
				t.Fatalf("server answered %d %q; want %d", s.code, s.body, tc.wantCode)
			}
			if n.code != s.code || n.body != s.body {
				t.Fatalf("node answered %d %q; the server %d %q", n.code, n.body, s.code, s.body)
			}
			for _, h := range []string{"Content-Type", "X-Nomad-Index", "X-Nomad-KnownLeader", "X-Nomad-LastContact"} {
				if n.hdr.Get(h) != s.hdr.Get(h) {
					t.Errorf("header %s: node %q, server %q", h, n.hdr.Get(h), s.hdr.Get(h))
				}
			}
		})
	}
}

// TestNodeForward_BlockingJobs: the servers' own blocking query on the
// jobs table, asked of a node, wakes on a job registered at the server.
func TestNodeForward_BlockingJobs(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	newJob := func(id string) *nomad.Job {
		return &nomad.Job{ID: ptr(id), Type: ptr("batch"), Datacenters: []string{"dc1"},
			TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1ms"})}}}}
	}
	if _, _, err := srv.API(t).Jobs().Register(newJob("first"), nil); err != nil {
		t.Fatal(err)
	}
	_, meta, err := node.API(t).Jobs().List(nil)
	if err != nil || meta.LastIndex == 0 {
		t.Fatalf("jobs index %+v, %v; want one past the first job", meta, err)
	}
	// Each read blocks until the jobs table moves past the index it
	// names (the first job's own updates may come first), so every answer
	// has a higher index, until one holds the job registered meanwhile.
	api := node.API(t)
	done := make(chan error, 1)
	go func() {
		idx := meta.LastIndex
		for {
			jobs, m, err := api.Jobs().List(&nomad.QueryOptions{WaitIndex: idx, WaitTime: time.Minute})
			switch {
			case err != nil:
				done <- err
				return
			case m.LastIndex <= idx || !m.KnownLeader:
				done <- fmt.Errorf("blocking read at index %d answered %+v without a change", idx, m)
				return
			}
			for _, j := range jobs {
				if j.ID == "woken" {
					done <- nil
					return
				}
			}
			idx = m.LastIndex
		}
	}()
	if _, _, err := srv.API(t).Jobs().Register(newJob("woken"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking query through the node did not wake on the write")
	}
}

// TestNodeForward_Blocking holds a blocking query through a node: index
// and wait reach the server's handler, which blocks until a write wakes
// it, the query headers come back to
// the Go client's QueryMeta, and a caller that goes away ends the handler
// on the server.
func TestNodeForward_Blocking(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))

	// The server replays forwarded requests against one blocking
	// endpoint whose table a test write bumps.
	w := &blockingTable{index: 7, changed: make(chan struct{})}
	srv.Server().SetHTTPAPI(http.HandlerFunc(w.serve))
	api := node.API(t)

	done := make(chan error, 1)
	var meta *nomad.QueryMeta
	go func() {
		var out map[string]uint64
		var err error
		meta, err = api.Raw().Query("/v1/test/blocking", &out, &nomad.QueryOptions{WaitIndex: 7, WaitTime: time.Minute})
		if err == nil && out["Index"] != 8 {
			err = errors.New("answer for index " + strconv.FormatUint(out["Index"], 10))
		}
		done <- err
	}()
	waitFor(t, 10*time.Second, "the query blocked on the server", func() (bool, error) { return w.waiting() == 1, nil })
	if wait := w.lastWait(); wait != "60000ms" && wait != "1m0s" {
		t.Fatalf("wait reached the server as %q; want one minute", wait)
	}
	select {
	case err := <-done:
		t.Fatalf("blocking query answered before the write: %v", err)
	default:
	}
	w.write()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking query not woken by the write")
	}
	if meta.LastIndex != 8 || !meta.KnownLeader || meta.LastContact != 0 {
		t.Fatalf("QueryMeta = %+v; want index 8 and a known leader", meta)
	}

	// A caller that goes away mid-query ends the handler on the server.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		var out map[string]uint64
		_, err := api.Raw().Query("/v1/test/blocking", &out, (&nomad.QueryOptions{WaitIndex: 8, WaitTime: time.Minute}).WithContext(ctx))
		done <- err
	}()
	waitFor(t, 10*time.Second, "the second query blocked on the server", func() (bool, error) { return w.waiting() == 1, nil })
	cancel()
	<-done
	waitFor(t, 10*time.Second, "the server's handler ended with its caller", func() (bool, error) { return w.waiting() == 0, nil })
}

// blockingTable is a fake table with a blocking query: serve answers
// once the table's index passes the query's index, or at wait.
type blockingTable struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
	blocked int
	wait    string
}

func (b *blockingTable) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/test/blocking" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	min, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil {
		http.Error(w, "bad wait", http.StatusBadRequest)
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	b.mu.Lock()
	b.wait = q.Get("wait")
	for b.index <= min {
		ch := b.changed
		b.blocked++
		b.mu.Unlock()
		expired := false
		select {
		case <-ch:
		case <-timer.C:
			expired = true
		case <-r.Context().Done():
			expired = true
		}
		b.mu.Lock()
		b.blocked--
		if expired {
			break
		}
	}
	idx := b.index
	b.mu.Unlock()
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("X-Nomad-KnownLeader", "true")
	w.Header().Set("X-Nomad-LastContact", "0")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"Index":` + strconv.FormatUint(idx, 10) + `}`))
}

func (b *blockingTable) write() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index++
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *blockingTable) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blocked
}

func (b *blockingTable) lastWait() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wait
}

// TestNodeForward_LargeAnswer: an answer longer than one RPC reply comes
// whole to a GET through a node (streamed), and a write whose answer would
// not fit is refused, not repeated.
func TestNodeForward_LargeAnswer(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	large := strings.Repeat("0123456789abcdef", (3<<20)/16) // 3 MiB, past one reply
	var mu sync.Mutex
	puts := 0
	srv.Server().SetHTTPAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			mu.Lock()
			puts++
			mu.Unlock()
		}
		w.Header().Set("X-Nomad-Index", "9")
		_, _ = io.WriteString(w, large)
	}))
	code, body, hdr := do(t, "GET", node.URL()+"/v1/test/large", nil)
	if code != http.StatusOK || body != large || hdr.Get("X-Nomad-Index") != "9" {
		t.Fatalf("GET = %d, %d bytes, index %q; want 200, %d bytes, index 9", code, len(body), hdr.Get("X-Nomad-Index"), len(large))
	}
	code, body, _ = do(t, "PUT", node.URL()+"/v1/test/large", strings.NewReader("{}"))
	if code != http.StatusInternalServerError || body != structs.ErrForwardTooLarge.Message {
		t.Fatalf("PUT = %d %q; want 500 %q", code, truncateString(body, 100), structs.ErrForwardTooLarge.Message)
	}
	mu.Lock()
	defer mu.Unlock()
	if puts != 1 {
		t.Fatalf("the write ran %d times on the server; want once", puts)
	}
}

// truncateString shortens s for a failure message.
func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// TestNodeForward_NoServers: a node cut off from its servers answers their
// endpoints at once with Nomad's 500 "no servers", and still answers its
// own.
func TestNodeForward_NoServers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there: the node never connects
	cfg := baseConfig(t, "lonely")
	cfg.Client.Enabled = true
	cfg.Client.Servers = []string{dead}
	node := startAgent(t, cfg)

	for _, path := range []string{"/v1/jobs", "/v1/nodes", "/v1/status/leader", "/v1/agent/members", "/v1/acl/token/self"} {
		code, body, _ := do(t, "GET", node.URL()+path, nil)
		if code != http.StatusInternalServerError || body != "no servers" {
			t.Errorf("GET %s = %d %q; want 500 %q", path, code, body, "no servers")
		}
	}
	if code, body, _ := do(t, "GET", node.URL()+"/v1/agent/self", nil); code != http.StatusOK || !strings.Contains(body, `"node_id"`) {
		t.Errorf("GET /v1/agent/self = %d %q; want the node's own answer", code, body)
	}
	if _, err := node.API(t).Status().Leader(); err == nil || !strings.Contains(err.Error(), "no servers") {
		t.Errorf("Status().Leader() with no servers: %v; want no servers", err)
	}
}

// BenchmarkNodeForward measures a server endpoint asked of the server
// and, beside it in the same run, of a node-only agent that forwards it
// (HTTP.Forward over the node's session): GET /v1/nodes with one node,
// and GET /v1/job/:id.
func BenchmarkNodeForward(b *testing.B) {
	srv := startServer(b, "server1")
	node := startNode(b, "node1", withServers(srv.RPCAddr()), withMockDriver())
	job := &nomad.Job{ID: ptr("bench"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mockTask("t", nil)}}}}
	c, err := nomad.NewClient(&nomad.Config{Address: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := c.Jobs().Register(job, nil); err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for _, path := range []string{"/v1/nodes", "/v1/job/bench"} {
		for _, target := range []struct {
			name string
			a    *testAgent
		}{{"server", srv}, {"via-node", node}} {
			b.Run(strings.TrimPrefix(path, "/v1/")+"/"+target.name, func(b *testing.B) {
				url := target.a.URL() + path
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := hc.Get(url)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							b.Errorf("GET %s: %d", url, resp.StatusCode)
							return
						}
					}
				})
			})
		}
	}
}
