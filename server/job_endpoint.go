package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"tether/rpc"
	"tether/structs"
)

// RegisterJob stores a job (a new version when it exists) and schedules
// it. Groups that cannot be placed are recorded on the job's status
// description and retried whenever a node registers or changes.
func (s *Server) RegisterJob(job *structs.Job) (*structs.JobRegisterResponse, error) {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	job.SubmitTime = time.Now().UnixNano()
	job.Status = structs.JobStatusPending
	job.StatusDescription = ""
	idx, err := s.store.UpsertJob(job)
	if err != nil {
		return nil, err
	}
	if err := s.scheduleLocked(job.Namespace, job.ID); err != nil {
		return nil, err
	}
	return &structs.JobRegisterResponse{EvalID: structs.GenerateUUID(), EvalCreateIndex: idx, JobModifyIndex: idx, Index: idx}, nil
}

// DeregisterJob stops a job's allocations; purge also removes the job.
func (s *Server) DeregisterJob(ns, id string, purge bool) (*structs.JobDeregisterResponse, error) {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	job, err := s.store.Job(ns, id)
	if err != nil {
		return nil, err
	}
	if job == nil {
		return nil, structs.NotFound("job not found")
	}
	c := *job
	c.Stop = true
	idx, err := s.store.UpsertJob(&c)
	if err != nil {
		return nil, err
	}
	if _, err := s.reconcile(&c); err != nil {
		return nil, err
	}
	s.updateJobStatusLocked(ns, id)
	if purge {
		if idx, err = s.store.DeleteJob(ns, id); err != nil {
			return nil, err
		}
	}
	return &structs.JobDeregisterResponse{EvalID: structs.GenerateUUID(), EvalCreateIndex: idx, JobModifyIndex: idx, Index: idx}, nil
}

// StopAlloc stops one allocation; the scheduler places a replacement when
// the job still wants it.
func (s *Server) StopAlloc(id string) (uint64, error) {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	a, err := s.store.Alloc(id)
	if err != nil {
		return 0, err
	}
	if a == nil {
		return 0, structs.ErrUnknownAllocation(id)
	}
	c := *a
	c.DesiredStatus = structs.AllocDesiredStatusStop
	c.DesiredDescription = "alloc was stopped by the user"
	if _, err := s.store.UpsertAllocs([]*structs.Allocation{&c}); err != nil {
		return 0, err
	}
	if err := s.scheduleLocked(a.Namespace, a.JobID); err != nil {
		return 0, err
	}
	return s.store.LatestIndex(), nil
}

// scheduleLocked reconciles one job and records what could not be placed.
func (s *Server) scheduleLocked(ns, id string) error {
	job, err := s.store.Job(ns, id)
	if err != nil || job == nil {
		return err
	}
	failures, err := s.reconcile(job)
	if err != nil {
		return err
	}
	key := ns + "/" + id
	if len(failures) == 0 {
		delete(s.blocked, key)
	} else {
		var parts []string
		for _, f := range failures {
			parts = append(parts, fmt.Sprintf("%d allocation(s) of group %q could not be placed: %s", f.Missing, f.Group, f.Reason))
		}
		s.blocked[key] = strings.Join(parts, "; ")
		s.logger.Warn("placement failed", "job", id, "namespace", ns, "reason", s.blocked[key])
	}
	s.updateJobStatusLocked(ns, id)
	return nil
}

// updateJobStatusLocked derives a job's status from its allocations.
func (s *Server) updateJobStatusLocked(ns, id string) {
	job, _ := s.store.Job(ns, id)
	if job == nil {
		return
	}
	allocs, _ := s.store.AllocsByJob(ns, id)
	status := structs.JobStatusDead
	desc := ""
	if reason, ok := s.blocked[ns+"/"+id]; ok && !job.Stop {
		status, desc = structs.JobStatusPending, reason
	}
	for _, a := range allocs {
		if !a.TerminalStatus() {
			status = structs.JobStatusRunning
			break
		}
	}
	if status == structs.JobStatusDead && !job.Stop && len(allocs) == 0 && desc == "" {
		status = structs.JobStatusPending
	}
	if job.Status == status && job.StatusDescription == desc {
		return
	}
	c := *job
	c.Status, c.StatusDescription = status, desc
	_, _ = s.store.write([]string{tableJobs}, func(txn memdbTxn, idx uint64) error {
		c.ModifyIndex = idx
		return txn.Insert(tableJobs, &c)
	})
}

