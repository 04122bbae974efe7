package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// StateStore is the server's state: nodes, jobs and allocations in
// go-memdb, each change stamped with a monotonically increasing index.
// Readers get copies; blocking readers wait on memdb watch channels. Every
// write goes through one method per change; on a server those methods are
// called only by the raft FSM (fsm.go), which stamps each write with the
// index of its raft log entry, so every server holds the same state at the
// same index.
type StateStore struct {
	db *memdb.MemDB

	// writeMu serialises writers so indexes are assigned in order.
	writeMu sync.Mutex
	index   uint64

	// applyIndex is the raft index of the log entry the FSM is applying
	// (see applyAt); 0 outside the FSM, where a write takes index+1.
	applyIndex uint64

	// indexCh is closed (and replaced) whenever index advances.
	indexCh chan struct{}

	// allocsUpserted, if set, is called after UpsertAllocs committed, with
	// the allocations written and their index; on a server that is from
	// the FSM's apply, so it must not block (server/alloc_notify.go). Set
	// before any write.
	allocsUpserted func(allocs []*structs.Allocation, idx uint64)
}

// NewStateStore returns an empty store.
func NewStateStore() (*StateStore, error) {
	db, err := memdb.NewMemDB(stateSchema())
	if err != nil {
		return nil, fmt.Errorf("creating state store: %w", err)
	}
	return &StateStore{db: db, indexCh: make(chan struct{})}, nil
}

// applyAt runs fn, one write method of the store, stamping what it writes
// with the raft log index idx, and advances the store's index to idx even
// when fn wrote nothing. The FSM calls it for every command, one at a
// time; nothing else may write meanwhile.
func (s *StateStore) applyAt(idx uint64, fn func() (uint64, error)) (uint64, error) {
	s.writeMu.Lock()
	s.applyIndex = idx
	s.writeMu.Unlock()
	out, err := fn()
	s.writeMu.Lock()
	s.applyIndex = 0
	s.advanceLocked(idx)
	s.writeMu.Unlock()
	if err == nil && out < idx {
		out = idx
	}
	return out, err
}

// advanceLocked moves the index forward to idx and wakes index waiters.
func (s *StateStore) advanceLocked(idx uint64) {
	if idx <= s.index {
		return
	}
	s.index = idx
	close(s.indexCh)
	s.indexCh = make(chan struct{})
}

// WaitForIndex blocks until the store has applied index idx or ctx ends.
// A follower uses it so that a write it forwarded to the leader is
// visible to its own readers before it answers.
func (s *StateStore) WaitForIndex(ctx context.Context, idx uint64) error {
	for {
		s.writeMu.Lock()
		cur, ch := s.index, s.indexCh
		s.writeMu.Unlock()
		if cur >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for state index %d (at %d): %w", idx, cur, ctx.Err())
		}
	}
}

// write runs fn in a write transaction at the next index (the raft index
// of the entry being applied, on a server) and commits it, bumping the
// index entries of the tables it names.
func (s *StateStore) write(tables []string, fn func(txn *memdb.Txn, index uint64) error) (uint64, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	idx := s.index + 1
	if s.applyIndex > s.index {
		idx = s.applyIndex
	}
	txn := s.db.Txn(true)
	defer txn.Abort()
	if err := fn(txn, idx); err != nil {
		return 0, err
	}
	for _, t := range tables {
		if err := txn.Insert(tableIndex, &indexEntry{Key: t, Value: idx}); err != nil {
			return 0, fmt.Errorf("updating index: %w", err)
		}
	}
	txn.Commit()
	s.advanceLocked(idx)
	return idx, nil
}

// tableIndexOf returns the index at which table last changed, and adds the
// entry to ws.
func tableIndexOf(txn *memdb.Txn, ws memdb.WatchSet, table string) uint64 {
	ch, raw, err := txn.FirstWatch(tableIndex, "id", table)
	if err != nil {
		return 0
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return 0
	}
	return raw.(*indexEntry).Value
}

// LatestIndex returns the index of the last write.
func (s *StateStore) LatestIndex() uint64 {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.index
}

// --- Nodes ---

// UpsertNode stores a node, keeping the CreateIndex of an existing record.
func (s *StateStore) UpsertNode(n *structs.Node) (uint64, error) {
	return s.write([]string{tableNodes}, func(txn *memdb.Txn, idx uint64) error {
		c := n.Copy()
		raw, err := txn.First(tableNodes, "id", n.ID)
		if err != nil {
			return err
		}
		if raw != nil {
			c.CreateIndex = raw.(*structs.Node).CreateIndex
		} else {
			c.CreateIndex = idx
		}
		c.ModifyIndex = idx
		return txn.Insert(tableNodes, c)
	})
}

