package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	"tether/structs"
)

// applyCmd encodes a command and applies it through the FSM at index idx,
// as raft would.
func applyCmd(t testing.TB, f *fsm, idx uint64, typ msgType, c any) fsmResponse {
	t.Helper()
	buf, err := encodeCommand(typ, c)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: buf}).(fsmResponse)
}

func newTestFSM(t *testing.T) *fsm {
	t.Helper()
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	return &fsm{store: st, logger: hclog.NewNullLogger()}
}

func testNode(id string) *structs.Node {
	return &structs.Node{ID: id, SecretID: structs.GenerateUUID(), Name: "n-" + id[:4], Datacenter: "dc1",
		Status: structs.NodeStatusReady, Attributes: map[string]string{"nomad.version": "1.8.0"},
		Meta: map[string]string{"rack": "r1"}}
}

func testJob(id string) *structs.Job {
	return &structs.Job{ID: id, Namespace: "default", Name: id, Type: structs.JobTypeService, Datacenters: []string{"dc1"},
		TaskGroups: []*structs.TaskGroup{{Name: "g", Count: 1, Tasks: []*structs.Task{{Name: "t", Driver: "raw_exec",
			Config: map[string]any{"command": "/bin/true", "args": []any{"-x"}}}}}}}
}

// TestFSM_IndexesComeFromTheLog checks that every write is stamped with
// its raft index, that no-op commands still advance the store's index,
// and that unknown commands marked ignorable are skipped without stalling
// it.
func TestFSM_IndexesComeFromTheLog(t *testing.T) {
	f := newTestFSM(t)
	n := testNode(structs.GenerateUUID())
	tests := []struct {
		name      string
		idx       uint64
		typ       msgType
		cmd       any
		wantErr   bool
		wantIndex uint64
	}{
		{"upsert node", 5, msgUpsertNode, &upsertNodeCmd{Node: n}, false, 5},
		{"status no-op", 7, msgUpdateNodeStatus, &nodeStatusCmd{NodeID: n.ID, Status: structs.NodeStatusReady}, false, 7},
		{"status change", 9, msgUpdateNodeStatus, &nodeStatusCmd{NodeID: n.ID, Status: structs.NodeStatusDown, Description: "x", At: 42}, false, 9},
		{"job", 12, msgUpsertJob, &upsertJobCmd{Job: testJob("web")}, false, 12},
		{"unknown, marked ignorable", 13, msgIgnoreUnknown | 72, &deleteJobCmd{}, false, 13},
		{"missing node", 14, msgUpsertNode, &upsertNodeCmd{}, true, 14},
	}
	for _, tc := range tests {
		resp := applyCmd(t, f, tc.idx, tc.typ, tc.cmd)
		if (resp.Err != nil) != tc.wantErr {
			t.Fatalf("%s: got error %v; want error %v", tc.name, resp.Err, tc.wantErr)
		}
		if got := f.store.LatestIndex(); got != tc.wantIndex {
			t.Fatalf("%s: got latest index %d; want %d", tc.name, got, tc.wantIndex)
		}
	}
	got, _ := f.store.Node(n.ID)
	if got.CreateIndex != 5 || got.ModifyIndex != 9 || got.Status != structs.NodeStatusDown || got.StatusUpdatedAt != 42 {
		t.Fatalf("got node create %d modify %d status %q at %d; want 5, 9, down, 42", got.CreateIndex, got.ModifyIndex, got.Status, got.StatusUpdatedAt)
	}
	if j, _ := f.store.Job("default", "web"); j == nil || j.CreateIndex != 12 || j.JobModifyIndex != 12 {
		t.Fatalf("got job %+v; want create index 12", j)
	}
}

