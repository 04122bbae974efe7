package agent

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	memdb "github.com/hashicorp/go-memdb"

	"tether/server"
	"tether/structs"
	"tether/structs/acl"
)

// jobScaleStatus is GET /v1/job/:id/scale in Nomad's shape
// (api.JobScaleStatusResponse).
type jobScaleStatus struct {
	JobID          string
	Namespace      string
	JobCreateIndex uint64
	JobModifyIndex uint64
	JobStopped     bool
	TaskGroups     map[string]groupScaleStatus
}

// groupScaleStatus is one group's part: its count and its allocations.
// Healthy and Unhealthy count deployment health, which Tether does not
// track (no deployments): 0, as Nomad shows for a job without them.
type groupScaleStatus struct {
	Desired   int
	Placed    int
	Running   int
	Healthy   int
	Unhealthy int
	Events    []*structs.ScalingEvent // newest first
}

// scalingRequest is the body of PUT /v1/job/:id/scale (api.ScalingRequest
// with its WriteRequest fields).
type scalingRequest struct {
	Count            *int64
	Target           map[string]string
	Message          string
	Error            bool
	Meta             map[string]any
	PolicyOverride   bool
	JobModifyIndex   uint64
	Region           string
	Namespace        string
	SecretID         string
	IdempotencyToken string
}

// jobScale serves /v1/job/:id/scale: GET answers the job's scale status
// (ACL read-job-scaling or read-job), PUT and POST scale a group (ACL
// scale-job or submit-job).
func (a *Agent) jobScale(w http.ResponseWriter, r *http.Request) (any, error) {
	switch r.Method {
	case http.MethodGet:
		return a.jobScaleStatus(w, r)
	case http.MethodPut, http.MethodPost:
		return a.jobScaleAction(w, r)
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// jobScaleAction scales a group of the job (or records an event about
// it) and answers as a registration does.
func (a *Agent) jobScaleAction(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	ns, id := namespaceOf(r), mux.Vars(r)["id"]
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var args scalingRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&args); err != nil {
		return nil, structs.BadRequest("failed to parse scaling request: %v", err)
	}
	if j := args.Target[structs.ScalingTargetJob]; j != "" && j != id {
		return nil, structs.BadRequest("job ID in payload did not match URL")
	}
	if n := args.Target[structs.ScalingTargetNamespace]; n != "" && n != ns {
		return nil, structs.BadRequest("namespace in payload did not match header")
	}
	if _, err := a.authorize(r, func(x *acl.ACL) bool {
		return x.AllowNamespaceOperation(ns, acl.NamespaceCapabilityScaleJob) ||
			x.AllowNamespaceOperation(ns, acl.NamespaceCapabilitySubmitJob)
	}); err != nil {
		return nil, err
	}
	resp, err := s.ScaleJob(r.Context(), &structs.JobScaleRequest{
		Namespace: ns, JobID: id, Group: args.Target[structs.ScalingTargetGroup], Count: args.Count,
		Message: args.Message, Error: args.Error, Meta: args.Meta, PolicyOverride: args.PolicyOverride,
		JobModifyIndex: args.JobModifyIndex,
	})
	if err != nil {
		return nil, err
	}
	setIndex(w, resp.Index)
	return resp, nil
}

// jobScaleStatus answers the job's counts and scaling events per group.
func (a *Agent) jobScaleStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	ns, id := namespaceOf(r), mux.Vars(r)["id"]
	if _, err := a.authorize(r, func(x *acl.ACL) bool {
		return x.AllowNamespaceOperation(ns, acl.NamespaceCapabilityReadJobScaling) ||
			x.AllowNamespaceOperation(ns, acl.NamespaceCapabilityReadJob)
	}); err != nil {
		return nil, err
	}
	var out *jobScaleStatus
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableJobs, server.TableAllocs, server.TableScalingEvents)
		job, allocs, _, err := s.State().JobAllocs(ws, ns, id)
		if err != nil || job == nil {
			out = nil
			return idx, err
		}
		events, err := s.State().ScalingEvents(ws, ns, id)
		if err != nil {
			return idx, err
		}
		out = scaleStatusOf(job, allocs, events)
		return idx, nil
	}); err != nil {
		return nil, err
	}
	if out == nil {
		return nil, structs.NotFound("job not found")
	}
	return out, nil
}

// scaleStatusOf counts a job's allocations per group: placed (meant to
// run and not finished on their node) and of those, running; with each
// group's scaling events.
func scaleStatusOf(job *structs.Job, allocs []*structs.Allocation, events map[string][]*structs.ScalingEvent) *jobScaleStatus {
	out := &jobScaleStatus{JobID: job.ID, Namespace: job.Namespace, JobCreateIndex: job.CreateIndex,
		JobModifyIndex: job.JobModifyIndex, JobStopped: job.Stop, TaskGroups: make(map[string]groupScaleStatus, len(job.TaskGroups))}
	for _, tg := range job.TaskGroups {
		evs := events[tg.Name]
		if evs == nil {
			evs = []*structs.ScalingEvent{}
		}
		out.TaskGroups[tg.Name] = groupScaleStatus{Desired: tg.Count, Events: evs}
	}
	for _, al := range allocs {
		g, ok := out.TaskGroups[al.TaskGroup]
		if !ok || al.DesiredStatus != structs.AllocDesiredStatusRun || al.ClientTerminal() {
			continue
		}
		g.Placed++
		if al.ClientStatus == structs.AllocClientStatusRunning {
			g.Running++
		}
		out.TaskGroups[al.TaskGroup] = g
	}
	return out
}
