package server

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"testing"

	"tether/structs"
)

// TestScalingEvents_StateAndSnapshot applies scaling events through the
// FSM: newest first, at most MaxScalingEventsPerGroup per group, each
// stamped with its log index; a snapshot restore keeps them (Meta and
// EvalID included) and deleting the job removes them.
func TestScalingEvents_StateAndSnapshot(t *testing.T) {
	f := newTestFSM(t)
	if r := applyCmd(t, f, 10, msgUpsertJob, &upsertJobCmd{Job: testJob("web")}); r.Err != nil {
		t.Fatal(r.Err)
	}
	evalID := structs.GenerateUUID()
	n := structs.MaxScalingEventsPerGroup + 5
	for i := range n {
		ev := &structs.ScalingEvent{Count: ptrTo(int64(i)), PreviousCount: int64(i), Message: fmt.Sprint("m", i),
			Meta: map[string]any{"i": "x", "nested": map[string]any{"k": "v"}}, EvalID: &evalID, Time: int64(1000 + i)}
		r := applyCmd(t, f, uint64(20+i), msgUpsertScalingEvent|msgIgnoreUnknown,
			&upsertScalingEventCmd{Namespace: "default", JobID: "web", Group: "g", Event: ev})
		if r.Err != nil {
			t.Fatalf("event %d: %v", i, r.Err)
		}
	}
	applyCmd(t, f, 100, msgUpsertScalingEvent|msgIgnoreUnknown, &upsertScalingEventCmd{Namespace: "default", JobID: "web",
		Group: "other", Event: &structs.ScalingEvent{Error: true, Message: "bad"}})

	check := func(what string, st *StateStore) {
		t.Helper()
		evs, err := st.ScalingEvents(nil, "default", "web")
		if err != nil {
			t.Fatal(err)
		}
		g := evs["g"]
		if len(g) != structs.MaxScalingEventsPerGroup || len(evs["other"]) != 1 || !evs["other"][0].Error {
			t.Fatalf("%s: got %d events of g, %+v of other; want %d and one error", what, len(g), evs["other"], structs.MaxScalingEventsPerGroup)
		}
		for k, ev := range g {
			i := n - 1 - k // newest first
			want := fmt.Sprint("m", i)
			if ev.Message != want || *ev.Count != int64(i) || ev.CreateIndex != uint64(20+i) || *ev.EvalID != evalID ||
				!reflect.DeepEqual(ev.Meta, map[string]any{"i": "x", "nested": map[string]any{"k": "v"}}) {
				t.Fatalf("%s: event %d = %+v; want message %s at index %d", what, k, ev, want, 20+i)
			}
		}
		if idx := st.TableIndex(nil, TableScalingEvents); idx != 100 {
			t.Fatalf("%s: table index %d; want 100", what, idx)
		}
	}
	check("applied", f.store)

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatalf("persist: %v", err)
	}
	g := newTestFSM(t)
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatalf("restore: %v", err)
	}
	check("restored", g.store)

	if r := applyCmd(t, g, 101, msgDeleteJob, &deleteJobCmd{Namespace: "default", JobID: "web"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if evs, _ := g.store.ScalingEvents(nil, "default", "web"); evs != nil {
		t.Fatalf("events after the job's purge: %+v", evs)
	}
	if idx := g.store.TableIndex(nil, TableScalingEvents); idx != 101 {
		t.Fatalf("table index after the purge %d; want 101", idx)
	}
}

// TestFillScalingPolicies checks that a registration fills each policy's
// target and keeps its ID across versions, without touching the policy
// it was given (it may be the stored job's).
func TestFillScalingPolicies(t *testing.T) {
	old := testJob("web")
	old.TaskGroups[0].Scaling = &structs.ScalingPolicy{ID: "keep", Min: 1, Max: 3}
	shared := &structs.ScalingPolicy{Min: 1, Max: 5}
	job := testJob("web")
	job.TaskGroups[0].Scaling = shared
	job.TaskGroups = append(job.TaskGroups, &structs.TaskGroup{Name: "new", Scaling: &structs.ScalingPolicy{Max: 1}})
	fillScalingPolicies(job, old)
	p := job.TaskGroups[0].Scaling
	if p.ID != "keep" || !reflect.DeepEqual(p.Target, map[string]string{"Namespace": "default", "Job": "web", "Group": "g"}) || p.Max != 5 {
		t.Fatalf("policy of g = %+v", p)
	}
	if shared.ID != "" || shared.Target != nil {
		t.Fatalf("the given policy was changed: %+v", shared)
	}
	if q := job.TaskGroups[1].Scaling; q.ID == "" || q.ID == "keep" || q.Target["Group"] != "new" {
		t.Fatalf("policy of new = %+v", q)
	}
}

func ptrTo[T any](v T) *T { return &v }
