package server

import (
	"context"
	"sort"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// JobAllocs reads a job (nil once it is gone), its allocations sorted by
// name then creation, and the highest ModifyIndex among them (a node's
// status reports move it: a job-wide log follow waits for an allocation
// to run on its node before it reads it). ws, if set, watches the job's
// row and its allocations' entries only, not the tables' indexes, which
// every write in the cluster moves.
func (s *StateStore) JobAllocs(ws memdb.WatchSet, ns, jobID string) (*structs.Job, []*structs.Allocation, uint64, error) {
	txn := s.db.Txn(false)
	ch, raw, err := txn.FirstWatch(tableJobs, "id", ns, jobID)
	if err != nil {
		return nil, nil, 0, err
	}
	it, err := txn.Get(tableAllocs, "job", ns, jobID)
	if err != nil {
		return nil, nil, 0, err
	}
	if ws != nil {
		ws.Add(ch)
		ws.Add(it.WatchCh())
	}
	var job *structs.Job
	if raw != nil {
		job = raw.(*structs.Job)
	}
	var out []*structs.Allocation
	var idx uint64
	for raw := it.Next(); raw != nil; raw = it.Next() {
		a := raw.(*structs.Allocation)
		out = append(out, a)
		idx = max(idx, a.ModifyIndex)
	}
	if job != nil {
		idx = max(idx, job.ModifyIndex)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].CreateIndex < out[j].CreateIndex
	})
	return job, out, idx, nil
}

// WatchJobAllocs waits until a change to the job or its allocations
// moves their index past minIndex, or ctx ends, and returns what JobAllocs
// reads then. It holds no goroutine of its own: the caller's blocks.
func (s *StateStore) WatchJobAllocs(ctx context.Context, ns, jobID string, minIndex uint64) (*structs.Job, []*structs.Allocation, uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		job, allocs, idx, err := s.JobAllocs(ws, ns, jobID)
		if err != nil || idx > minIndex || job == nil || ctx.Err() != nil {
			return job, allocs, idx, err
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return nil, nil, 0, err
		}
	}
}