// TestFSM_UnknownCommandStops: every command the FSM knows is applied
// (with or without the ignore flag); one it does not know stops it with a
// panic, unless its writer marked it ignorable.
func TestFSM_UnknownCommandStops(t *testing.T) {
	type tc struct {
		name      string
		typ       msgType
		wantPanic bool
	}
	tests := []tc{
		{"unknown", 100, true},
		{"unknown, top of the range", 0x7f, true},
		{"zero", 0, true},
		{"unknown, ignorable", msgIgnoreUnknown | 100, false},
		{"ignorable flag alone", msgIgnoreUnknown, false},
	}
	for typ := range commands {
		tests = append(tests,
			tc{fmt.Sprintf("known %d", typ), typ, false},
			tc{fmt.Sprintf("known %d with the ignore flag", typ), typ | msgIgnoreUnknown, false})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFSM(t)
			var recovered any
			func() {
				defer func() { recovered = recover() }()
				// An empty payload: known commands decode it and may
				// refuse it (missing node); that is an error, not a stop.
				applyCmd(t, f, 7, tt.typ, struct{}{})
			}()
			if !tt.wantPanic {
				if recovered != nil {
					t.Fatalf("Apply panicked: %v", recovered)
				}
				if got := f.store.LatestIndex(); got != 7 {
					t.Fatalf("latest index %d after the entry; want 7", got)
				}
				return
			}
			var uc *unknownCommandError
			if err, ok := recovered.(error); !ok || !errors.As(err, &uc) || uc.Type != tt.typ || uc.Index != 7 {
				t.Fatalf("Apply recovered %v; want an unknownCommandError for type %d at 7", recovered, tt.typ)
			}
			if got := f.store.LatestIndex(); got != 0 {
				t.Fatalf("latest index %d; want the unknown entry not applied", got)
			}
		})
	}
}

