package server

import (
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"

	"tether/structs"
)

// BenchmarkPlan places a job of 1,000 allocations on a fleet of nodes, as
// "log job: registration (placement)" of make bench-fleet does: the
// planning only, without the raft write.
func BenchmarkPlan(b *testing.B) {
	for _, bc := range []struct {
		nodes, count int
		distinct     bool
	}{
		{1000, 1000, false},
		{10000, 1000, false},
		{10000, 1000, true},
	} {
		b.Run(fmt.Sprintf("nodes=%d/allocs=%d/distinct=%v", bc.nodes, bc.count, bc.distinct), func(b *testing.B) {
			store, err := NewStateStore()
			if err != nil {
				b.Fatal(err)
			}
			s := &Server{store: store}
			f := &fsm{store: s.store, logger: hclog.NewNullLogger()}
			idx := uint64(1)
			for i := range bc.nodes {
				n := testNode(structs.GenerateUUID())
				n.Name = fmt.Sprintf("n-%05d", i)
				n.Drivers = map[string]*structs.DriverInfo{"mock_driver": {Detected: true, Healthy: true}}
				applyCmd(b, f, idx, msgUpsertNode, &upsertNodeCmd{Node: n})
				idx++
			}
			job := testJob("logs")
			job.Datacenters = []string{"dc*"}
			tg := job.TaskGroups[0]
			tg.Count = bc.count
			tg.Tasks[0].Driver = "mock_driver"
			if bc.distinct {
				tg.Constraints = []*structs.Constraint{{Operand: structs.ConstraintDistinctHosts}}
			}
			applyCmd(b, f, idx, msgUpsertJob, &upsertJobCmd{Job: job})
			b.ResetTimer()
			for range b.N {
				updates, failures, err := s.plan(job)
				if err != nil || len(failures) != 0 || len(updates) != bc.count {
					b.Fatalf("plan: %d updates, failures %v, %v", len(updates), failures, err)
				}
			}
		})
	}
}

// TestPlan_Placement: where plan puts allocations, and why it does not.
func TestPlan_Placement(t *testing.T) {
	driver := map[string]*structs.DriverInfo{"mock_driver": {Detected: true, Healthy: true}}
	node := func(name, dc string) *structs.Node {
		n := testNode(structs.GenerateUUID())
		n.Name, n.Datacenter, n.Drivers = name, dc, driver
		return n
	}
	distinct := []*structs.Constraint{{Operand: structs.ConstraintDistinctHosts}}
	cases := []struct {
		name       string
		nodes      []*structs.Node
		count      int
		groups     int // task groups of count allocations each
		jobLevel   []*structs.Constraint
		groupLevel []*structs.Constraint
		wantPlaced int
		perNodeMax int    // no node gets more than this
		wantReason string // of the first failure, "" for none
	}{
		{name: "spread evenly", nodes: []*structs.Node{node("a", "dc1"), node("b", "dc1"), node("c", "dc1")},
			count: 9, groups: 1, wantPlaced: 9, perNodeMax: 3},
		{name: "group distinct_hosts", nodes: []*structs.Node{node("a", "dc1"), node("b", "dc1"), node("c", "dc1")},
			count: 5, groups: 1, groupLevel: distinct, wantPlaced: 3, perNodeMax: 1,
			wantReason: "3 node(s) excluded: " + distinctHostsReason},
		{name: "group distinct_hosts, two groups share nodes", nodes: []*structs.Node{node("a", "dc1"), node("b", "dc1")},
			count: 2, groups: 2, groupLevel: distinct, wantPlaced: 4, perNodeMax: 2},
		{name: "job distinct_hosts across groups", nodes: []*structs.Node{node("a", "dc1"), node("b", "dc1"), node("c", "dc1")},
			count: 2, groups: 2, jobLevel: distinct, wantPlaced: 3, perNodeMax: 1,
			wantReason: "3 node(s) excluded: " + distinctHostsReason},
		{name: "distinct_hosts false is no constraint", nodes: []*structs.Node{node("a", "dc1")},
			count: 3, groups: 1, groupLevel: []*structs.Constraint{{Operand: structs.ConstraintDistinctHosts, RTarget: "false"}},
			wantPlaced: 3, perNodeMax: 3},
		{name: "datacenter and distinct reasons together", nodes: []*structs.Node{node("a", "dc1"), node("b", "dc2")},
			count: 2, groups: 1, groupLevel: distinct, wantPlaced: 1, perNodeMax: 1,
			wantReason: "1 node(s) excluded: datacenter \"dc2\" not in [dc1]; 1 node(s) excluded: " + distinctHostsReason},
		{name: "no nodes", count: 1, groups: 1, wantReason: "no nodes are registered"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store, err := NewStateStore()
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{store: store}
			f := &fsm{store: store, logger: hclog.NewNullLogger()}
			idx := uint64(1)
			for _, n := range tc.nodes {
				applyCmd(t, f, idx, msgUpsertNode, &upsertNodeCmd{Node: n})
				idx++
			}
			job := testJob("web")
			job.Constraints = tc.jobLevel
			base := job.TaskGroups[0]
			job.TaskGroups = nil
			for g := range tc.groups {
				tg := *base
				tg.Name = fmt.Sprintf("g%d", g)
				tg.Count = tc.count
				tg.Tasks = []*structs.Task{{Name: "t", Driver: "mock_driver"}}
				tg.Constraints = tc.groupLevel
				job.TaskGroups = append(job.TaskGroups, &tg)
			}
			applyCmd(t, f, idx, msgUpsertJob, &upsertJobCmd{Job: job})
			updates, failures, err := s.plan(job)
			if err != nil {
				t.Fatal(err)
			}
			perNode := map[string]int{}
			for _, a := range updates {
				perNode[a.NodeID]++
			}
			if len(updates) != tc.wantPlaced {
				t.Errorf("placed %d; want %d", len(updates), tc.wantPlaced)
			}
			for id, c := range perNode {
				if c > tc.perNodeMax {
					t.Errorf("node %s got %d; want at most %d", id, c, tc.perNodeMax)
				}
			}
			got := ""
			if len(failures) > 0 {
				got = failures[0].Reason
			}
			if got != tc.wantReason {
				t.Errorf("reason %q; want %q", got, tc.wantReason)
			}
		})
	}
}

