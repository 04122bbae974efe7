package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"tether/structs"
)

// RegisterJob stores a job (a new version when it exists) and schedules
// it, on the leader (a follower forwards the call). Groups that cannot be
// placed are recorded on the job's status description and retried
// whenever a node registers or changes.
func (s *Server) RegisterJob(ctx context.Context, job *structs.Job, opts structs.JobRegisterOptions) (*structs.JobRegisterResponse, error) {
	req := &jobRegisterRequest{Job: job, JobRegisterOptions: opts}
	var resp structs.JobRegisterResponse
	if err := s.leaderCall(ctx, methodLeaderJobRegister, req, &resp, func(ctx context.Context) error {
		return s.registerJobEndpoint(ctx, req, &resp)
	}); err != nil {
		return nil, err
	}
	s.waitApplied(ctx, resp.Index)
	return &resp, nil
}

// registerJobEndpoint is the leader's half of RegisterJob.
func (s *Server) registerJobEndpoint(ctx context.Context, req *jobRegisterRequest, resp *structs.JobRegisterResponse) error {
	job := req.Job
	if job == nil {
		return structs.BadRequest("missing job")
	}
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	old, err := s.store.Job(job.Namespace, job.ID)
	if err != nil {
		return err
	}
	if err := enforceIndex(req.JobRegisterOptions, old); err != nil {
		return err
	}
	preserve(job, old, req.PreserveCounts, req.PreserveResources)
	fillScalingPolicies(job, old)
	job.SubmitTime = time.Now().UnixNano()
	job.Status = structs.JobStatusPending
	job.StatusDescription = ""
	idx, err := s.raftApply(ctx, msgUpsertJob, &upsertJobCmd{Job: job})
	if err != nil {
		return err
	}
	evalID := structs.GenerateUUID()
	s.evalID = evalID
	err = s.scheduleLocked(ctx, job.Namespace, job.ID)
	s.evalID = ""
	if err != nil {
		return err
	}
	if stored, _ := s.store.Job(job.Namespace, job.ID); stored != nil {
		trigger := req.EvalTrigger
		if trigger == "" {
			trigger = "job-register"
		}
		if err := s.recordEvalLocked(ctx, evalID, trigger, req.EvalPriority, stored, s.lastFailures); err != nil {
			return err
		}
	}
	*resp = structs.JobRegisterResponse{EvalID: evalID, EvalCreateIndex: idx, JobModifyIndex: idx, Index: s.store.LatestIndex()}
	return nil
}

// DeregisterJob stops a job's allocations; purge also removes the job. It
// runs on the leader.
func (s *Server) DeregisterJob(ctx context.Context, ns, id string, purge bool, evalPriority int) (*structs.JobDeregisterResponse, error) {
	req := &jobDeregisterRequest{Namespace: ns, JobID: id, Purge: purge, EvalPriority: evalPriority}
	var resp structs.JobDeregisterResponse
	if err := s.leaderCall(ctx, methodLeaderJobDeregister, req, &resp, func(ctx context.Context) error {
		return s.deregisterJobEndpoint(ctx, req, &resp)
	}); err != nil {
		return nil, err
	}
	s.waitApplied(ctx, resp.Index)
	return &resp, nil
}

// deregisterJobEndpoint is the leader's half of DeregisterJob.
func (s *Server) deregisterJobEndpoint(ctx context.Context, req *jobDeregisterRequest, resp *structs.JobDeregisterResponse) error {
	ns, id := req.Namespace, req.JobID
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	job, err := s.store.Job(ns, id)
	if err != nil {
		return err
	}
	if job == nil {
		// As Nomad: stopping a job that is not there is done already,
		// no error and no evaluation.
		*resp = structs.JobDeregisterResponse{Index: s.store.LatestIndex()}
		return nil
	}
	c := *job
	c.Stop = true
	idx, err := s.raftApply(ctx, msgUpsertJob, &upsertJobCmd{Job: &c})
	if err != nil {
		return err
	}
	if cur, _ := s.store.Job(ns, id); cur != nil {
		if _, err := s.reconcile(ctx, cur); err != nil {
			return err
		}
	}
	s.updateJobStatusLocked(ctx, ns, id)
	evalID := structs.GenerateUUID()
	if cur, _ := s.store.Job(ns, id); cur != nil {
		if err := s.recordEvalLocked(ctx, evalID, "job-deregister", req.EvalPriority, cur, nil); err != nil {
			return err
		}
	}
	if req.Purge {
		if idx, err = s.raftApply(ctx, msgDeleteJob, &deleteJobCmd{Namespace: ns, JobID: id}); err != nil {
			return err
		}
	}
	*resp = structs.JobDeregisterResponse{EvalID: evalID, EvalCreateIndex: idx, JobModifyIndex: idx, Index: s.store.LatestIndex()}
	return nil
}

