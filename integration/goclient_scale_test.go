package integration

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// scaleJob is a service job of one mock_driver group "g" with count and a
// scaling policy of [0, 4].
func scaleJob(id string, count int) *nomad.Job {
	return &nomad.Job{ID: ptr(id), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(count),
			Scaling: &nomad.ScalingPolicy{Min: ptr(int64(0)), Max: ptr(int64(4)), Policy: map[string]any{"cooldown": "1m"}},
			Tasks:   []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}
}

// TestGoClientScale_UpDownAndEvents scales a group up and down through
// the official Go client with its allocations following, then records an
// informative event and an error event (no evaluation, job unchanged),
// and reads every event back newest first.
func TestGoClientScale_UpDownAndEvents(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)
	jobs := api.Jobs()

	reg, _, err := jobs.Register(scaleJob("scaled", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "scaled", 1, "running")

	// The Scaling block is kept on the job, completed as Nomad does.
	info, _, err := jobs.Info("scaled", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := info.TaskGroups[0].Scaling
	if p == nil || *p.Min != 0 || *p.Max != 4 || !*p.Enabled || p.Type != "horizontal" || p.ID == "" ||
		!reflect.DeepEqual(p.Target, map[string]string{"Namespace": "default", "Job": "scaled", "Group": "g"}) ||
		p.Policy["cooldown"] != "1m" {
		t.Fatalf("scaling policy read back = %+v", p)
	}

	lastIndex := reg.JobModifyIndex
	steps := []struct {
		count        int
		msg          string
		meta         map[string]any
		wantPrevious int64
	}{
		{3, "more", map[string]any{"by": "test", "n": float64(3)}, 1},
		{1, "fewer", nil, 3},
	}
	evalIDs := map[int]string{}
	for _, st := range steps {
		resp, wm, err := jobs.Scale("scaled", "g", ptr(st.count), st.msg, false, st.meta, nil)
		if err != nil {
			t.Fatalf("scale to %d: %v", st.count, err)
		}
		if resp.EvalID == "" || resp.EvalCreateIndex == 0 || resp.JobModifyIndex <= lastIndex || wm.LastIndex < resp.JobModifyIndex {
			t.Fatalf("scale to %d: %+v (last index %d), previous JobModifyIndex %d", st.count, resp, wm.LastIndex, lastIndex)
		}
		lastIndex = resp.JobModifyIndex
		evalIDs[st.count] = resp.EvalID
		ev, _, err := api.Evaluations().Info(resp.EvalID, nil)
		if err != nil || ev.TriggeredBy != "job-scaling" || ev.JobModifyIndex != resp.JobModifyIndex {
			t.Fatalf("scale to %d: evaluation %+v, %v", st.count, ev, err)
		}
		waitAllocsStatus(t, api, "scaled", st.count, "running")
		info, _, err := jobs.Info("scaled", nil)
		if err != nil || *info.TaskGroups[0].Count != st.count || *info.JobModifyIndex != resp.JobModifyIndex {
			t.Fatalf("job after scaling to %d: %+v, %v", st.count, info, err)
		}
	}
	version := func() uint64 {
		t.Helper()
		info, _, err := jobs.Info("scaled", nil)
		if err != nil {
			t.Fatal(err)
		}
		return *info.Version
	}
	before := version()

	for _, isErr := range []bool{false, true} {
		resp, _, err := jobs.Scale("scaled", "g", nil, "note", isErr, map[string]any{"err": isErr}, nil)
		if err != nil {
			t.Fatalf("event (error %v): %v", isErr, err)
		}
		if resp.EvalID != "" || resp.EvalCreateIndex != 0 || resp.JobModifyIndex != lastIndex {
			t.Fatalf("event (error %v): %+v; want no evaluation and JobModifyIndex %d", isErr, resp, lastIndex)
		}
	}
	if v := version(); v != before {
		t.Fatalf("job version %d after count-less events; want %d", v, before)
	}

	status, qm, err := jobs.ScaleStatus("scaled", nil)
	if err != nil {
		t.Fatal(err)
	}
	g := status.TaskGroups["g"]
	if g.Desired != 1 || g.Running != 1 || len(g.Events) != 4 || qm.LastIndex < g.Events[0].CreateIndex {
		t.Fatalf("scale status %+v (index %d)", g, qm.LastIndex)
	}
	type want struct {
		count    *int64
		previous int64
		msg      string
		isErr    bool
		evalID   string
		meta     map[string]any
	}
	wants := []want{
		{nil, 1, "note", true, "", map[string]any{"err": true}},
		{nil, 1, "note", false, "", map[string]any{"err": false}},
		{ptr(int64(1)), 3, "fewer", false, evalIDs[1], nil},
		{ptr(int64(3)), 1, "more", false, evalIDs[3], map[string]any{"by": "test", "n": float64(3)}},
	}
	for i, w := range wants {
		ev := g.Events[i]
		gotEval := ""
		if ev.EvalID != nil {
			gotEval = *ev.EvalID
		}
		if !reflect.DeepEqual(ev.Count, w.count) || ev.PreviousCount != w.previous || ev.Message != w.msg || ev.Error != w.isErr ||
			gotEval != w.evalID || (w.evalID == "" && ev.EvalID != nil) || !reflect.DeepEqual(ev.Meta, w.meta) ||
			ev.Time == 0 || ev.CreateIndex == 0 || (i > 0 && ev.CreateIndex >= g.Events[i-1].CreateIndex) {
			t.Errorf("event %d = %+v; want %+v", i, ev, w)
		}
	}

	// Registering the same spec again (its Scaling block unchanged, the
	// count where the scale left it) keeps the allocation in place.
	running := waitAllocsStatus(t, api, "scaled", 1, "running")
	if _, _, err := jobs.Register(scaleJob("scaled", 1), nil); err != nil {
		t.Fatal(err)
	}
	allocs, _, err := jobs.Allocations("scaled", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if a.DesiredStatus == "run" && a.ID != running[0].ID {
			t.Fatalf("re-registration placed %s; want %s kept", a.ID, running[0].ID)
		}
	}

	// Purging the job removes its events: a new job of the same ID has none.
	if _, _, err := jobs.Deregister("scaled", true, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := jobs.Register(scaleJob("scaled", 0), nil); err != nil {
		t.Fatal(err)
	}
	status, _, err = jobs.ScaleStatus("scaled", nil)
	if err != nil || len(status.TaskGroups["g"].Events) != 0 {
		t.Fatalf("scale status after purge and register = %+v, %v; want no events", status, err)
	}
}

// TestGoClientScale_BadInput sends every malformed scale through the
// official Go client and expects Nomad's status and text, and no event.
func TestGoClientScale_BadInput(t *testing.T) {
	srv := startServer(t, "server1")
	api := srv.API(t)
	jobs := api.Jobs()
	reg, _, err := jobs.Register(scaleJob("bad", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	req := func(count *int64, target map[string]string, isErr bool, jmi uint64) *nomad.ScalingRequest {
		return &nomad.ScalingRequest{Count: count, Target: target, Error: isErr, JobModifyIndex: jmi, Message: "m"}
	}
	g := map[string]string{"Job": "bad", "Group": "g"}
	cases := []struct {
		name  string
		job   string
		req   *nomad.ScalingRequest
		code  int
		text  string
		group string // for Scale, instead of req
	}{
		{"no job ID", "", nil, 400, "missing job ID", "g"},
		{"no group", "bad", req(ptr(int64(1)), map[string]string{"Job": "bad"}, false, 0), 400, "missing task group name for scaling action", ""},
		{"job in payload differs", "bad", req(ptr(int64(1)), map[string]string{"Job": "other", "Group": "g"}, false, 0), 400, "job ID in payload did not match URL", ""},
		{"namespace in payload differs", "bad", req(ptr(int64(1)), map[string]string{"Job": "bad", "Group": "g", "Namespace": "other"}, false, 0), 400, "namespace in payload did not match header", ""},
		{"negative count", "bad", req(ptr(int64(-1)), g, false, 0), 400, "scaling action count can't be negative", ""},
		{"error with count", "bad", req(ptr(int64(1)), g, true, 0), 400, "scaling action should not contain count if error is true", ""},
		{"no such job", "nope", req(ptr(int64(1)), map[string]string{"Job": "nope", "Group": "g"}, false, 0), 404, `job "nope" not found`, ""},
		{"no such group", "bad", req(ptr(int64(1)), map[string]string{"Job": "bad", "Group": "h"}, false, 0), 400, `task group "h" specified for scaling does not exist in job`, ""},
		{"above the policy's max", "bad", req(ptr(int64(5)), g, false, 0), 400, "group count was greater than scaling policy maximum: 5 > 4", ""},
		{"stale JobModifyIndex", "bad", req(ptr(int64(2)), g, false, reg.JobModifyIndex+1000), 400, "Enforcing job modify index", ""},
		{"count too large", "bad", req(ptr(int64(1)<<40), g, false, 0), 400, "new scaling count is too large", ""},
	}
	for _, tc := range cases {
		var err error
		if tc.req == nil {
			_, _, err = jobs.Scale(tc.job, tc.group, ptr(1), "m", false, nil, nil)
		} else {
			_, _, err = jobs.ScaleWithRequest(tc.job, tc.req, nil)
		}
		wantStatus(t, tc.name, err, tc.code, tc.text)
	}
	if code, body, _ := do(t, http.MethodPut, srv.URL()+"/v1/job/bad/scale", strings.NewReader(`{"Count":1,"Target":{"Group":"g"},"Bogus":1}`)); code != 400 || !strings.Contains(body, `unknown field "Bogus"`) {
		t.Errorf("unknown field: %d %q", code, body)
	}
	if code, _, _ := do(t, http.MethodDelete, srv.URL()+"/v1/job/bad/scale", nil); code != 405 {
		t.Errorf("DELETE: %d; want 405", code)
	}
	status, _, err := jobs.ScaleStatus("bad", nil)
	if err != nil || len(status.TaskGroups["g"].Events) != 0 || status.TaskGroups["g"].Desired != 1 {
		t.Fatalf("scale status after refused scales = %+v, %v; want count 1 and no events", status, err)
	}

	// Below a raised minimum, and with the current JobModifyIndex (which
	// passes).
	job := scaleJob("bad", 2)
	job.TaskGroups[0].Scaling.Min = ptr(int64(2))
	reg, _, err = jobs.Register(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = jobs.ScaleWithRequest("bad", req(ptr(int64(1)), g, false, 0), nil)
	wantStatus(t, "below the policy's min", err, 400, "group count was less than scaling policy minimum: 1 < 2")
	if _, _, err := jobs.ScaleWithRequest("bad", req(ptr(int64(3)), g, false, reg.JobModifyIndex), nil); err != nil {
		t.Fatalf("scale with the current JobModifyIndex: %v", err)
	}

	// A registration's Scaling block is checked as Nomad does.
	for _, tc := range []struct {
		name string
		edit func(p *nomad.ScalingPolicy)
		text string
	}{
		{"no max", func(p *nomad.ScalingPolicy) { p.Max = nil }, "maximum count must be specified and non-negative"},
		{"max below min", func(p *nomad.ScalingPolicy) { p.Min, p.Max = ptr(int64(3)), ptr(int64(2)) }, "maximum count must not be less than minimum count"},
		{"count above max", func(p *nomad.ScalingPolicy) { p.Max = ptr(int64(1)) }, "task group count must not be greater than maximum count"},
		{"count below min", func(p *nomad.ScalingPolicy) { p.Min = ptr(int64(3)) }, "task group count must not be less than minimum count"},
		{"bad type", func(p *nomad.ScalingPolicy) { p.Type = "vertical_cpu" }, "invalid type"},
	} {
		job := scaleJob("bad", 2)
		tc.edit(job.TaskGroups[0].Scaling)
		_, _, err := jobs.Register(job, nil)
		wantStatus(t, "register: "+tc.name, err, 400, tc.text)
	}
}

// TestGoClientScale_ACL holds Nomad's rule: scaling needs scale-job or
// submit-job on the namespace; read-job is not enough.
func TestGoClientScale_ACL(t *testing.T) {
	srv := startACLServer(t, "server1", 0)
	mgmt := apiWithToken(t, srv, bootstrap(t, srv))
	if _, _, err := mgmt.Jobs().Register(scaleJob("acl", 1), nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, rules string
		allowed     bool
	}{
		{"scale-only", `namespace "default" { capabilities = ["scale-job"] }`, true},
		{"submit-only", `namespace "default" { capabilities = ["submit-job"] }`, true},
		{"read-only", `namespace "default" { capabilities = ["read-job"] }`, false},
		{"other-namespace", `namespace "other" { capabilities = ["scale-job"] }`, false},
	}
	for i, tc := range cases {
		c := apiWithToken(t, srv, makeToken(t, mgmt, tc.name, tc.rules))
		_, _, err := c.Jobs().Scale("acl", "g", ptr(i%2+1), tc.name, false, nil, nil)
		if tc.allowed && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.allowed {
			wantStatus(t, tc.name, err, http.StatusForbidden, "Permission denied")
		}
	}
	status, _, err := mgmt.Jobs().ScaleStatus("acl", nil)
	if err != nil || len(status.TaskGroups["g"].Events) != 2 {
		t.Fatalf("scale status = %+v, %v; want the two allowed scales' events", status, err)
	}
}
