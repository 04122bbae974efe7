package server

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// TestStateStore_TableIndex: each table's index is the index of its last
// write, 0 until it is written.
func TestStateStore_TableIndex(t *testing.T) {
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	nodeIdx, _ := st.UpsertNode(&structs.Node{ID: "n1"})
	jobIdx, _ := st.UpsertJob(&structs.Job{ID: "j", Namespace: "default"})
	cases := []struct {
		tables []string
		want   uint64
	}{
		{[]string{TableAllocs}, 0},
		{[]string{TableEvals}, 0},
		{[]string{TableNodes}, nodeIdx},
		{[]string{TableJobs}, jobIdx},
		{[]string{TableNodes, TableAllocs}, nodeIdx},
		{[]string{TableJobs, TableNodes}, jobIdx},
	}
	for _, tc := range cases {
		if got := st.TableIndex(nil, tc.tables...); got != tc.want {
			t.Errorf("TableIndex(%v) = %d; want %d", tc.tables, got, tc.want)
		}
	}
}

// TestStateStore_Blocking: a blocking read of one table wakes on a write
// to it and not on a write to another; its wait ends it with its index.
func TestStateStore_Blocking(t *testing.T) {
	cases := []struct {
		name  string
		table string
		write func(st *StateStore) (uint64, error)
		wakes bool
	}{
		{"jobs on a job", TableJobs, func(st *StateStore) (uint64, error) {
			return st.UpsertJob(&structs.Job{ID: "j2", Namespace: "default"})
		}, true},
		{"jobs not on a node", TableJobs, func(st *StateStore) (uint64, error) {
			return st.UpsertNode(&structs.Node{ID: "n2"})
		}, false},
		{"allocs on an allocation", TableAllocs, func(st *StateStore) (uint64, error) {
			return st.UpsertAllocs([]*structs.Allocation{{ID: "a2", Namespace: "default", NodeID: "n1", JobID: "j"}})
		}, true},
		{"allocs not on an evaluation", TableAllocs, func(st *StateStore) (uint64, error) {
			return st.UpsertEvals([]*structs.Evaluation{{ID: "e1", Namespace: "default", JobID: "j"}})
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := NewStateStore()
			if err != nil {
				t.Fatal(err)
			}
			st.UpsertJob(&structs.Job{ID: "j", Namespace: "default"})
			st.UpsertAllocs([]*structs.Allocation{{ID: "a1", Namespace: "default", NodeID: "n1", JobID: "j"}})
			min := st.TableIndex(nil, tc.table)
			runs := make(chan uint64, 16)
			blocked := make(chan struct{})
			type result struct {
				idx uint64
				err error
			}
			done := make(chan result, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				idx, err := st.Blocking(ctx, structs.BlockingOptions{MinQueryIndex: min, MaxQueryTime: time.Minute},
					func(ws memdb.WatchSet) (uint64, error) {
						idx := st.TableIndex(ws, tc.table)
						if len(runs) == 0 && ws != nil {
							defer close(blocked)
						}
						runs <- idx
						return idx, nil
					})
				done <- result{idx, err}
			}()
			<-blocked // the first run has watched its table
			widx, err := tc.write(st)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wakes {
				r := <-done
				if r.err != nil || r.idx != widx {
					t.Fatalf("woke with %d, %v; want the write's index %d", r.idx, r.err, widx)
				}
				return
			}
			// Not woken: a write to the table itself still wakes it, so
			// the read was waiting on that table only.
			select {
			case r := <-done:
				t.Fatalf("answered %d, %v on a write to another table", r.idx, r.err)
			default:
			}
			own, _ := st.UpsertJob(&structs.Job{ID: "j3", Namespace: "default"})
			if tc.table == TableAllocs {
				own, _ = st.UpsertAllocs([]*structs.Allocation{{ID: "a3", Namespace: "default", NodeID: "n1", JobID: "j"}})
			}
			if r := <-done; r.err != nil || r.idx != own {
				t.Fatalf("woke with %d, %v; want %d", r.idx, r.err, own)
			}
			if n := len(runs); n != 2 {
				t.Fatalf("the read ran %d times; want 2 (once, then on its table's write)", n)
			}
		})
	}
}

// TestStateStore_BlockingTimesOut: a blocking read past its wait answers
// once more with the index it has; a zero index does not block.
func TestStateStore_BlockingTimesOut(t *testing.T) {
	st, err := NewStateStore()
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := st.UpsertJob(&structs.Job{ID: "j", Namespace: "default"})
	runs := 0
	fn := func(ws memdb.WatchSet) (uint64, error) {
		runs++
		return st.TableIndex(ws, TableJobs), nil
	}
	got, err := st.Blocking(context.Background(), structs.BlockingOptions{MinQueryIndex: idx, MaxQueryTime: 20 * time.Millisecond}, fn)
	if err != nil || got != idx || runs != 2 {
		t.Fatalf("Blocking = %d, %v after %d runs; want %d after 2", got, err, runs, idx)
	}
	runs = 0
	if got, err := st.Blocking(context.Background(), structs.BlockingOptions{}, fn); err != nil || got != idx || runs != 1 {
		t.Fatalf("non-blocking = %d, %v after %d runs", got, err, runs)
	}
}

// TestQueryWait: the wait a blocking query gets, Nomad's bounds plus up
// to 1/16 jitter.
func TestQueryWait(t *testing.T) {
	cases := []struct {
		ask, lo time.Duration
	}{
		{0, DefaultQueryTime},
		{-time.Second, DefaultQueryTime},
		{time.Second, time.Second},
		{time.Hour, MaxQueryTime},
		{time.Nanosecond, time.Nanosecond},
	}
	for _, tc := range cases {
		for range 50 {
			got := queryWait(tc.ask)
			if hi := tc.lo + tc.lo/queryJitterFraction; got < tc.lo || got > hi {
				t.Fatalf("queryWait(%v) = %v; want within [%v, %v]", tc.ask, got, tc.lo, hi)
			}
		}
	}
}