// StopAlloc stops one allocation; the scheduler places a replacement when
// the job still wants it. It runs on the leader.
func (s *Server) StopAlloc(ctx context.Context, id string, noShutdownDelay bool) (uint64, error) {
	req := &allocStopRequest{AllocID: id, NoShutdownDelay: noShutdownDelay}
	var resp structs.GenericResponse
	if err := s.leaderCall(ctx, methodLeaderAllocStop, req, &resp, func(ctx context.Context) error {
		return s.stopAllocEndpoint(ctx, req, &resp)
	}); err != nil {
		return 0, err
	}
	s.waitApplied(ctx, resp.Index)
	return resp.Index, nil
}

// stopAllocEndpoint is the leader's half of StopAlloc.
func (s *Server) stopAllocEndpoint(ctx context.Context, req *allocStopRequest, resp *structs.GenericResponse) error {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	a, err := s.store.Alloc(req.AllocID)
	if err != nil {
		return err
	}
	if a == nil {
		return structs.ErrUnknownAllocation(req.AllocID)
	}
	c := *a
	c.DesiredStatus = structs.AllocDesiredStatusStop
	c.DesiredDescription = "alloc was stopped by the user"
	yes := true
	c.DesiredTransition.Reschedule = &yes
	if req.NoShutdownDelay {
		c.DesiredTransition.NoShutdownDelay = &yes
	}
	if _, err := s.raftApply(ctx, msgUpsertAllocs, &upsertAllocsCmd{Allocs: []*structs.Allocation{&c}}); err != nil {
		return err
	}
	if err := s.scheduleLocked(ctx, a.Namespace, a.JobID); err != nil {
		return err
	}
	resp.Index = s.store.LatestIndex()
	return nil
}

// scheduleLocked reconciles one job and records what could not be placed.
// A pass that fails (its raft write refused or timed out) is counted and
// the job is left in schedRetry for the leader's next tick, so that lost
// or stopped allocations are still replaced; the caller reports the error.
func (s *Server) scheduleLocked(ctx context.Context, ns, id string) error {
	key := ns + "/" + id
	job, err := s.store.Job(ns, id)
	var failures []placementFailure
	if err == nil && job != nil {
		failures, err = s.reconcile(ctx, job)
	}
	if err != nil {
		s.scheduleErrors.Add(1)
		s.schedRetry[key] = true
		return err // unwrapped: RegisterJob hands it to the HTTP caller as is
	}
	delete(s.schedRetry, key)
	if job == nil {
		return nil
	}
	s.lastFailures = failures
	if len(failures) == 0 {
		delete(s.blocked, key)
		if err := s.completeBlockedEvalsLocked(ctx, job); err != nil {
			s.logger.Warn("completing a blocked evaluation", "job", id, "namespace", ns, "error", err)
		}
	} else {
		var parts []string
		for _, f := range failures {
			parts = append(parts, fmt.Sprintf("%d allocation(s) of group %q could not be placed: %s", f.Missing, f.Group, f.Reason))
		}
		s.blocked[key] = strings.Join(parts, "; ")
		s.logger.Warn("placement failed", "job", id, "namespace", ns, "reason", s.blocked[key])
	}
	s.updateJobStatusLocked(ctx, ns, id)
	return nil
}

// updateJobStatusLocked derives a job's status from its allocations.
func (s *Server) updateJobStatusLocked(ctx context.Context, ns, id string) {
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
	if _, err := s.raftApply(ctx, msgUpdateJobStatus, &jobStatusCmd{Namespace: ns, JobID: id, Status: status, Description: desc}); err != nil {
		s.logger.Warn("updating job status", "job", id, "namespace", ns, "error", err)
	}
}

// retryBlocked reschedules every job with unplaced work (a node appeared or
// changed) and every job that lost allocations.
func (s *Server) retryBlocked(ctx context.Context) {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	for key := range s.blocked {
		ns, id, _ := strings.Cut(key, "/")
		if err := s.scheduleLocked(ctx, ns, id); err != nil {
			s.logger.Error("rescheduling blocked job", "job", id, "error", err)
		}
	}
}