// TestFSM_SnapshotRestore fills every table through the FSM, snapshots,
// restores into a fresh store and compares everything, index included.
func TestFSM_SnapshotRestore(t *testing.T) {
	f := newTestFSM(t)
	n1, n2 := testNode(structs.GenerateUUID()), testNode(structs.GenerateUUID())
	job := testJob("web")
	alloc := &structs.Allocation{ID: structs.GenerateUUID(), Namespace: "default", JobID: "web", Job: testJob("web"),
		TaskGroup: "g", Name: "web.g[0]", NodeID: n1.ID, DesiredStatus: structs.AllocDesiredStatusRun,
		ClientStatus: structs.AllocClientStatusPending, TaskStates: map[string]*structs.TaskState{"t": {State: "pending"}}}
	gone := &structs.Allocation{ID: structs.GenerateUUID(), Namespace: "default", JobID: "web", NodeID: n2.ID}
	steps := []struct {
		typ msgType
		cmd any
	}{
		{msgUpsertNode, &upsertNodeCmd{Node: n1}},
		{msgUpsertNode, &upsertNodeCmd{Node: n2}},
		{msgUpsertJob, &upsertJobCmd{Job: job}},
		{msgUpsertJob, &upsertJobCmd{Job: testJob("old")}},
		{msgDeleteJob, &deleteJobCmd{Namespace: "default", JobID: "old"}},
		{msgUpsertAllocs, &upsertAllocsCmd{Allocs: []*structs.Allocation{alloc, gone}}},
		{msgDeleteAllocs, &deleteAllocsCmd{IDs: []string{gone.ID}}},
		{msgUpdateAllocsFromClient, &allocClientUpdateCmd{NodeID: n1.ID, At: 99, Allocs: []*structs.Allocation{{ID: alloc.ID,
			ClientStatus: structs.AllocClientStatusRunning, TaskStates: map[string]*structs.TaskState{"t": {State: "running"}}}}}},
		{msgSetJobStatus, &jobStatusCmd{Namespace: "default", JobID: "web", Status: structs.JobStatusRunning}},
		{msgUpdateJobStatus, &jobStatusCmd{Namespace: "default", JobID: "web", Status: structs.JobStatusPending, Description: "blocked"}},
		{msgUpdateNodeStatus, &nodeStatusCmd{NodeID: n2.ID, Status: structs.NodeStatusDown, At: 7}},
		{msgRotateRootKey | msgIgnoreUnknown, &rotateRootKeyCmd{Key: &structs.RootKey{KeyID: structs.GenerateUUID(), SigningKey: make([]byte, 32)}}},
		{msgRotateRootKey | msgIgnoreUnknown, &rotateRootKeyCmd{Key: &structs.RootKey{KeyID: structs.GenerateUUID(), SigningKey: make([]byte, 32)}}},
	}
	for i, st := range steps {
		if r := applyCmd(t, f, uint64(10+i), st.typ, st.cmd); r.Err != nil {
			t.Fatalf("step %d: %v", i, r.Err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot must not leak into it.
	applyCmd(t, f, 100, msgUpsertNode, &upsertNodeCmd{Node: testNode(structs.GenerateUUID())})
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatalf("persist: %v", err)
	}

	g := newTestFSM(t)
	applyCmd(t, g, 3, msgUpsertNode, &upsertNodeCmd{Node: testNode(structs.GenerateUUID())}) // replaced by the restore
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatalf("restore: %v", err)
	}
	last := uint64(10 + len(steps) - 1)
	if got, want := g.store.LatestIndex(), last; got != want {
		t.Fatalf("got restored index %d; want %d", got, want)
	}
	for table := range stateSchema().Tables {
		want := dumpTxn(t, snap.(*fsmSnapshot).db.Txn(false), table)
		if got := dumpTxn(t, g.store.db.Txn(false), table); !reflect.DeepEqual(got, want) {
			t.Fatalf("table %s: got %d objects %#v; want %d %#v", table, len(got), got, len(want), want)
		}
	}
	a, _ := g.store.Alloc(alloc.ID)
	if a == nil || a.ClientStatus != structs.AllocClientStatusRunning || a.Job == nil || a.Job.TaskGroups[0].Tasks[0].Config["command"] != "/bin/true" {
		t.Fatalf("got restored alloc %+v; want running with its job", a)
	}
	if j, _ := g.store.Job("default", "web"); j == nil || j.StatusDescription != "blocked" {
		t.Fatalf("got restored job %+v; want status description", j)
	}
	if j, _ := g.store.Job("default", "old"); j != nil {
		t.Fatalf("got deleted job back after restore")
	}
	// A restored store keeps taking log entries after the snapshot index.
	if r := applyCmd(t, g, last+1, msgUpsertJob, &upsertJobCmd{Job: testJob("later")}); r.Err != nil || r.Index != last+1 {
		t.Fatalf("got apply after restore %+v; want index %d", r, last+1)
	}
}

func dumpTxn(t *testing.T, txn *memdb.Txn, table string) []any {
	t.Helper()
	it, err := txn.Get(table, "id")
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw)
	}
	return out
}

// TestSnapshotTypes_CoverSchema fails when a table is added to the state
// schema without a snapshot type: its rows would be lost on restart.
func TestSnapshotTypes_CoverSchema(t *testing.T) {
	for table := range stateSchema().Tables {
		if _, ok := snapshotTypes[table]; !ok {
			t.Errorf("table %q has no entry in snapshotTypes; want one", table)
		}
	}
}