// UpdateNodeStatus sets a node's status; unknown nodes are ignored. An
// unchanged status writes nothing.
func (s *StateStore) UpdateNodeStatus(id, status, description string, at int64) (uint64, error) {
	n, _ := s.Node(id)
	if n == nil || (n.Status == status && n.StatusDescription == description) {
		return s.LatestIndex(), nil
	}
	return s.write([]string{tableNodes}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableNodes, "id", id)
		if err != nil || raw == nil {
			return err
		}
		c := raw.(*structs.Node).Copy()
		c.Status = status
		c.StatusDescription = description
		c.StatusUpdatedAt = at
		c.ModifyIndex = idx
		return txn.Insert(tableNodes, c)
	})
}

// Node returns a copy of the node, or nil.
func (s *StateStore) Node(id string) (*structs.Node, error) {
	raw, err := s.db.Txn(false).First(tableNodes, "id", id)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.Node).Copy(), nil
}

// Nodes returns copies of the nodes whose ID starts with prefix, by ID.
func (s *StateStore) Nodes(prefix string) ([]*structs.Node, error) {
	it, err := s.db.Txn(false).Get(tableNodes, "id_prefix", prefix)
	if err != nil {
		return nil, err
	}
	var out []*structs.Node
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.Node).Copy())
	}
	return out, nil
}

// --- Jobs ---

// UpsertJob stores a job. A new version of an existing job keeps its
// CreateIndex and bumps Version.
func (s *StateStore) UpsertJob(j *structs.Job) (uint64, error) {
	return s.write([]string{tableJobs}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableJobs, "id", j.Namespace, j.ID)
		if err != nil {
			return err
		}
		if raw != nil {
			old := raw.(*structs.Job)
			j.CreateIndex = old.CreateIndex
			j.Version = old.Version + 1
		} else {
			j.CreateIndex = idx
			j.Version = 0
		}
		j.ModifyIndex = idx
		j.JobModifyIndex = idx
		return txn.Insert(tableJobs, j)
	})
}

// SetJobStatus updates a job's status without a new version.
func (s *StateStore) SetJobStatus(ns, id, status string) (uint64, error) {
	j, _ := s.Job(ns, id)
	if j == nil || j.Status == status {
		return s.LatestIndex(), nil
	}
	return s.write([]string{tableJobs}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableJobs, "id", ns, id)
		if err != nil || raw == nil {
			return err
		}
		c := *raw.(*structs.Job)
		c.Status = status
		c.ModifyIndex = idx
		return txn.Insert(tableJobs, &c)
	})
}

// UpdateJobStatus sets a job's status and status description without a
// new version; an unchanged pair writes nothing.
func (s *StateStore) UpdateJobStatus(ns, id, status, description string) (uint64, error) {
	j, _ := s.Job(ns, id)
	if j == nil || (j.Status == status && j.StatusDescription == description) {
		return s.LatestIndex(), nil
	}
	return s.write([]string{tableJobs}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableJobs, "id", ns, id)
		if err != nil || raw == nil {
			return err
		}
		c := *raw.(*structs.Job)
		c.Status, c.StatusDescription = status, description
		c.ModifyIndex = idx
		return txn.Insert(tableJobs, &c)
	})
}

// DeleteJob removes a job (purge) and its scaling events.
func (s *StateStore) DeleteJob(ns, id string) (uint64, error) {
	return s.write([]string{tableJobs, tableScalingEvents}, func(txn *memdb.Txn, idx uint64) error {
		if _, err := txn.DeleteAll(tableJobs, "id", ns, id); err != nil {
			return err
		}
		return deleteScalingEventsTxn(txn, ns, id)
	})
}

// Job returns the job (shared: callers must not mutate it), or nil.
func (s *StateStore) Job(ns, id string) (*structs.Job, error) {
	raw, err := s.db.Txn(false).First(tableJobs, "id", ns, id)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.Job), nil
}

// Jobs returns the jobs of namespace ns ("*" = all) whose ID starts with
// prefix, sorted by namespace and ID.
func (s *StateStore) Jobs(ns, prefix string) ([]*structs.Job, error) {
	it, err := s.db.Txn(false).Get(tableJobs, "id")
	if err != nil {
		return nil, err
	}
	var out []*structs.Job
	for raw := it.Next(); raw != nil; raw = it.Next() {
		j := raw.(*structs.Job)
		if (ns == "*" || j.Namespace == ns) && strings.HasPrefix(j.ID, prefix) {
			out = append(out, j)
		}
	}
	return out, nil
}

