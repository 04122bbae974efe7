package server

import (
	"context"
	"errors"
	"maps"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// tableEvals holds evaluations: one per job registration, deregistration
// or allocation stop, so clients can follow what the scheduler did.
const tableEvals = "evals"

// msgUpsertEvals is the raft command that stores evaluations.
const msgUpsertEvals msgType = 30

// maxEvalsPerJob bounds the evaluations kept per job; older ones are
// dropped as new ones are written.
const maxEvalsPerJob = 20

type upsertEvalsCmd struct {
	Evals []*structs.Evaluation
}

func init() {
	snapshotTypes[tableEvals] = func() any { return new(structs.Evaluation) }
	commands[msgUpsertEvals] = cmd(func(st *StateStore, c *upsertEvalsCmd) (uint64, error) {
		return st.UpsertEvals(c.Evals)
	})
}

// evalsTableSchema is the schema of the evals table.
func evalsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableEvals,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"job": {Name: "job", Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Namespace"},
				&memdb.StringFieldIndex{Field: "JobID"},
			}}},
		},
	}
}

// UpsertEvals stores evaluations, keeping at most maxEvalsPerJob per job.
func (s *StateStore) UpsertEvals(evals []*structs.Evaluation) (uint64, error) {
	return s.write([]string{tableEvals}, func(txn *memdb.Txn, idx uint64) error {
		for _, e := range evals {
			c := *e
			c.CreateIndex, c.ModifyIndex = idx, idx
			if raw, err := txn.First(tableEvals, "id", e.ID); err != nil {
				return err
			} else if raw != nil {
				c.CreateIndex = raw.(*structs.Evaluation).CreateIndex // an update
			}
			if err := txn.Insert(tableEvals, &c); err != nil {
				return err
			}
			it, err := txn.Get(tableEvals, "job", e.Namespace, e.JobID)
			if err != nil {
				return err
			}
			var all []*structs.Evaluation
			for raw := it.Next(); raw != nil; raw = it.Next() {
				all = append(all, raw.(*structs.Evaluation))
			}
			if len(all) <= maxEvalsPerJob {
				continue
			}
			sort.Slice(all, func(i, j int) bool { return all[i].CreateIndex < all[j].CreateIndex })
			for _, old := range all[:len(all)-maxEvalsPerJob] {
				if err := txn.Delete(tableEvals, old); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Eval returns an evaluation, or nil.
func (s *StateStore) Eval(id string) (*structs.Evaluation, error) {
	raw, err := s.db.Txn(false).First(tableEvals, "id", id)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.Evaluation), nil
}

// EvalsByJob returns a job's evaluations, newest first.
func (s *StateStore) EvalsByJob(ns, jobID string) ([]*structs.Evaluation, error) {
	it, err := s.db.Txn(false).Get(tableEvals, "job", ns, jobID)
	if err != nil {
		return nil, err
	}
	var out []*structs.Evaluation
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.Evaluation))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex > out[j].CreateIndex })
	return out, nil
}

// Evals returns every evaluation of namespace ns ("*" = all), newest first.
func (s *StateStore) Evals(ns string) ([]*structs.Evaluation, error) {
	it, err := s.db.Txn(false).Get(tableEvals, "id")
	if err != nil {
		return nil, err
	}
	var out []*structs.Evaluation
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if e := raw.(*structs.Evaluation); ns == "*" || e.Namespace == ns {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex > out[j].CreateIndex })
	return out, nil
}