// retryBlocked reschedules every job with unplaced work (a node appeared or
// changed) and every job that lost allocations.
func (s *Server) retryBlocked() {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	for key := range s.blocked {
		ns, id, _ := strings.Cut(key, "/")
		if err := s.scheduleLocked(ns, id); err != nil {
			s.logger.Error("rescheduling blocked job", "job", id, "error", err)
		}
	}
}

// markNodeAllocsLost marks a down node's unfinished allocations lost and
// reschedules their jobs elsewhere.
func (s *Server) markNodeAllocsLost(nodeID string) {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	allocs, _, err := s.store.AllocsByNode(nodeID)
	if err != nil {
		return
	}
	var lost []*structs.Allocation
	jobs := map[string]bool{}
	for _, a := range allocs {
		if a.TerminalStatus() {
			continue
		}
		c := *a
		c.ClientStatus = structs.AllocClientStatusLost
		c.ClientDescription = "alloc is lost since its node is down"
		lost = append(lost, &c)
		jobs[a.Namespace+"/"+a.JobID] = true
	}
	if len(lost) == 0 {
		return
	}
	if _, err := s.store.UpdateAllocsFromClient(nodeID, lost, time.Now().UnixNano()); err != nil {
		s.logger.Error("marking allocations lost", "node_id", nodeID, "error", err)
		return
	}
	for key := range jobs {
		ns, id, _ := strings.Cut(key, "/")
		_ = s.scheduleLocked(ns, id)
	}
}

// nodeGetClientAllocs is the node's blocking query for its allocations.
func (s *Server) nodeGetClientAllocs(ctx context.Context, req *structs.NodeClientAllocsRequest, resp *structs.NodeClientAllocsResponse) error {
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	if err := s.bindSession(ctx, req.NodeID); err != nil {
		return err
	}
	wait := req.MaxWait
	if wait <= 0 || wait > 5*time.Minute {
		wait = 5 * time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	allocs, idx, err := s.store.BlockingAllocsByNode(wctx, req.NodeID, req.MinIndex)
	if err != nil {
		return err
	}
	resp.Allocs, resp.Index = allocs, idx
	return nil
}

// nodeUpdateAlloc records a node's report on its allocations.
func (s *Server) nodeUpdateAlloc(ctx context.Context, req *structs.AllocUpdateRequest, resp *structs.GenericResponse) error {
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	idx, err := s.store.UpdateAllocsFromClient(req.NodeID, req.Allocs, time.Now().UnixNano())
	if err != nil {
		return err
	}
	jobs := map[string]bool{}
	for _, u := range req.Allocs {
		if a, _ := s.store.Alloc(u.ID); a != nil && a.NodeID == req.NodeID {
			jobs[a.Namespace+"/"+a.JobID] = true
		}
	}
	for key := range jobs {
		ns, id, _ := strings.Cut(key, "/")
		s.updateJobStatusLocked(ns, id)
	}
	resp.Index = idx
	return nil
}

// authenticateNode checks a node's secret.
func (s *Server) authenticateNode(nodeID, secret string) error {
	n, err := s.store.Node(nodeID)
	if err != nil {
		return err
	}
	if n == nil {
		return structs.ErrUnknownNode(nodeID)
	}
	if n.SecretID != secret {
		return structs.NewError(http.StatusForbidden, "node secret ID does not match")
	}
	return nil
}

// ResolveAlloc returns the allocation with the exact full ID, or the errors
// an HTTP caller gets for a malformed or unknown ID.
func (s *Server) ResolveAlloc(id string) (*structs.Allocation, error) {
	if id == "" {
		return nil, structs.BadRequest("must provide a valid alloc id")
	}
	if err := structs.ValidateUUID("alloc", id); err != nil {
		return nil, err
	}
	a, err := s.store.Alloc(id)
	if err != nil {
		return nil, fmt.Errorf("alloc lookup failed: %w", err)
	}
	if a == nil {
		return nil, structs.ErrUnknownAllocation(id)
	}
	return a, nil
}

// AllocRPC runs a client method on the node that owns allocID.
func (s *Server) AllocRPC(ctx context.Context, allocID, method string, args, reply any) error {
	a, err := s.ResolveAlloc(allocID)
	if err != nil {
		return err
	}
	return s.NodeRPC(ctx, a.NodeID, method, args, reply)
}

// AllocStream opens a streaming client method on the node owning allocID.
func (s *Server) AllocStream(ctx context.Context, allocID, method string, args any) (*rpc.Stream, error) {
	a, err := s.ResolveAlloc(allocID)
	if err != nil {
		return nil, err
	}
	return s.NodeStream(ctx, a.NodeID, method, args)
}