// --- Allocations ---

// UpsertAllocs stores allocations as the scheduler made them.
func (s *StateStore) UpsertAllocs(allocs []*structs.Allocation) (uint64, error) {
	idx, err := s.upsertAllocs(allocs)
	if err == nil && s.allocsUpserted != nil {
		s.allocsUpserted(allocs, idx)
	}
	return idx, err
}

func (s *StateStore) upsertAllocs(allocs []*structs.Allocation) (uint64, error) {
	return s.write([]string{tableAllocs}, func(txn *memdb.Txn, idx uint64) error {
		for _, a := range allocs {
			raw, err := txn.First(tableAllocs, "id", a.ID)
			if err != nil {
				return err
			}
			c := *a
			if raw != nil {
				old := raw.(*structs.Allocation)
				c.CreateIndex = old.CreateIndex
				c.CreateTime = old.CreateTime
				// What the node reports stays the node's: a server's write
				// (a stop, an in-place update) copied the allocation when it
				// planned, and the node may have reported since. Taking the
				// copy's status would put a running allocation back to
				// pending, and the node, whose state did not change, would
				// never say otherwise. Nodes write through
				// UpdateAllocsFromClient.
				c.ClientStatus = old.ClientStatus
				c.ClientDescription = old.ClientDescription
				c.TaskStates = old.TaskStates
			} else {
				c.CreateIndex = idx
			}
			c.ModifyIndex = idx
			c.AllocModifyIndex = idx
			if err := txn.Insert(tableAllocs, &c); err != nil {
				return err
			}
		}
		return nil
	})
}

// UpdateAllocsFromClient records what a node reports: client status and
// task states. Unknown allocations are ignored.
func (s *StateStore) UpdateAllocsFromClient(nodeID string, updates []*structs.Allocation, now int64) (uint64, error) {
	return s.write([]string{tableAllocs}, func(txn *memdb.Txn, idx uint64) error {
		for _, u := range updates {
			raw, err := txn.First(tableAllocs, "id", u.ID)
			if err != nil {
				return err
			}
			if raw == nil || raw.(*structs.Allocation).NodeID != nodeID {
				continue
			}
			c := *raw.(*structs.Allocation)
			c.ClientStatus = u.ClientStatus
			c.ClientDescription = u.ClientDescription
			c.TaskStates = u.TaskStates
			c.ModifyIndex = idx
			c.ModifyTime = now
			if err := txn.Insert(tableAllocs, &c); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteAllocs removes allocations (job purge).
func (s *StateStore) DeleteAllocs(ids []string) (uint64, error) {
	return s.write([]string{tableAllocs}, func(txn *memdb.Txn, idx uint64) error {
		for _, id := range ids {
			if _, err := txn.DeleteAll(tableAllocs, "id", id); err != nil {
				return err
			}
		}
		return nil
	})
}

// Alloc returns the allocation (shared: callers must not mutate it), or nil.
func (s *StateStore) Alloc(id string) (*structs.Allocation, error) {
	raw, err := s.db.Txn(false).First(tableAllocs, "id", id)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.Allocation), nil
}

// Allocs returns allocations of namespace ns ("*" = all) whose ID starts
// with prefix.
func (s *StateStore) Allocs(ns, prefix string) ([]*structs.Allocation, error) {
	it, err := s.db.Txn(false).Get(tableAllocs, "id_prefix", prefix)
	if err != nil {
		return nil, err
	}
	var out []*structs.Allocation
	for raw := it.Next(); raw != nil; raw = it.Next() {
		a := raw.(*structs.Allocation)
		if ns == "*" || a.Namespace == ns {
			out = append(out, a)
		}
	}
	return out, nil
}

// AllocsByJob returns a job's allocations, sorted by name.
func (s *StateStore) AllocsByJob(ns, jobID string) ([]*structs.Allocation, error) {
	it, err := s.db.Txn(false).Get(tableAllocs, "job", ns, jobID)
	if err != nil {
		return nil, err
	}
	var out []*structs.Allocation
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.Allocation))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].CreateIndex < out[j].CreateIndex
	})
	return out, nil
}

// AllocsByNode returns a node's allocations and the node's allocation
// index (nodeAllocIndex).
func (s *StateStore) AllocsByNode(nodeID string) ([]*structs.Allocation, uint64, error) {
	return s.allocsByNode(nil, nodeID)
}

