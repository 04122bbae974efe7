package agent

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-memdb"

	"tether/server"
	"tether/structs"
	"tether/structs/acl"
)

// needServer returns the server, or a 400 on an agent that runs none: jobs
// and allocations live in the servers' state.
func (a *Agent) needServer() (*server.Server, error) {
	if a.server == nil {
		return nil, structs.BadRequest("this endpoint is served by servers; this agent runs only a node")
	}
	return a.server, nil
}

// serverFor returns the server once the caller is found to hold
// capability in the request's namespace.
func (a *Agent) serverFor(r *http.Request, capability string) (*server.Server, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	if _, err := a.authorize(r, allowNs(namespaceOf(r), capability)); err != nil {
		return nil, err
	}
	return s, nil
}

// jobsRequest serves /v1/jobs: GET lists, PUT/POST registers.
func (a *Agent) jobsRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case http.MethodGet:
		ns := namespaceOf(r)
		aclObj, err := a.authorize(r, allowNsOrWildcard(ns, acl.NamespaceCapabilityListJobs))
		if err != nil {
			return nil, err
		}
		filter, err := parseFilter(r.URL.Query())
		if err != nil {
			return nil, err
		}
		// The index is the jobs table's, or a listed job's summary's when
		// that is newer; the read wakes on what moves either.
		st, prefix := s.State(), r.URL.Query().Get("prefix")
		var out []*structs.JobListStub
		if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
			st.TableIndex(ws, server.TableAllocs, server.TableEvals) // summaries move with these
			idx := st.TableIndex(ws, server.TableJobs)
			jobs, err := st.Jobs(ns, prefix)
			if err != nil {
				return 0, err
			}
			out = make([]*structs.JobListStub, 0, len(jobs))
			for _, j := range jobs {
				if !aclObj.AllowNamespaceOperation(j.Namespace, acl.NamespaceCapabilityListJobs) {
					continue
				}
				stub := j.Stub()
				if stub.JobSummary, err = st.JobSummary(j); err != nil {
					return 0, err
				}
				idx = max(idx, stub.JobSummary.ModifyIndex)
				out = append(out, stub)
			}
			return idx, nil
		}); err != nil {
			return nil, err
		}
		return filterList(filter, out)
	case http.MethodPut, http.MethodPost:
		body, err := readBody(r)
		if err != nil {
			return nil, err
		}
		job, opts, err := decodeJobRegister(body)
		if err != nil {
			return nil, err
		}
		if _, err := a.authorize(r, allowNs(job.Namespace, acl.NamespaceCapabilitySubmitJob)); err != nil {
			return nil, err
		}
		if job.Region != "" && job.Region != a.cfg.Region {
			return nil, structs.BadRequest("Job.Region: %q does not match this cluster's region %q", job.Region, a.cfg.Region)
		}
		job.Region = a.cfg.Region
		resp, err := s.RegisterJob(r.Context(), job, opts)
		if err != nil {
			return nil, err
		}
		setIndex(w, resp.Index)
		return resp, nil
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// jobRequest serves /v1/job/:id: GET reads, DELETE stops (?purge=true
// removes).
func (a *Agent) jobRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	ns := namespaceOf(r)
	switch r.Method {
	case http.MethodGet:
		if _, err := a.authorize(r, allowNs(ns, acl.NamespaceCapabilityReadJob)); err != nil {
			return nil, err
		}
		var job *structs.Job
		if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
			idx := s.State().TableIndex(ws, server.TableJobs)
			var err error
			if job, err = s.State().Job(ns, id); job != nil {
				idx = job.ModifyIndex
			}
			return idx, err
		}); err != nil {
			return nil, err
		}
		if job == nil {
			return nil, structs.NotFound("job not found")
		}
		return job, nil
	case http.MethodDelete:
		if _, err := a.authorize(r, allowNs(ns, acl.NamespaceCapabilitySubmitJob)); err != nil {
			return nil, err
		}
		q := r.URL.Query()
		purge, _ := strconv.ParseBool(q.Get("purge"))
		var prio int
		if v := q.Get("eval_priority"); v != "" {
			var err error
			if prio, err = strconv.Atoi(v); err != nil {
				return nil, structs.BadRequest("Failed to parse value of %q (%v) as a int: %v", "eval_priority", v, err)
			}
			if err := checkEvalPriority(prio); err != nil {
				return nil, err
			}
		}
		resp, err := s.DeregisterJob(r.Context(), ns, id, purge, prio)
		if err != nil {
			return nil, err
		}
		setIndex(w, resp.Index)
		return resp, nil
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// jobAllocations serves /v1/job/:id/allocations.
func (a *Agent) jobAllocations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns, id := namespaceOf(r), mux.Vars(r)["id"]
	var out []*structs.AllocListStub
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableAllocs)
		allocs, err := s.State().AllocsByJob(ns, id)
		out = make([]*structs.AllocListStub, 0, len(allocs))
		for _, al := range allocs {
			out = append(out, al.Stub())
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// allocationsList serves /v1/allocations?prefix=&namespace=.
func (a *Agent) allocationsList(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	aclObj, err := a.authorize(r, allowNsOrWildcard(namespaceOf(r), acl.NamespaceCapabilityReadJob))
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	resources, err := boolParam(q, "resources")
	if err != nil {
		return nil, err
	}
	filter, err := parseFilter(q)
	if err != nil {
		return nil, err
	}
	ns, prefix, st := namespaceOf(r), q.Get("prefix"), s.State()
	var out []*structs.AllocListStub
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := st.TableIndex(ws, server.TableAllocs)
		allocs, err := st.Allocs(ns, prefix)
		if err != nil {
			return 0, err
		}
		sort.Slice(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
		out = make([]*structs.AllocListStub, 0, len(allocs))
		for _, al := range allocs {
			if aclObj.AllowNamespaceOperation(al.Namespace, acl.NamespaceCapabilityReadJob) {
				stub := al.Stub()
				if resources {
					stub.AllocatedResources = al.Allocated()
				}
				out = append(out, stub)
			}
		}
		return idx, nil
	}); err != nil {
		return nil, err
	}
	return filterList(filter, out)
}

