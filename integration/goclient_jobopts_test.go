package integration

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestGoClientParity_RegisterOptions holds, through the official Go
// client, what its TestJobs_Register_{EvalPriority,PreserveCounts,
// PreserveResources} and TestJobs_Deregister_EvalPriority ask: the
// evaluation takes the priority asked, a registration keeps the counts
// or resources of the job it replaces when told to, and the job's scale
// status shows the counts.
func TestGoClientParity_RegisterOptions(t *testing.T) {
	srv := startServer(t, "server1")
	api := srv.API(t)
	task := func(cpu, mem int) *nomad.Task {
		t := mockTask("task", map[string]any{"run_for": "1h"})
		t.Resources = &nomad.Resources{CPU: ptr(cpu), MemoryMB: ptr(mem)}
		return t
	}
	group := func(name string, count *int, tk *nomad.Task) *nomad.TaskGroup {
		return &nomad.TaskGroup{Name: ptr(name), Count: count, Tasks: []*nomad.Task{tk}}
	}
	job := &nomad.Job{ID: ptr("opts"), Type: ptr("batch"), Datacenters: []string{"dc1"}, Priority: ptr(50),
		TaskGroups: []*nomad.TaskGroup{group("group1", ptr(1), task(100, 256)), group("group2", ptr(2), task(100, 256))}}

	cases := []struct {
		name     string
		edit     func(j *nomad.Job)
		opts     *nomad.RegisterOptions
		priority int            // of the registration's evaluation
		counts   map[string]int // the scale status's Desired per group
		cpu, mem int            // group1's task's resources after it
	}{
		{"first, with an eval priority", func(*nomad.Job) {}, &nomad.RegisterOptions{EvalPriority: 99},
			99, map[string]int{"group1": 1, "group2": 2}, 100, 256},
		{"no options: the job's priority", func(*nomad.Job) {}, nil,
			50, map[string]int{"group1": 1, "group2": 2}, 100, 256},
		{"preserve counts", func(j *nomad.Job) {
			j.TaskGroups[0].Count = nil
			j.TaskGroups[1].Count = ptr(0)
			j.TaskGroups = append(j.TaskGroups, group("group3", ptr(3), task(100, 256)))
		}, &nomad.RegisterOptions{PreserveCounts: true}, 50, map[string]int{"group1": 1, "group2": 2, "group3": 3}, 100, 256},
		{"counts not preserved", func(j *nomad.Job) {
			j.TaskGroups[0].Count = ptr(4)
			j.TaskGroups[1].Count = ptr(0)
		}, nil, 50, map[string]int{"group1": 4, "group2": 0, "group3": 3}, 100, 256},
		{"preserve resources", func(j *nomad.Job) {
			j.TaskGroups[0].Tasks[0].Resources = &nomad.Resources{CPU: ptr(200), MemoryMB: ptr(512)}
		}, &nomad.RegisterOptions{PreserveResources: true}, 50, map[string]int{"group1": 4, "group2": 0, "group3": 3}, 100, 256},
		{"resources not preserved", func(j *nomad.Job) {
			j.TaskGroups[0].Tasks[0].Resources = &nomad.Resources{CPU: ptr(200), MemoryMB: ptr(512)}
		}, nil, 50, map[string]int{"group1": 4, "group2": 0, "group3": 3}, 200, 512},
	}
	for _, tc := range cases {
		tc.edit(job)
		reg, _, err := api.Jobs().RegisterOpts(job, tc.opts, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ev, _, err := api.Evaluations().Info(reg.EvalID, nil)
		if err != nil || ev.Priority != tc.priority {
			t.Fatalf("%s: evaluation %+v, %v; want priority %d", tc.name, ev, err, tc.priority)
		}
		st, _, err := api.Jobs().ScaleStatus("opts", nil)
		if err != nil {
			t.Fatalf("%s: ScaleStatus: %v", tc.name, err)
		}
		for g, want := range tc.counts {
			if got := st.TaskGroups[g].Desired; got != want {
				t.Errorf("%s: %s desired %d; want %d", tc.name, g, got, want)
			}
		}
		if len(st.TaskGroups) != len(tc.counts) || st.JobID != "opts" || st.JobStopped {
			t.Errorf("%s: scale status %+v", tc.name, st)
		}
		got, _, err := api.Jobs().Info("opts", nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := got.TaskGroups[0].Tasks[0].Resources; *r.CPU != tc.cpu || *r.MemoryMB != tc.mem {
			t.Errorf("%s: group1's resources %d/%d; want %d/%d", tc.name, *r.CPU, *r.MemoryMB, tc.cpu, tc.mem)
		}
	}

	// EnforceIndex: only against the job's current modify index (0: only
	// a new job), with the error prefix Nomad's CLI matches.
	cur, _, err := api.Jobs().Info("opts", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id    string
		index uint64
		err   string // "" for a registration
	}{
		{"opts", 0, "Enforcing job modify index 0: job already exists"},
		{"opts", *cur.JobModifyIndex + 7, "job exists with conflicting job modify index"},
		{"fresh", 10, "Enforcing job modify index 10: job does not exist"},
		{"opts", *cur.JobModifyIndex, ""},
		{"fresh", 0, ""},
	} {
		j := *job
		j.ID = ptr(tc.id)
		_, _, err := api.Jobs().EnforceRegister(&j, tc.index, nil)
		if tc.err == "" && err != nil {
			t.Fatalf("EnforceRegister(%s, %d): %v", tc.id, tc.index, err)
		}
		if tc.err != "" {
			wantStatus(t, fmt.Sprintf("EnforceRegister(%s, %d)", tc.id, tc.index), err, 400, tc.err)
		}
	}

	// Deregistration with an eval priority; a bad one is refused.
	_, _, err = api.Jobs().RegisterOpts(job, &nomad.RegisterOptions{EvalPriority: 101}, nil)
	wantStatus(t, "EvalPriority 101", err, 400, "eval priority must be between 1 and 100")
	_, _, err = api.Jobs().DeregisterOpts("opts", &nomad.DeregisterOptions{EvalPriority: -1}, nil)
	wantStatus(t, "eval_priority -1", err, 400, "eval priority")
	evalID, _, err := api.Jobs().DeregisterOpts("opts", &nomad.DeregisterOptions{EvalPriority: 97}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _, err := api.Evaluations().Info(evalID, nil); err != nil || ev.Priority != 97 {
		t.Fatalf("deregistration's evaluation %+v, %v; want priority 97", ev, err)
	}
	if st, _, err := api.Jobs().ScaleStatus("opts", nil); err != nil || !st.JobStopped {
		t.Fatalf("scale status after the stop = %+v, %v; want JobStopped", st, err)
	}
	_, _, err = api.Jobs().ScaleStatus("nope", nil)
	wantStatus(t, "ScaleStatus of no job", err, 404, "job not found")

	// A driver no node runs is taken, as Nomad takes it, and not placed.
	startNode(t, "node1", withServers(srv.RPCAddr()))
	waitFor(t, 10*time.Second, "the node ready", func() (bool, error) {
		nodes, _, err := api.Nodes().List(nil)
		return err == nil && len(nodes) == 1 && nodes[0].Status == "ready", err
	})
	other := &nomad.Job{ID: ptr("exec"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{group("g", ptr(1), &nomad.Task{Name: "t", Driver: "exec",
			Config: map[string]any{"command": "/bin/sleep"}})}}
	reg, _, err := api.Jobs().Register(other, nil)
	if err != nil {
		t.Fatalf("register an exec job: %v", err)
	}
	ev, _, err := api.Evaluations().Info(reg.EvalID, nil)
	var why map[string]int
	if err == nil && ev.FailedTGAllocs["g"] != nil {
		why = ev.FailedTGAllocs["g"].ConstraintFiltered
	}
	if len(why) != 1 || !strings.Contains(slices.Collect(maps.Keys(why))[0], `missing driver "exec"`) {
		t.Fatalf("evaluation of the exec job: g not placed for %v, %v; want the missing driver", why, err)
	}
}
