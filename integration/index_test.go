package integration

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// unplaceableJob is a job no node fits: registering it writes the jobs and
// evals tables and no allocation.
func unplaceableJob(id string) *nomad.Job {
	return &nomad.Job{ID: ptr(id), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1),
			Constraints: []*nomad.Constraint{{LTarget: "${meta.rack}", RTarget: "absent", Operand: "="}},
			Tasks:       []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}
}

// TestBlockingQuery_WakesOnItsTable: a blocking query through the official
// Go client returns, with the new index, when the table it reads is
// written, long before its wait time.
func TestBlockingQuery_WakesOnItsTable(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)
	// An allocation first: a blocking query needs an index above 0.
	if _, _, err := api.Jobs().Register(&nomad.Job{ID: ptr("first"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1),
			Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}, nil); err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "first", 1, "running")

	cases := []struct {
		name string
		// read is the blocking query; it returns the index and whether
		// the change is visible in what it read.
		read  func(q *nomad.QueryOptions) (uint64, bool, error)
		write func() error
	}{
		{"allocations, on a placement",
			func(q *nomad.QueryOptions) (uint64, bool, error) {
				l, qm, err := api.Allocations().List(q)
				if err != nil {
					return 0, false, err
				}
				return qm.LastIndex, len(l) == 2, nil
			},
			func() error {
				job := &nomad.Job{ID: ptr("placed"), Type: ptr("service"), Datacenters: []string{"dc1"},
					TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1),
						Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}
				_, _, err := api.Jobs().Register(job, nil)
				return err
			}},
		{"nodes, on a node's registration",
			func(q *nomad.QueryOptions) (uint64, bool, error) {
				l, qm, err := api.Nodes().List(q)
				if err != nil {
					return 0, false, err
				}
				return qm.LastIndex, len(l) == 2, nil
			},
			func() error {
				startNode(t, "node2", withServers(srv.RPCAddr()))
				return nil
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, seen, err := tc.read(nil)
			if err != nil || seen {
				t.Fatalf("before: index %d, seen %v, %v", before, seen, err)
			}
			type result struct {
				idx  uint64
				seen bool
				err  error
			}
			done := make(chan result, 1)
			go func() {
				idx, seen, err := tc.read(&nomad.QueryOptions{WaitIndex: before, WaitTime: time.Minute})
				done <- result{idx, seen, err}
			}()
			if err := tc.write(); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				if r.err != nil || r.idx <= before || !r.seen {
					t.Fatalf("woke with index %d (before %d), change seen %v, %v", r.idx, before, r.seen, r.err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the blocking query did not wake on a write to its table")
			}
		})
	}
}

// TestBlockingQuery_IgnoresOtherTables: a blocking query answers with its
// own table's index: writes to other tables, before it or while it waits,
// neither end it early nor move its index (the global index did both).
func TestBlockingQuery_IgnoresOtherTables(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)

	// Something in each table first, so no index is 0.
	if _, _, err := api.Jobs().Register(&nomad.Job{ID: ptr("first"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1),
			Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}, nil); err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "first", 1, "running")

	n := 0
	cases := []struct {
		name  string
		read  func(q *nomad.QueryOptions) (uint64, error)
		other func() error
	}{
		{"allocations, not on a node's registration or an unplaced job",
			func(q *nomad.QueryOptions) (uint64, error) {
				_, qm, err := api.Allocations().List(q)
				if err != nil {
					return 0, err
				}
				return qm.LastIndex, nil
			},
			func() error {
				n++
				startNode(t, "node-other-"+strconv.Itoa(n), withServers(srv.RPCAddr()))
				_, _, err := api.Jobs().Register(unplaceableJob("nowhere-"+strconv.Itoa(n)), nil)
				return err
			}},
		{"nodes, not on jobs or evaluations",
			func(q *nomad.QueryOptions) (uint64, error) {
				_, qm, err := api.Nodes().List(q)
				if err != nil {
					return 0, err
				}
				return qm.LastIndex, nil
			},
			func() error {
				n++
				_, _, err := api.Jobs().Register(unplaceableJob("elsewhere-"+strconv.Itoa(n)), nil)
				return err
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			own, err := tc.read(nil)
			if err != nil || own == 0 {
				t.Fatalf("index %d, %v", own, err)
			}
			if err := tc.other(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the other write applied", func() (bool, error) {
				_, qm, err := api.Jobs().List(nil)
				return err == nil && qm.LastIndex > own, err
			})
			if idx, err := tc.read(nil); err != nil || idx != own {
				t.Fatalf("index %d after writes to other tables, %v; want its own %d", idx, err, own)
			}
			type result struct {
				idx uint64
				err error
			}
			done := make(chan result, 1)
			go func() {
				idx, err := tc.read(&nomad.QueryOptions{WaitIndex: own, WaitTime: 300 * time.Millisecond})
				done <- result{idx, err}
			}()
			if err := tc.other(); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil || r.idx != own {
				t.Fatalf("blocking query answered index %d, %v; want its own %d at the end of its wait", r.idx, r.err, own)
			}
		})
	}
}