// markNodeAllocsLost marks a down node's unfinished allocations lost and
// reschedules their jobs elsewhere.
func (s *Server) markNodeAllocsLost(ctx context.Context, nodeID string) {
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
	if _, err := s.raftApply(ctx, msgUpdateAllocsFromClient, &allocClientUpdateCmd{NodeID: nodeID, Allocs: lost, At: time.Now().UnixNano()}); err != nil {
		s.logger.Error("marking allocations lost", "node_id", nodeID, "error", err)
		return
	}
	for key := range jobs {
		ns, id, _ := strings.Cut(key, "/")
		if err := s.scheduleLocked(ctx, ns, id); err != nil {
			s.logger.Error("rescheduling job of a down node; will retry", "node_id", nodeID, "job", id, "namespace", ns, "error", err)
		}
	}
}

// retryFailedSchedules runs again the scheduling passes that failed, on
// the leader's tick.
func (s *Server) retryFailedSchedules(ctx context.Context) {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	for key := range s.schedRetry {
		if ctx.Err() != nil {
			return
		}
		ns, id, _ := strings.Cut(key, "/")
		if err := s.scheduleLocked(ctx, ns, id); err != nil {
			s.logger.Error("retrying a failed scheduling pass", "job", id, "namespace", ns, "error", err)
		}
	}
}

// nodeGetClientAllocs answers a node's pull of its allocations: at once
// with MaxWait 0 (what nodes do when told of a change, see
// alloc_notify.go), or as a blocking query on the node's allocation index
// with MaxWait > 0.
func (s *Server) nodeGetClientAllocs(ctx context.Context, req *structs.NodeClientAllocsRequest, resp *structs.NodeClientAllocsResponse) error {
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	if err := s.bindSession(ctx, req.NodeID, 0); err != nil {
		return err
	}
	var (
		allocs []*structs.Allocation
		idx    uint64
		err    error
	)
	if req.MaxWait <= 0 {
		allocs, idx, err = s.store.AllocsByNode(req.NodeID)
	} else {
		wctx, cancel := context.WithTimeout(ctx, min(req.MaxWait, 5*time.Minute))
		allocs, idx, err = s.store.BlockingAllocsByNode(wctx, req.NodeID, req.MinIndex)
		cancel()
	}
	if err != nil {
		return err
	}
	resp.Allocs, resp.Index = allocs, idx
	return nil
}

// nodeUpdateAlloc records a node's report on its allocations, on the
// leader.
func (s *Server) nodeUpdateAlloc(ctx context.Context, req *structs.AllocUpdateRequest, resp *structs.GenericResponse) error {
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	return s.leaderCall(ctx, methodLeaderNodeUpdate, req, resp, func(ctx context.Context) error {
		return s.updateAllocLeader(ctx, req, resp)
	})
}

// updateAllocLeader is the leader's half of nodeUpdateAlloc.
func (s *Server) updateAllocLeader(ctx context.Context, req *structs.AllocUpdateRequest, resp *structs.GenericResponse) error {
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	idx, err := s.raftApply(ctx, msgUpdateAllocsFromClient, &allocClientUpdateCmd{NodeID: req.NodeID, Allocs: req.Allocs, At: time.Now().UnixNano()})
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
		s.updateJobStatusLocked(ctx, ns, id)
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

// enforceIndex refuses a registration whose EnforceIndex does not hold
// for the job it would replace (old, nil for none), with Nomad's texts.
func enforceIndex(o structs.JobRegisterOptions, old *structs.Job) error {
	switch {
	case !o.EnforceIndex:
		return nil
	case old == nil && o.JobModifyIndex != 0:
		return structs.BadRequest("%s %d: job does not exist", structs.RegisterEnforceIndexErrPrefix, o.JobModifyIndex)
	case old != nil && o.JobModifyIndex == 0:
		return structs.BadRequest("%s 0: job already exists", structs.RegisterEnforceIndexErrPrefix)
	case old != nil && o.JobModifyIndex != old.JobModifyIndex:
		return structs.BadRequest("%s %d: job exists with conflicting job modify index: %d",
			structs.RegisterEnforceIndexErrPrefix, o.JobModifyIndex, old.JobModifyIndex)
	}
	return nil
}

// preserve keeps, in a job registered again, what the registration asked
// to keep of the job it replaces (old, nil for none): the counts of the
// groups both have, and the resources of the tasks both have.
func preserve(job, old *structs.Job, counts, resources bool) {
	if old == nil {
		return
	}
	for _, tg := range job.TaskGroups {
		prev := old.LookupTaskGroup(tg.Name)
		if prev == nil {
			continue
		}
		if counts {
			tg.Count = prev.Count
		}
		if !resources {
			continue
		}
		for _, t := range tg.Tasks {
			for _, pt := range prev.Tasks {
				if pt.Name == t.Name && pt.Resources != nil {
					r := *pt.Resources
					t.Resources = &r
				}
			}
		}
	}
}
