package integration

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
)

func withRawExec() agentOpt {
	return func(c *agent.Config) {
		c.Plugins = map[string]*agent.PluginConfig{"raw_exec": {Name: "raw_exec", Config: map[string]any{"enabled": true}}}
	}
}

func ptr[T any](v T) *T { return &v }

// shellTask returns a raw_exec task running script under /bin/sh.
func shellTask(name, script string) *nomad.Task {
	return &nomad.Task{
		Name:   name,
		Driver: "raw_exec",
		Config: map[string]any{"command": "/bin/sh", "args": []string{"-c", script}},
		Resources: &nomad.Resources{
			CPU:      ptr(100),
			MemoryMB: ptr(64),
		},
		LogConfig: &nomad.LogConfig{MaxFiles: ptr(2), MaxFileSizeMB: ptr(1)},
	}
}

func waitAllocsStatus(t *testing.T, api *nomad.Client, jobID string, n int, status string) []*nomad.AllocationListStub {
	t.Helper()
	var out []*nomad.AllocationListStub
	waitFor(t, 30*time.Second, "allocations "+status, func() (bool, error) {
		allocs, _, err := api.Jobs().Allocations(jobID, false, nil)
		if err != nil {
			return false, err
		}
		out = out[:0]
		for _, a := range allocs {
			if a.ClientStatus == status {
				out = append(out, a)
			}
		}
		return len(out) == n, nil
	})
	return out
}

// TestAllocations_Lifecycle registers a job through the official Go client,
// runs its tasks on a node, reads allocation stats, refuses GC of a running
// allocation, stops the job and garbage-collects.
func TestAllocations_Lifecycle(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)

	job := &nomad.Job{
		ID:          ptr("web"),
		Name:        ptr("web"),
		Type:        ptr("service"),
		Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{
			Name:  ptr("g"),
			Count: ptr(2),
			Tasks: []*nomad.Task{
				shellTask("loop", `i=0; while :; do echo "line $i $NOMAD_ALLOC_INDEX"; i=$((i+1)); sleep 0.02; done`),
				shellTask("mem", `x=$(head -c 20000000 /dev/zero | tr '\0' a); echo held >&2; while :; do sleep 1; done`),
			},
		}},
	}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatalf("Jobs().Register: %v", err)
	}
	running := waitAllocsStatus(t, api, "web", 2, "running")

	info, _, err := api.Allocations().Info(running[0].ID, nil)
	if err != nil {
		t.Fatalf("Allocations().Info: %v", err)
	}
	if info.Job == nil || info.Job.Version == nil || info.NodeID != node.Client().NodeID() ||
		info.TaskResources["loop"] == nil || info.TaskResources["loop"].CPU == nil || *info.TaskResources["loop"].MemoryMB != 64 {
		t.Fatalf("Allocations().Info = job %+v node %s taskresources %+v", info.Job, info.NodeID, info.TaskResources)
	}
	if tg := info.Job.LookupTaskGroup("g"); tg == nil || *tg.Name != "g" || len(tg.Tasks) != 2 {
		t.Fatalf("embedded job lacks its task group: %+v", info.Job.TaskGroups)
	}
	if st := info.TaskStates["loop"]; st == nil || st.State != "running" || st.StartedAt.IsZero() || len(st.Events) == 0 {
		t.Fatalf("TaskStates[loop] = %+v", st)
	}

	// Stats: measured over the task's process tree.
	waitFor(t, 15*time.Second, "alloc stats with memory", func() (bool, error) {
		u, err := api.Allocations().Stats(info, nil)
		if err != nil {
			return false, err
		}
		mem := u.Tasks["mem"]
		if mem == nil || mem.ResourceUsage == nil || mem.ResourceUsage.MemoryStats == nil {
			return false, nil
		}
		return mem.ResourceUsage.MemoryStats.RSS > 15<<20 && u.ResourceUsage.MemoryStats.RSS >= mem.ResourceUsage.MemoryStats.RSS, nil
	})

	// Logs land in Nomad's layout.
	allocDir := filepath.Join(node.cfg.DataDir, "alloc", info.ID)
	waitFor(t, 10*time.Second, "stdout log file", func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(allocDir, "alloc", "logs", "loop.stdout.0"))
		return err == nil && strings.Contains(string(b), "line 0"), err
	})
	for _, d := range []string{"alloc/data", "alloc/tmp", "loop/local", "loop/secrets", "loop/tmp", "mem/local"} {
		if fi, err := os.Stat(filepath.Join(allocDir, d)); err != nil || !fi.IsDir() {
			t.Errorf("alloc dir lacks %s: %v", d, err)
		}
	}

	// GC of a running allocation is refused.
	if err := api.Allocations().GC(info, nil); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("GC of running alloc = %v; want a 409", err)
	}

	// Stop the job: tasks are killed, allocations complete.
	if _, _, err := api.Jobs().Deregister("web", false, nil); err != nil {
		t.Fatalf("Jobs().Deregister: %v", err)
	}
	waitAllocsStatus(t, api, "web", 2, "complete")
	if err := api.Allocations().GC(info, nil); err != nil {
		t.Fatalf("Allocations().GC: %v", err)
	}
	if _, err := os.Stat(allocDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("alloc dir still there after GC: %v", err)
	}
	if _, _, err := api.Allocations().Info(info.ID, nil); err != nil {
		t.Fatalf("server lost the allocation record after GC: %v", err)
	}
	if err := api.Nodes().GC(node.Client().NodeID(), nil); err != nil {
		t.Fatalf("Nodes().GC: %v", err)
	}
	if _, err := os.Stat(filepath.Join(node.cfg.DataDir, "alloc", running[1].ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second alloc dir still there after Nodes().GC: %v", err)
	}
}