// allocsByNode reads a node's allocations and its allocation index, and
// adds to ws the watch of the node's entries only (not the table's index,
// which every write to any node's allocations moves).
func (s *StateStore) allocsByNode(ws memdb.WatchSet, nodeID string) ([]*structs.Allocation, uint64, error) {
	txn := s.db.Txn(false)
	it, err := txn.Get(tableAllocs, "node", nodeID)
	if err != nil {
		return nil, 0, err
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*structs.Allocation
	var idx uint64
	for raw := it.Next(); raw != nil; raw = it.Next() {
		a := raw.(*structs.Allocation)
		out = append(out, a)
		idx = max(idx, a.AllocModifyIndex)
	}
	return out, idx, nil
}

// NodeAllocIndex is the node's allocation index: the highest
// AllocModifyIndex of its allocations, the raft index of the last change
// the servers made to any of them (placement, stop, lost). A node's own
// status reports do not move it, so a node told of it pulls only what it
// has to act on. Deleting allocations (a purge, which stops them first)
// may lower it; the node ignores allocations it is no longer sent.
func (s *StateStore) NodeAllocIndex(nodeID string) uint64 {
	_, idx, _ := s.allocsByNode(nil, nodeID)
	return idx
}

// BlockingAllocsByNode waits until the node's allocation index passes
// minIndex (or ctx is done) and returns the node's allocations and that
// index. It wakes on changes to the node's own allocations only.
func (s *StateStore) BlockingAllocsByNode(ctx context.Context, nodeID string, minIndex uint64) ([]*structs.Allocation, uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		allocs, idx, err := s.allocsByNode(ws, nodeID)
		if err != nil || idx > minIndex || ctx.Err() != nil {
			return allocs, idx, err
		}
		if err := ws.WatchCtx(ctx); err != nil {
			allocs, idx, err = s.allocsByNode(nil, nodeID)
			return allocs, idx, err
		}
	}
}

// NodeExists reports whether a node is known, without copying it (the
// forwarding hot path only needs to know).
func (s *StateStore) NodeExists(id string) bool {
	raw, err := s.db.Txn(false).First(tableNodes, "id", id)
	return err == nil && raw != nil
}

// NodeAllocs reads a node's allocations for a caller (not the node's own
// pull): their highest ModifyIndex, node status reports included, or the
// allocations table's index when the node has none. ws, if set, watches
// the node's entries only.
func (s *StateStore) NodeAllocs(ws memdb.WatchSet, nodeID string) ([]*structs.Allocation, uint64, error) {
	tableIdx := s.TableIndex(nil, tableAllocs)
	allocs, _, err := s.allocsByNode(ws, nodeID)
	if err != nil {
		return nil, 0, err
	}
	var idx uint64
	for _, a := range allocs {
		idx = max(idx, a.ModifyIndex)
	}
	if len(allocs) == 0 {
		idx = tableIdx
	}
	return allocs, idx, nil
}

// JobSummary counts the job's allocations by client status, per group,
// with the queued counts of its latest evaluation. Its ModifyIndex is the
// index of the last change to what it counts (the job, its allocations,
// its evaluations); a blocking read of it watches those three tables.
func (s *StateStore) JobSummary(job *structs.Job) (*structs.JobSummary, error) {
	allocs, err := s.AllocsByJob(job.Namespace, job.ID)
	if err != nil {
		return nil, err
	}
	evals, err := s.EvalsByJob(job.Namespace, job.ID)
	if err != nil {
		return nil, err
	}
	sum := &structs.JobSummary{JobID: job.ID, Namespace: job.Namespace, Summary: make(map[string]structs.TaskGroupSummary, len(job.TaskGroups)),
		Children: &structs.JobChildrenSummary{}, CreateIndex: job.CreateIndex, ModifyIndex: job.ModifyIndex}
	for _, tg := range job.TaskGroups {
		sum.Summary[tg.Name] = structs.TaskGroupSummary{}
	}
	for _, al := range allocs {
		sum.ModifyIndex = max(sum.ModifyIndex, al.ModifyIndex)
		g := sum.Summary[al.TaskGroup]
		switch al.ClientStatus {
		case structs.AllocClientStatusPending:
			g.Starting++
		case structs.AllocClientStatusRunning:
			g.Running++
		case structs.AllocClientStatusComplete:
			g.Complete++
		case structs.AllocClientStatusFailed:
			g.Failed++
		case structs.AllocClientStatusLost:
			g.Lost++
		default:
			g.Unknown++
		}
		sum.Summary[al.TaskGroup] = g
	}
	if len(evals) > 0 {
		sum.ModifyIndex = max(sum.ModifyIndex, evals[0].ModifyIndex)
		for tg, n := range evals[0].QueuedAllocations {
			g := sum.Summary[tg]
			g.Queued = n
			sum.Summary[tg] = g
		}
	}
	return sum, nil
}
