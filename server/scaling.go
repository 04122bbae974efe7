package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// Job scaling, as Nomad v1.6.5 has it. A scale with a Count registers the
// job again with the group's new count (a new version and an evaluation,
// "job-scaling"), on the leader, guarded by the job's JobModifyIndex as
// read, so that a registration in between wins and the scale fails
// rather than undoing it. Every scale, with a count or not, also stores a
// scaling event: per job one object holding each group's latest
// structs.MaxScalingEventsPerGroup events, newest first, written with
// msgIgnoreUnknown (a server that skips them only answers fewer events)
// and removed with the job (StateStore.DeleteJob).

// tableScalingEvents holds one structs.JobScalingEvents per job.
const tableScalingEvents = "scaling_events"

// methodLeaderJobScale runs a scale on the leader.
const methodLeaderJobScale = "Leader.JobScale"

// evalTriggerScaling is the TriggeredBy of a scale's evaluation.
const evalTriggerScaling = "job-scaling"

type upsertScalingEventCmd struct {
	Namespace, JobID, Group string
	Event                   *structs.ScalingEvent
}

func init() {
	snapshotTypes[tableScalingEvents] = func() any { return new(structs.JobScalingEvents) }
	commands[msgUpsertScalingEvent] = cmd(func(st *StateStore, c *upsertScalingEventCmd) (uint64, error) {
		return st.UpsertScalingEvent(c.Namespace, c.JobID, c.Group, c.Event)
	})
}

// scalingEventsTableSchema is the schema of the scaling events table.
func scalingEventsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableScalingEvents,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Namespace"},
				&memdb.StringFieldIndex{Field: "JobID"},
			}}},
		},
	}
}

// --- State ---

// UpsertScalingEvent adds ev (stamped with the write's index) as the
// newest event of the job's group, dropping the oldest beyond
// structs.MaxScalingEventsPerGroup. The stored object is replaced, never
// changed in place: readers may hold it.
func (s *StateStore) UpsertScalingEvent(ns, jobID, group string, ev *structs.ScalingEvent) (uint64, error) {
	if ev == nil {
		return 0, fmt.Errorf("upsert scaling event: missing event")
	}
	return s.write([]string{tableScalingEvents}, func(txn *memdb.Txn, idx uint64) error {
		raw, err := txn.First(tableScalingEvents, "id", ns, jobID)
		if err != nil {
			return fmt.Errorf("scaling events lookup failed: %w", err)
		}
		out := &structs.JobScalingEvents{Namespace: ns, JobID: jobID, ScalingEvents: map[string][]*structs.ScalingEvent{}}
		if raw != nil {
			for g, evs := range raw.(*structs.JobScalingEvents).ScalingEvents {
				out.ScalingEvents[g] = evs
			}
		}
		c := *ev
		c.CreateIndex = idx
		evs := append([]*structs.ScalingEvent{&c}, out.ScalingEvents[group]...)
		out.ScalingEvents[group] = evs[:min(len(evs), structs.MaxScalingEventsPerGroup)]
		out.ModifyIndex = idx
		if err := txn.Insert(tableScalingEvents, out); err != nil {
			return fmt.Errorf("inserting scaling events: %w", err)
		}
		return nil
	})
}

// deleteScalingEventsTxn removes a job's scaling events, in the
// transaction that deletes the job.
func deleteScalingEventsTxn(txn *memdb.Txn, ns, jobID string) error {
	if _, err := txn.DeleteAll(tableScalingEvents, "id", ns, jobID); err != nil {
		return fmt.Errorf("deleting scaling events: %w", err)
	}
	return nil
}

// ScalingEvents returns the job's scaling events per group (shared:
// callers must not change them; nil for none) and adds them to ws.
func (s *StateStore) ScalingEvents(ws memdb.WatchSet, ns, jobID string) (map[string][]*structs.ScalingEvent, error) {
	ch, raw, err := s.db.Txn(false).FirstWatch(tableScalingEvents, "id", ns, jobID)
	if err != nil {
		return nil, fmt.Errorf("scaling events lookup failed: %w", err)
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*structs.JobScalingEvents).ScalingEvents, nil
}

// --- Server ---

// ScaleJob scales one group of a job or records an event about it, on the
// leader (a follower forwards the call). The caller has checked the
// request's own fields (CheckScaleRequest) and the ACL.
func (s *Server) ScaleJob(ctx context.Context, req *structs.JobScaleRequest) (*structs.JobRegisterResponse, error) {
	if err := CheckScaleRequest(req); err != nil {
		return nil, err
	}
	var resp structs.JobRegisterResponse
	if err := s.leaderCall(ctx, methodLeaderJobScale, req, &resp, func(ctx context.Context) error {
		return s.scaleJobEndpoint(ctx, req, &resp)
	}); err != nil {
		return nil, err
	}
	s.waitApplied(ctx, resp.Index)
	return &resp, nil
}

