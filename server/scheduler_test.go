package server

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/structs"
)

// TestScheduleFailureIsRetried: a scheduling pass whose raft write fails
// is reported, counted and kept for the leader's retry, which keeps it
// while it fails and forgets it once a pass succeeds (here: the job is
// gone).
func TestScheduleFailureIsRetried(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.BootstrapExpect = 3 // never reached: every raft write fails
	cfg.RPCAdvertise = "127.0.0.1:1"
	cfg.RPCHoldTimeout = 50 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)

	// A stopped job with a running allocation: scheduling must write the
	// allocation's stop through raft.
	f := &fsm{store: s.store, logger: hclog.NewNullLogger()}
	job := testJob("web")
	job.Stop = true
	applyCmd(t, f, 1, msgUpsertJob, &upsertJobCmd{Job: job})
	applyCmd(t, f, 2, msgUpsertAllocs, &upsertAllocsCmd{Allocs: []*structs.Allocation{{
		ID: structs.GenerateUUID(), Namespace: "default", JobID: "web", TaskGroup: "g", Name: "web.g[0]",
		NodeID: structs.GenerateUUID(), DesiredStatus: structs.AllocDesiredStatusRun, ClientStatus: structs.AllocClientStatusRunning,
	}}})
	const key = "default/web"
	retrying := func() bool {
		s.schedMu.Lock()
		defer s.schedMu.Unlock()
		return s.schedRetry[key]
	}

	steps := []struct {
		name       string
		run        func(ctx context.Context) error
		wantErr    bool
		wantErrors uint64
		wantRetry  bool
	}{
		{"first pass fails", func(ctx context.Context) error {
			s.schedMu.Lock()
			defer s.schedMu.Unlock()
			return s.scheduleLocked(ctx, "default", "web")
		}, true, 1, true},
		{"retry fails too", func(ctx context.Context) error { s.retryFailedSchedules(ctx); return nil }, false, 2, true},
		{"job deleted", func(ctx context.Context) error {
			applyCmd(t, f, 3, msgDeleteJob, &deleteJobCmd{Namespace: "default", JobID: "web"})
			return nil
		}, false, 2, true},
		{"retry succeeds", func(ctx context.Context) error { s.retryFailedSchedules(ctx); return nil }, false, 2, false},
	}
	for _, st := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := st.run(ctx)
		cancel()
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: error %v; want error %v", st.name, err, st.wantErr)
		}
		if got := s.scheduleErrors.Load(); got != st.wantErrors {
			t.Fatalf("%s: %d scheduling errors counted; want %d", st.name, got, st.wantErrors)
		}
		if got := retrying(); got != st.wantRetry {
			t.Fatalf("%s: job kept for retry %v; want %v", st.name, got, st.wantRetry)
		}
	}
}

// TestGlobMatch: datacenter wildcards, '*' any run, all else literal.
func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"dc1", "dc1", true},
		{"dc1", "dc10", false},
		{"*", "", true},
		{"*", "anything", true},
		{"dc*", "dc1", true},
		{"dc*", "xdc1", false},
		{"*-east", "us-east", true},
		{"*-east", "us-east-1", false},
		{"us-*-1", "us-east-1", true},
		{"us-*-1", "us-1", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "acb", false},
		{"ab*ba", "aba", false},
		{"d.c", "dxc", false},
		{"d.c", "d.c", true},
		{"[dc]", "[dc]", true},
		{"**", "x", true},
	}
	for _, tc := range cases {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v; want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}
