package integration

import (
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// TestEvaluations: a registration's EvalID can be followed as `nomad job
// run` does: the evaluation is complete, lists the allocations it placed,
// and names the groups it could not place.
func TestEvaluations(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)

	job := &nomad.Job{ID: ptr("ev"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{
			{Name: ptr("ok"), Count: ptr(2), Tasks: []*nomad.Task{shellTask("t", "while :; do sleep 1; done")}},
			{Name: ptr("nowhere"), Count: ptr(1),
				Constraints: []*nomad.Constraint{{LTarget: "${meta.rack}", RTarget: "absent", Operand: "="}},
				Tasks:       []*nomad.Task{shellTask("t", "while :; do sleep 1; done")}},
		}}
	resp, _, err := api.Jobs().Register(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev, _, err := api.Evaluations().Info(resp.EvalID, nil)
	if err != nil {
		t.Fatalf("Evaluations().Info: %v", err)
	}
	if ev.Status != "complete" || ev.JobID != "ev" || ev.TriggeredBy != "job-register" {
		t.Fatalf("eval = %+v; want complete job-register of ev", ev)
	}
	if m := ev.FailedTGAllocs["nowhere"]; m == nil || ev.QueuedAllocations["nowhere"] != 1 {
		t.Fatalf("FailedTGAllocs = %+v queued %v; want group nowhere unplaced", ev.FailedTGAllocs, ev.QueuedAllocations)
	}
	allocs, _, err := api.Evaluations().Allocations(resp.EvalID, nil)
	if err != nil || len(allocs) != 2 {
		t.Fatalf("Evaluations().Allocations = %d, %v; want the 2 placed", len(allocs), err)
	}
	// What could not be placed waits in a blocked eval, listed first.
	list, _, err := api.Jobs().Evaluations("ev", nil)
	if err != nil || len(list) != 2 || list[0].Status != "blocked" || list[0].ID != ev.BlockedEval || list[1].ID != resp.EvalID {
		t.Fatalf("Jobs().Evaluations = %d, %v; want the blocked eval, then the registration's", len(list), err)
	}
	sum, _, err := api.Jobs().Summary("ev", nil)
	if err != nil || sum.Summary["ok"].Running+sum.Summary["ok"].Starting != 2 || sum.Summary["nowhere"].Queued != 1 {
		t.Fatalf("Jobs().Summary = %+v, %v; want 2 ok allocations and 1 queued", sum, err)
	}
	if d, _, err := api.Jobs().LatestDeployment("ev", nil); err != nil || d != nil {
		t.Fatalf("Jobs().LatestDeployment = %+v, %v; want none", d, err)
	}
	dresp, _, err := api.Jobs().Deregister("ev", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _, err := api.Evaluations().Info(dresp, nil); err != nil || ev.TriggeredBy != "job-deregister" {
		t.Fatalf("deregister eval = %+v, %v", ev, err)
	}
	if _, _, err := api.Evaluations().Info("2b6a7ae6-4c7a-4f1e-9f0a-123456789abc", nil); err == nil {
		t.Fatal("unknown eval answered; want 404")
	}
}