// TestPlan_CountChange: changing a group's count adds or stops
// allocations and leaves the others running (updated in place to the new
// job version); changing what the group runs replaces them all.
func TestPlan_CountChange(t *testing.T) {
	store, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{store: store}
	f := &fsm{store: store, logger: hclog.NewNullLogger()}
	idx := uint64(1)
	apply := func(typ msgType, c any) {
		t.Helper()
		if r := applyCmd(t, f, idx, typ, c); r.Err != nil {
			t.Fatal(r.Err)
		}
		idx++
	}
	for _, name := range []string{"a", "b"} {
		n := testNode(structs.GenerateUUID())
		n.Name, n.Drivers = name, map[string]*structs.DriverInfo{"mock_driver": {Detected: true, Healthy: true}}
		apply(msgUpsertNode, &upsertNodeCmd{Node: n})
	}
	mkJob := func(version uint64, count int, runFor string) *structs.Job {
		j := testJob("web")
		j.Version = version
		j.TaskGroups[0].Count = count
		j.TaskGroups[0].Tasks = []*structs.Task{{Name: "t", Driver: "mock_driver", Config: map[string]any{"run_for": runFor}}}
		return j
	}

	// step plans job, applies the plan and counts what it did.
	step := func(job *structs.Job) (placed, inPlace, stopped int) {
		t.Helper()
		apply(msgUpsertJob, &upsertJobCmd{Job: job})
		stored, _ := store.Job(job.Namespace, job.ID)
		before := map[string]bool{}
		cur, _ := store.AllocsByJob(job.Namespace, job.ID)
		for _, a := range cur {
			if !a.TerminalStatus() {
				before[a.ID] = true
			}
		}
		updates, _, err := s.plan(stored)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range updates {
			switch {
			case !before[a.ID]:
				placed++
			case a.DesiredStatus == structs.AllocDesiredStatusStop:
				stopped++
			default:
				inPlace++
			}
		}
		apply(msgUpsertAllocs, &upsertAllocsCmd{Allocs: updates})
		return placed, inPlace, stopped
	}
	cases := []struct {
		name                     string
		count                    int
		runFor                   string
		placed, inPlace, stopped int
	}{
		{"first placement", 2, "1h", 2, 0, 0},
		{"count up", 4, "1h", 2, 2, 0},
		{"count down", 1, "1h", 0, 1, 3},
		{"new task config", 1, "2h", 1, 0, 1},
	}
	for i, tc := range cases {
		placed, inPlace, stopped := step(mkJob(uint64(i), tc.count, tc.runFor))
		if placed != tc.placed || inPlace != tc.inPlace || stopped != tc.stopped {
			t.Fatalf("%s: placed %d, updated in place %d, stopped %d; want %d, %d, %d",
				tc.name, placed, inPlace, stopped, tc.placed, tc.inPlace, tc.stopped)
		}
	}
}