// TestAllocations_BatchAndFailure: a batch task that exits 0 completes; a
// command that does not exist fails the task with an event saying why.
func TestAllocations_BatchAndFailure(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)

	batch := &nomad.Job{ID: ptr("once"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{shellTask("t", "echo done")}}}}
	if _, _, err := api.Jobs().Register(batch, nil); err != nil {
		t.Fatalf("register batch: %v", err)
	}
	waitAllocsStatus(t, api, "once", 1, "complete")

	bad := &nomad.Job{ID: ptr("bad"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"),
			RestartPolicy: &nomad.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")},
			Tasks:         []*nomad.Task{{Name: "t", Driver: "raw_exec", Config: map[string]any{"command": "/nonexistent/tether-nope"}}}}}}
	if _, _, err := api.Jobs().Register(bad, nil); err != nil {
		t.Fatalf("register bad: %v", err)
	}
	failed := waitAllocsStatus(t, api, "bad", 1, "failed")
	a, _, err := api.Allocations().Info(failed[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := a.TaskStates["t"]
	if st == nil || !st.Failed {
		t.Fatalf("task state = %+v; want failed", st)
	}
	found := false
	for _, ev := range st.Events {
		if ev.Type == "Driver Failure" && strings.Contains(ev.DisplayMessage, "tether-nope") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no driver failure event naming the command in %+v", st.Events)
	}
}

// TestJobs_Placement checks constraints, distinct_hosts and visible
// placement failures that resolve when a node appears.
func TestJobs_Placement(t *testing.T) {
	srv := startServer(t, "server1")
	n1 := startNode(t, "alpha", withServers(srv.RPCAddr()), withRawExec(), withMeta(map[string]string{"rack": "r1"}))
	n2 := startNode(t, "beta", withServers(srv.RPCAddr()), withRawExec(), withMeta(map[string]string{"rack": "r2"}))
	api := srv.API(t)

	cases := []struct {
		name       string
		constraint *nomad.Constraint
		count      int
		wantNodes  []string
	}{
		{"unique.name", &nomad.Constraint{LTarget: "${node.unique.name}", RTarget: "beta", Operand: "="}, 2, []string{n2.Client().NodeID()}},
		{"unique.id", &nomad.Constraint{LTarget: "${node.unique.id}", RTarget: n1.Client().NodeID(), Operand: "="}, 1, []string{n1.Client().NodeID()}},
		{"meta not equal", &nomad.Constraint{LTarget: "${meta.rack}", RTarget: "r1", Operand: "!="}, 1, []string{n2.Client().NodeID()}},
		{"meta regexp", &nomad.Constraint{LTarget: "${meta.rack}", RTarget: "^r[1]$", Operand: "regexp"}, 1, []string{n1.Client().NodeID()}},
		{"datacenter", &nomad.Constraint{LTarget: "${node.datacenter}", RTarget: "dc1", Operand: "="}, 2, []string{n1.Client().NodeID(), n2.Client().NodeID()}},
		{"distinct_hosts", &nomad.Constraint{Operand: "distinct_hosts", RTarget: "true"}, 2, []string{n1.Client().NodeID(), n2.Client().NodeID()}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := "place" + string(rune('a'+i))
			job := &nomad.Job{ID: ptr(id), Type: ptr("service"), Datacenters: []string{"dc1"},
				TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(tc.count), Constraints: []*nomad.Constraint{tc.constraint},
					Tasks: []*nomad.Task{shellTask("t", "while :; do sleep 1; done")}}}}
			if _, _, err := api.Jobs().Register(job, nil); err != nil {
				t.Fatalf("register: %v", err)
			}
			waitFor(t, 10*time.Second, "placement", func() (bool, error) {
				allocs, _, err := api.Jobs().Allocations(id, false, nil)
				if err != nil || len(allocs) != tc.count {
					return false, err
				}
				seen := map[string]bool{}
				for _, a := range allocs {
					seen[a.NodeID] = true
				}
				for _, want := range tc.wantNodes {
					if !seen[want] {
						return false, nil
					}
				}
				return len(seen) == len(tc.wantNodes), nil
			})
			if _, _, err := api.Jobs().Deregister(id, true, nil); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Unplaceable work is visible and placed when a node appears.
	job := &nomad.Job{ID: ptr("later"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1),
			Constraints: []*nomad.Constraint{{LTarget: "${meta.rack}", RTarget: "r9", Operand: "="}},
			Tasks:       []*nomad.Task{shellTask("t", "while :; do sleep 1; done")}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	j, _, err := api.Jobs().Info("later", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *j.Status != "pending" || !strings.Contains(*j.StatusDescription, "could not be placed") || !strings.Contains(*j.StatusDescription, "meta.rack") {
		t.Fatalf("job status = %q %q; want pending with the reason", *j.Status, *j.StatusDescription)
	}
	n3 := startNode(t, "gamma", withServers(srv.RPCAddr()), withRawExec(), withMeta(map[string]string{"rack": "r9"}))
	waitFor(t, 15*time.Second, "placement on the new node", func() (bool, error) {
		allocs, _, err := api.Jobs().Allocations("later", false, nil)
		return err == nil && len(allocs) == 1 && allocs[0].NodeID == n3.Client().NodeID(), err
	})
}

// TestJobs_BadInput: malformed jobs are a 400 naming the field; Nomad's
// `job run -output` JSON is accepted as is.
func TestJobs_BadInput(t *testing.T) {
	srv := startServer(t, "server1")
	task := `{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}`
	cases := []struct {
		name, body, want string
	}{
		{"no groups", `{"Job":{"ID":"x","TaskGroups":[]}}`, "Job.TaskGroups"},
		{"negative count", `{"Job":{"ID":"x","TaskGroups":[{"Name":"g","Count":-1,"Tasks":[` + task + `]}]}}`, "Job.TaskGroups[0].Count"},
		{"unknown job field", `{"Job":{"ID":"x","Bogus":1,"TaskGroups":[{"Name":"g","Tasks":[` + task + `]}]}}`, `unknown field "Bogus"`},
		{"unknown task field", `{"Job":{"ID":"x","TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"},"Nope":true}]}]}}`, `Job.TaskGroups[0].Tasks[0]: unknown field "Nope"`},
		{"no driver", `{"Job":{"ID":"x","TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Config":{"image":"redis"}}]}]}}`, "Job.TaskGroups[0].Tasks[0].Driver: missing task driver"},
		{"missing id", `{"Job":{"TaskGroups":[{"Name":"g","Tasks":[` + task + `]}]}}`, "Job.ID"},
		{"path in task name", `{"Job":{"ID":"x","TaskGroups":[{"Name":"g","Tasks":[{"Name":"../etc","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`, "task name"},
		{"not json", `{"Job":`, "failed to parse job"},
		{"no job", `{}`, "Job must be specified"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := do(t, "PUT", srv.URL()+"/v1/jobs", strings.NewReader(tc.body))
			if code != 400 {
				t.Fatalf("status = %d (%q); want 400", code, body)
			}
			mustContain(t, body, tc.want)
		})
	}

	peer, err := os.ReadFile("testdata/peer-job.json")
	if err != nil {
		t.Fatal(err)
	}
	code, body, _ := do(t, "POST", srv.URL()+"/v1/jobs", strings.NewReader(string(peer)))
	if code != 200 || !strings.Contains(body, "EvalID") {
		t.Fatalf("peer-job.json = %d %q; want 200", code, body)
	}
	code, body, _ = do(t, "GET", srv.URL()+"/v1/job/clientapi-bench", nil)
	if code != 200 || !strings.Contains(body, `"Status":"pending"`) || !strings.Contains(body, "no nodes are registered") {
		t.Fatalf("peer job = %d %q; want pending, unplaced with a reason", code, body)
	}
	if code, body, _ = do(t, "DELETE", srv.URL()+"/v1/job/clientapi-bench?purge=true", nil); code != 200 {
		t.Fatalf("purge = %d %q", code, body)
	}
	if code, _, _ = do(t, "GET", srv.URL()+"/v1/job/clientapi-bench", nil); code != 404 {
		t.Fatalf("purged job = %d; want 404", code)
	}
	for _, tc := range []struct{ url, want string }{
		{"/v1/allocation/abc", "UUID must be 36 characters"},
		{"/v1/client/allocation/abc/stats", "UUID must be 36 characters"},
		{"/v1/client/allocation/2b6a7ae6-4c7a-4f1e-9f0a-123456789abc/stats", `Unknown allocation "2b6a7ae6-4c7a-4f1e-9f0a-123456789abc"`},
		{"/v1/client/allocation/2b6a7ae6-4c7a-4f1e-9f0a-123456789abc/bogus", "resource not found"},
	} {
		code, body, _ := do(t, "GET", srv.URL()+tc.url, nil)
		if code < 400 || code > 499 {
			t.Fatalf("GET %s = %d %q; want 4xx", tc.url, code, body)
		}
		mustContain(t, body, tc.want)
	}
}