// TestServer_NoLeaderWriteFails checks that a write on a server that
// cannot form a cluster fails with "No cluster leader" within the hold
// time instead of hanging.
func TestServer_NoLeaderWriteFails(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.BootstrapExpect = 3 // never reached: no peers
	cfg.RPCAdvertise = "127.0.0.1:1"
	cfg.RPCHoldTimeout = 300 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	start := time.Now()
	_, err = s.RegisterJob(context.Background(), testJob("web"), structs.JobRegisterOptions{})
	elapsed := time.Since(start)
	if err == nil || structs.StatusCode(err) != 500 || !strings.Contains(err.Error(), "No cluster leader") {
		t.Fatalf("got %v; want a 500 No cluster leader", err)
	}
	if elapsed > 2*time.Second {
		t.Fatalf("got failure after %v; want within the 300ms hold time", elapsed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := s.RegisterJob(ctx, testJob("web"), structs.JobRegisterOptions{}); err == nil || time.Since(start) > time.Second {
		t.Fatalf("got %v after %v; want an error by the call's 50ms deadline", err, time.Since(start))
	} else if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "No cluster leader") {
		t.Fatalf("got %v; want deadline or No cluster leader", err)
	}
}

// TestServer_DiskRestartKeepsState writes through raft on a disk-backed
// single voter, snapshots, writes more, restarts and finds both.
func TestServer_DiskRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	start := func() *Server {
		cfg := DefaultConfig()
		cfg.DataDir = dir
		cfg.BootstrapExpect = 1
		cfg.RPCAdvertise = "127.0.0.1:1"
		cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout, cfg.RaftLeaderLease = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	waitLeader(t, s)
	ctx := context.Background()
	if _, err := s.RegisterJob(ctx, testJob("web"), structs.JobRegisterOptions{}); err != nil {
		t.Fatalf("register: %v", err)
	}
	if err := s.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if _, err := s.RegisterJob(ctx, testJob("after-snapshot"), structs.JobRegisterOptions{}); err != nil {
		t.Fatalf("register: %v", err)
	}
	id := s.ID()
	s.Shutdown()

	s = start()
	defer s.Shutdown()
	if s.ID() != id {
		t.Fatalf("got server id %s after restart; want %s", s.ID(), id)
	}
	waitLeader(t, s)
	for _, name := range []string{"web", "after-snapshot"} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			j, _ := s.State().Job("default", name)
			if j != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %q lost across restart", name)
			}
			<-time.After(10 * time.Millisecond) // polling interval
		}
	}
}

func waitLeader(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("server did not become leader")
		}
		<-time.After(10 * time.Millisecond) // polling interval; the condition decides
	}
}

// TestUpsertAllocs_KeepsClientFields: a server's write of an allocation
// it copied before the node reported (a stop, an in-place update) changes
// what the servers want and leaves what the node reported.
func TestUpsertAllocs_KeepsClientFields(t *testing.T) {
	f := newTestFSM(t)
	a := &structs.Allocation{ID: structs.GenerateUUID(), Namespace: "default", JobID: "web", NodeID: "n",
		DesiredStatus: structs.AllocDesiredStatusRun, ClientStatus: structs.AllocClientStatusPending}
	stale := *a // the plan's copy, taken before the node's report
	steps := []struct {
		typ msgType
		cmd any
	}{
		{msgUpsertAllocs, &upsertAllocsCmd{Allocs: []*structs.Allocation{a}}},
		{msgUpdateAllocsFromClient, &allocClientUpdateCmd{NodeID: "n", At: 5, Allocs: []*structs.Allocation{{ID: a.ID,
			ClientStatus: structs.AllocClientStatusRunning, ClientDescription: "Tasks are running",
			TaskStates: map[string]*structs.TaskState{"t": {State: "running"}}}}}},
	}
	stale.DesiredStatus, stale.DesiredDescription = structs.AllocDesiredStatusStop, "alloc was stopped by the user"
	steps = append(steps, struct {
		typ msgType
		cmd any
	}{msgUpsertAllocs, &upsertAllocsCmd{Allocs: []*structs.Allocation{&stale}}})
	for i, st := range steps {
		if r := applyCmd(t, f, uint64(10+i), st.typ, st.cmd); r.Err != nil {
			t.Fatalf("step %d: %v", i, r.Err)
		}
	}
	got, err := f.store.Alloc(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.DesiredStatus != structs.AllocDesiredStatusStop || got.ClientStatus != structs.AllocClientStatusRunning ||
		got.ClientDescription != "Tasks are running" || got.TaskStates["t"].State != "running" {
		t.Fatalf("alloc = desired %s, client %s %q, tasks %v; want stop asked of a running alloc",
			got.DesiredStatus, got.ClientStatus, got.ClientDescription, got.TaskStates)
	}
}
