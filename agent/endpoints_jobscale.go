package agent

import (
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
	Events    []struct{} // scaling events: none are recorded
}

// jobScale serves /v1/job/:id/scale: GET answers the job's scale status
// (ACL read-job-scaling or read-job). Scaling a job (PUT/POST) is not
// served: a count changes by registering the job again.
func (a *Agent) jobScale(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.NewError(http.StatusMethodNotAllowed, "Invalid method: scaling is done by registering the job with the new count")
	}
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
		idx := s.State().TableIndex(ws, server.TableJobs, server.TableAllocs)
		job, allocs, _, err := s.State().JobAllocs(ws, ns, id)
		if err != nil || job == nil {
			out = nil
			return idx, err
		}
		out = scaleStatusOf(job, allocs)
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
// run and not finished on their node) and of those, running.
func scaleStatusOf(job *structs.Job, allocs []*structs.Allocation) *jobScaleStatus {
	out := &jobScaleStatus{JobID: job.ID, Namespace: job.Namespace, JobCreateIndex: job.CreateIndex,
		JobModifyIndex: job.JobModifyIndex, JobStopped: job.Stop, TaskGroups: make(map[string]groupScaleStatus, len(job.TaskGroups))}
	for _, tg := range job.TaskGroups {
		out.TaskGroups[tg.Name] = groupScaleStatus{Desired: tg.Count, Events: []struct{}{}}
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