// allocationInfo serves /v1/allocation/:id.
func (a *Agent) allocationInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	if err := structs.ValidateUUID("alloc", id); err != nil {
		return nil, err
	}
	// A caller who may not read the allocation is refused before it can
	// block on it.
	if al, err := s.State().Alloc(id); err != nil {
		return nil, err
	} else if al != nil {
		if _, err := a.authorize(r, allowNs(al.Namespace, acl.NamespaceCapabilityReadJob)); err != nil {
			return nil, err
		}
	}
	var al *structs.Allocation
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableAllocs)
		var err error
		if al, err = s.State().Alloc(id); al != nil {
			idx = al.ModifyIndex
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	if al == nil {
		return nil, structs.NotFound("alloc not found")
	}
	if _, err := a.authorize(r, allowNs(al.Namespace, acl.NamespaceCapabilityReadJob)); err != nil {
		return nil, err
	}
	return withAllocated(al), nil
}

// allocationStop serves POST/PUT /v1/allocation/:id/stop.
func (a *Agent) allocationStop(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		return nil, structs.ErrInvalidMethod
	}
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	if err := structs.ValidateUUID("alloc", id); err != nil {
		return nil, err
	}
	if al, err := s.State().Alloc(id); err == nil && al != nil {
		if _, err := a.authorize(r, allowNs(al.Namespace, acl.NamespaceCapabilityAllocLifecycle)); err != nil {
			return nil, err
		}
	} else if _, err := a.authorize(r, (*acl.ACL).IsManagement); err != nil {
		return nil, err
	}
	noDelay, err := boolParam(r.URL.Query(), "no_shutdown_delay")
	if err != nil {
		return nil, err
	}
	idx, err := s.StopAlloc(r.Context(), id, noDelay)
	if err != nil {
		return nil, err
	}
	setIndex(w, idx)
	return map[string]any{"EvalID": structs.GenerateUUID(), "Index": idx}, nil
}

// nodeAllocations serves /v1/node/:id/allocations.
func (a *Agent) nodeAllocations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	aclObj, err := a.authorize(r, (*acl.ACL).AllowNodeRead)
	if err != nil {
		return nil, err
	}
	var allocs []allocationJSON
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		all, idx, err := s.State().NodeAllocs(ws, id)
		allocs = make([]allocationJSON, 0, len(all))
		for _, al := range all {
			if aclObj.AllowNamespaceOperation(al.Namespace, acl.NamespaceCapabilityReadJob) {
				allocs = append(allocs, withAllocated(al))
			}
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	return allocs, nil
}

// allocationJSON is a full allocation as an HTTP caller reads it: with
// AllocatedResources, which Nomad's carries and `nomad alloc status`
// prints, derived from the task resources rather than stored.
type allocationJSON struct {
	*structs.Allocation
	AllocatedResources *structs.AllocatedResources
	NetworkStatus      *allocNetworkStatus
}

// allocNetworkStatus is Nomad's AllocNetworkStatus. Tether's tasks share
// their node's network (Nomad's host mode): no interface, address or DNS
// of their own, which Nomad reports as this struct with empty fields.
type allocNetworkStatus struct {
	InterfaceName string
	Address       string
	AddressIPv6   string
	DNS           *struct{}
}

func withAllocated(al *structs.Allocation) allocationJSON {
	return allocationJSON{Allocation: al, AllocatedResources: al.Allocated(), NetworkStatus: &allocNetworkStatus{}}
}

// namespaceOf returns ?namespace, "default" when absent.
func namespaceOf(r *http.Request) string {
	if ns := r.URL.Query().Get("namespace"); ns != "" {
		return ns
	}
	return structs.DefaultNamespace
}

// jobSummary serves /v1/job/:id/summary: allocations per group by client
// status, as `nomad job status` shows them.
func (a *Agent) jobSummary(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns, id, st := namespaceOf(r), mux.Vars(r)["id"], s.State()
	var sum *structs.JobSummary
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		st.TableIndex(ws, server.TableAllocs, server.TableEvals) // what the summary counts
		idx := st.TableIndex(ws, server.TableJobs)
		sum = nil
		job, err := st.Job(ns, id)
		if err != nil || job == nil {
			return idx, err
		}
		if sum, err = st.JobSummary(job); err != nil {
			return 0, err
		}
		return sum.ModifyIndex, nil
	}); err != nil {
		return nil, err
	}
	if sum == nil {
		return nil, structs.NotFound("job not found")
	}
	return sum, nil
}

// jobDeployment serves /v1/job/:id/deployment. Tether runs no
// deployments, so the latest is none: JSON null, which the Go client and
// the CLI read as "no deployment".
func (a *Agent) jobDeployment(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	if job, err := s.State().Job(ns, mux.Vars(r)["id"]); err != nil || job == nil {
		if err == nil {
			err = structs.NotFound("job not found")
		}
		return nil, err
	}
	// Tether writes no deployments: the index of their table is 0 and a
	// blocking read waits out its time.
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) { return 0, nil }); err != nil {
		return nil, err
	}
	return rawJSON("null"), nil
}