// CheckScaleRequest refuses a scale request that is wrong whatever the
// job, with Nomad's texts.
func CheckScaleRequest(req *structs.JobScaleRequest) error {
	switch {
	case req.JobID == "":
		return structs.BadRequest("missing job ID")
	case req.Group == "":
		return structs.BadRequest("missing task group name for scaling action")
	case req.Count != nil && *req.Count < 0:
		return structs.BadRequest("scaling action count can't be negative")
	case req.Count != nil && req.Error:
		return structs.BadRequest("scaling action should not contain count if error is true")
	case req.Count != nil && *req.Count > maxGroupCount:
		return structs.BadRequest("new scaling count is too large for TaskGroup.Count (int): %d", *req.Count)
	case len(req.Message) > structs.MaxScalingMessageLength:
		return structs.BadRequest("Message: longer than %d bytes", structs.MaxScalingMessageLength)
	case len(req.Meta) > structs.MaxScalingMetaKeys:
		return structs.BadRequest("Meta: more than %d keys", structs.MaxScalingMetaKeys)
	}
	return nil
}

// maxGroupCount bounds a scaled group's count.
const maxGroupCount = 1<<31 - 1

// scaleJobEndpoint is the leader's half of ScaleJob.
func (s *Server) scaleJobEndpoint(ctx context.Context, req *structs.JobScaleRequest, resp *structs.JobRegisterResponse) error {
	if err := CheckScaleRequest(req); err != nil {
		return err
	}
	job, err := s.store.Job(req.Namespace, req.JobID)
	if err != nil {
		return fmt.Errorf("job lookup failed: %w", err)
	}
	if job == nil {
		return structs.NotFound("job %q not found", req.JobID)
	}
	gi := slices.IndexFunc(job.TaskGroups, func(tg *structs.TaskGroup) bool { return tg.Name == req.Group })
	if gi < 0 {
		return structs.BadRequest("task group %q specified for scaling does not exist in job", req.Group)
	}
	group := job.TaskGroups[gi]
	ev := &structs.ScalingEvent{Count: req.Count, PreviousCount: int64(group.Count), Error: req.Error,
		Message: req.Message, Meta: req.Meta, Time: time.Now().UnixNano()}
	*resp = structs.JobRegisterResponse{JobModifyIndex: job.JobModifyIndex}
	if req.Count != nil {
		if err := s.scaleGroupCount(ctx, req, job, gi, resp); err != nil {
			return err
		}
		evalID := resp.EvalID
		ev.EvalID = &evalID
	}
	idx, err := s.raftApply(ctx, msgUpsertScalingEvent|msgIgnoreUnknown,
		&upsertScalingEventCmd{Namespace: job.Namespace, JobID: job.ID, Group: req.Group, Event: ev})
	if err != nil {
		return err
	}
	resp.Index = idx
	return nil
}

// scaleGroupCount registers job again with group gi's count set to
// *req.Count, within the group's scaling policy, if the job is still the
// version read (and the one req names, when it names one).
func (s *Server) scaleGroupCount(ctx context.Context, req *structs.JobScaleRequest, job *structs.Job, gi int, resp *structs.JobRegisterResponse) error {
	n := *req.Count
	if p := job.TaskGroups[gi].Scaling; p != nil {
		if n < p.Min {
			return structs.BadRequest("group count was less than scaling policy minimum: %d < %d", n, p.Min)
		}
		if p.Max < n {
			return structs.BadRequest("group count was greater than scaling policy maximum: %d > %d", n, p.Max)
		}
	}
	if req.JobModifyIndex > 0 && req.JobModifyIndex != job.JobModifyIndex {
		return structs.BadRequest("%s %d: job exists with conflicting job modify index: %d",
			structs.RegisterEnforceIndexErrPrefix, req.JobModifyIndex, job.JobModifyIndex)
	}
	c := *job // the stored job is shared: register a copy
	c.TaskGroups = make([]*structs.TaskGroup, len(job.TaskGroups))
	for i, tg := range job.TaskGroups {
		g := *tg
		c.TaskGroups[i] = &g
	}
	c.TaskGroups[gi].Count = int(n)
	return s.registerJobEndpoint(ctx, &jobRegisterRequest{Job: &c, JobRegisterOptions: structs.JobRegisterOptions{
		EnforceIndex: true, JobModifyIndex: job.JobModifyIndex, EvalTrigger: evalTriggerScaling,
	}}, resp)
}

// fillScalingPolicies completes the scaling policies of a job being
// registered (its groups are the caller's; their policies may be shared
// and are replaced by copies): each one's target, and its ID, kept from
// the policy of the same group in the version it replaces (old, nil for
// none).
func fillScalingPolicies(job, old *structs.Job) {
	for _, tg := range job.TaskGroups {
		if tg.Scaling == nil {
			continue
		}
		p := tg.Scaling.Copy()
		tg.Scaling = p
		p.Target = map[string]string{structs.ScalingTargetNamespace: job.Namespace,
			structs.ScalingTargetJob: job.ID, structs.ScalingTargetGroup: tg.Name}
		p.ID = ""
		if old != nil {
			if prev := old.LookupTaskGroup(tg.Name); prev != nil && prev.Scaling != nil {
				p.ID = prev.Scaling.ID
			}
		}
		if p.ID == "" {
			p.ID = structs.GenerateUUID()
		}
	}
}

// TableScalingEvents names the scaling events table for X-Nomad-Index.
const TableScalingEvents = tableScalingEvents