// TestBlockingQuery_BadParameters: ?index= and ?wait= that do not parse are
// 400s with Nomad's texts, on every endpoint that blocks.
func TestBlockingQuery_BadParameters(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	paths := []string{"/v1/jobs", "/v1/job/x", "/v1/job/x/summary", "/v1/job/x/allocations", "/v1/allocations",
		"/v1/evaluations", "/v1/nodes", "/v1/node/" + node.Client().NodeID(), "/v1/node/" + node.Client().NodeID() + "/allocations"}
	params := []struct{ query, text string }{
		{"index=abc", "Invalid index"},
		{"index=-1", "Invalid index"},
		{"index=1&wait=soon", "Invalid wait time"},
		{"wait=-5s", "Invalid wait time"},
	}
	for _, p := range paths {
		for _, q := range params {
			t.Run(p+"?"+q.query, func(t *testing.T) {
				code, body, _ := do(t, http.MethodGet, srv.URL()+p+"?"+q.query, nil)
				if code != http.StatusBadRequest || body != q.text {
					t.Fatalf("%d %q; want 400 %q", code, body, q.text)
				}
			})
		}
	}
	code, body, _ := do(t, http.MethodGet, srv.URL()+"/v1/nodes?resources=maybe", nil)
	if code != http.StatusBadRequest {
		t.Fatalf("resources=maybe: %d %q; want 400", code, body)
	}
	mustContain(t, body, `"resources"`)
}

// TestBlockingQuery_EndsOnShutdown: a blocking query in flight does not
// hold the agent's shutdown for its wait time.
func TestBlockingQuery_EndsOnShutdown(t *testing.T) {
	srv := startServer(t, "server1")
	api := srv.API(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := api.Jobs().List(&nomad.QueryOptions{WaitIndex: 1 << 40, WaitTime: 5 * time.Minute})
		done <- err
	}()
	waitFor(t, 10*time.Second, "the query to block", func() (bool, error) {
		code, body, err := tryGet(srv.URL() + "/v1/agent/self")
		return code == http.StatusOK && len(body) > 0, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("shutdown waited out its deadline: the blocking query held it")
	}
	<-done
}

// TestBlockingQuery_Followers: a follower answers reads with the same
// per-table index as the leader, a known leader and its last contact, and
// its blocking queries wake on writes made through the leader; once the
// cluster has no leader, reads say so.
func TestBlockingQuery_Followers(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leaderIndex()
	leader := c.servers[lead].API(t)
	var followers []*testAgent
	for i, s := range c.servers {
		if i != lead {
			followers = append(followers, s)
		}
	}
	if _, _, err := leader.Jobs().Register(unplaceableJob("a"), nil); err != nil {
		t.Fatal(err)
	}
	_, lqm, err := leader.Jobs().List(nil)
	if err != nil || lqm.LastIndex == 0 || !lqm.KnownLeader || lqm.LastContact != 0 {
		t.Fatalf("leader: %+v, %v", lqm, err)
	}
	for _, f := range followers {
		api := f.API(t)
		waitFor(t, 10*time.Second, f.cfg.Name+" at the leader's jobs index", func() (bool, error) {
			_, qm, err := api.Jobs().List(nil)
			return err == nil && qm.LastIndex == lqm.LastIndex && qm.KnownLeader, err
		})
	}

	api := followers[0].API(t)
	done := make(chan error, 1)
	go func() {
		l, qm, err := api.Jobs().List(&nomad.QueryOptions{WaitIndex: lqm.LastIndex, WaitTime: time.Minute})
		if err == nil && (qm.LastIndex <= lqm.LastIndex || len(l) != 2) {
			err = fmt.Errorf("woke at %d with %d jobs", qm.LastIndex, len(l))
		}
		done <- err
	}()
	if _, _, err := leader.Jobs().Register(unplaceableJob("b"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the follower's blocking query did not wake on the leader's write")
	}

	for i := range c.servers {
		if c.servers[i] != followers[1] {
			c.stop(i)
		}
	}
	last := followers[1].API(t)
	waitFor(t, 10*time.Second, "no known leader on the last server", func() (bool, error) {
		_, qm, err := last.Jobs().List(nil)
		return err == nil && !qm.KnownLeader, err
	})
}