// recordEvalLocked writes the evaluation of a scheduling pass over a job:
// complete, with the groups that could not be placed and why. Callers
// hold schedMu; evalID is the ID handed to the caller and stamped on the
// allocations this pass created. priority is the evaluation's (the
// caller's EvalPriority), 0 for the job's.
func (s *Server) recordEvalLocked(ctx context.Context, evalID, triggeredBy string, priority int, job *structs.Job, failures []placementFailure) error {
	if job == nil {
		return errors.New("record eval: missing job")
	}
	if priority == 0 {
		priority = job.Priority
	}
	now := time.Now().UnixNano()
	e := &structs.Evaluation{
		ID: evalID, Namespace: job.Namespace, Priority: priority, Type: job.Type,
		TriggeredBy: triggeredBy, JobID: job.ID, JobModifyIndex: job.JobModifyIndex,
		Status: structs.EvalStatusComplete, CreateTime: now, ModifyTime: now,
		QueuedAllocations: map[string]int{},
	}
	for _, tg := range job.TaskGroups {
		e.QueuedAllocations[tg.Name] = 0
	}
	if len(failures) > 0 {
		e.FailedTGAllocs = map[string]*structs.AllocMetric{}
		for _, f := range failures {
			e.FailedTGAllocs[f.Group] = &structs.AllocMetric{
				CoalescedFailures:  f.Missing - 1,
				ConstraintFiltered: map[string]int{f.Reason: 1},
			}
			e.QueuedAllocations[f.Group] = f.Missing
		}
		e.StatusDescription = "some allocations could not be placed; they are placed when a node fits"
	}
	// The pass supersedes the job's blocked evaluation, if any: Nomad
	// keeps at most one per job.
	evals := []*structs.Evaluation{e}
	prev, err := s.store.EvalsByJob(job.Namespace, job.ID)
	if err != nil {
		return err
	}
	for _, p := range prev {
		if p.Status == structs.EvalStatusBlocked {
			c := *p
			c.Status, c.StatusDescription, c.ModifyTime = structs.EvalStatusCanceled, "superseded by evaluation "+evalID, now
			evals = append(evals, &c)
		}
	}
	var blocked *structs.Evaluation
	if len(failures) > 0 {
		// As Nomad's scheduler does, what could not be placed waits in a
		// blocked evaluation that follows this one (written after it, so
		// lists newest first show it first).
		blocked = &structs.Evaluation{
			ID: structs.GenerateUUID(), Namespace: job.Namespace, Priority: priority, Type: job.Type,
			TriggeredBy: structs.EvalTriggerQueuedAllocs, JobID: job.ID, JobModifyIndex: job.JobModifyIndex,
			Status: structs.EvalStatusBlocked, StatusDescription: "created to place remaining allocations",
			PreviousEval: evalID, CreateTime: now, ModifyTime: now,
			QueuedAllocations: maps.Clone(e.QueuedAllocations), // what it waits to place
		}
		e.BlockedEval = blocked.ID
	}
	if _, err := s.raftApply(ctx, msgUpsertEvals, &upsertEvalsCmd{Evals: evals}); err != nil || blocked == nil {
		return err
	}
	_, err = s.raftApply(ctx, msgUpsertEvals, &upsertEvalsCmd{Evals: []*structs.Evaluation{blocked}})
	return err
}

// completeBlockedEvalsLocked marks the job's blocked evaluation complete
// once a pass placed everything (a node that fits came, or allocations
// stopped): what it waited for is done. Callers hold schedMu.
func (s *Server) completeBlockedEvalsLocked(ctx context.Context, job *structs.Job) error {
	evals, err := s.store.EvalsByJob(job.Namespace, job.ID)
	if err != nil {
		return err
	}
	var done []*structs.Evaluation
	now := time.Now().UnixNano()
	for _, e := range evals {
		if e.Status == structs.EvalStatusBlocked {
			c := *e
			c.Status, c.StatusDescription, c.ModifyTime = structs.EvalStatusComplete, "", now
			c.QueuedAllocations = make(map[string]int, len(e.QueuedAllocations))
			for tg := range e.QueuedAllocations {
				c.QueuedAllocations[tg] = 0 // placed: the job summary reads the newest eval
			}
			done = append(done, &c)
		}
	}
	if len(done) == 0 {
		return nil
	}
	_, err = s.raftApply(ctx, msgUpsertEvals, &upsertEvalsCmd{Evals: done})
	return err
}
