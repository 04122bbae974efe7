package integration

import (
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestGoClientParity_ListFilters: ?filter= (QueryOptions.Filter) on the
// lists that take it in Nomad, through the official client: jobs,
// allocations, evaluations (before paging) and nodes; a bad expression
// is a 400.
func TestGoClientParity_ListFilters(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)
	waitFor(t, 10*time.Second, "the node ready", func() (bool, error) {
		nodes, _, err := api.Nodes().List(nil)
		return err == nil && len(nodes) == 1 && nodes[0].Status == "ready", err
	})
	for _, j := range []struct{ id, typ string }{{"svc", "service"}, {"bat", "batch"}} {
		job := &nomad.Job{ID: ptr(j.id), Type: ptr(j.typ), Datacenters: []string{"dc1"},
			TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}
		if _, _, err := api.Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "two allocations", func() (bool, error) {
		allocs, _, err := api.Allocations().List(nil)
		return err == nil && len(allocs) == 2, err
	})
	q := func(f string) *nomad.QueryOptions { return &nomad.QueryOptions{Filter: f} }
	ids := func(n int, err error, get func(i int) string) []string {
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i := range n {
			out = append(out, get(i))
		}
		return out
	}
	cases := []struct {
		name string
		got  func() []string
		want []string
	}{
		{"jobs by type", func() []string {
			l, _, err := api.Jobs().List(q(`Type == "batch"`))
			return ids(len(l), err, func(i int) string { return l[i].ID })
		}, []string{"bat"}},
		{"allocations by job", func() []string {
			l, _, err := api.Allocations().List(q(`JobID == "svc"`))
			return ids(len(l), err, func(i int) string { return l[i].JobID })
		}, []string{"svc"}},
		{"evaluations, filtered then paged", func() []string {
			l, qm, err := api.Evaluations().List(&nomad.QueryOptions{Filter: `TriggeredBy == "job-register" and JobID == "bat"`, PerPage: 1})
			if err == nil && qm.NextToken != "" {
				t.Errorf("next token %q; want none (one evaluation matches)", qm.NextToken)
			}
			return ids(len(l), err, func(i int) string { return l[i].JobID })
		}, []string{"bat"}},
		{"nodes by status", func() []string {
			l, _, err := api.Nodes().List(q(`Status == "ready" and Name == "node1"`))
			return ids(len(l), err, func(i int) string { return l[i].Name })
		}, []string{"node1"}},
		{"nodes, none", func() []string {
			l, _, err := api.Nodes().List(q(`Status == "down"`))
			return ids(len(l), err, func(i int) string { return l[i].Name })
		}, nil},
	}
	for _, tc := range cases {
		if got := tc.got(); len(got) != len(tc.want) || len(got) > 0 && got[0] != tc.want[0] {
			t.Errorf("%s = %v; want %v", tc.name, got, tc.want)
		}
	}
	_, _, err := api.Jobs().List(q(`Type ==`))
	wantStatus(t, "a filter that does not parse", err, 400, "failed to read filter expression")
	_, _, err = api.Allocations().List(q(`NoSuchField == "x"`))
	wantStatus(t, "a filter on a field allocations lack", err, 400, "failed to apply filter expression")
}
