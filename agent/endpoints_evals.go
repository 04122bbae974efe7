package agent

import (
	"net/http"

	"github.com/gorilla/mux"

	"tether/server"
	"tether/structs"
	"tether/structs/acl"
)

// evalFor looks up the evaluation named in the path and checks the
// caller may read jobs of its namespace.
func (a *Agent) evalFor(r *http.Request) (*server.Server, *structs.Evaluation, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, nil, err
	}
	id := mux.Vars(r)["id"]
	if err := structs.ValidateUUID("eval", id); err != nil {
		return nil, nil, err
	}
	e, err := s.State().Eval(id)
	if err != nil {
		return nil, nil, err
	}
	if e == nil {
		return nil, nil, structs.NotFound("eval not found")
	}
	if _, err := a.authorize(r, allowNs(e.Namespace, acl.NamespaceCapabilityReadJob)); err != nil {
		return nil, nil, err
	}
	return s, e, nil
}

// evaluationInfo serves /v1/evaluation/:id.
func (a *Agent) evaluationInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	_, e, err := a.evalFor(r)
	if err != nil {
		return nil, err
	}
	setIndex(w, e.ModifyIndex)
	return e, nil
}

// evaluationAllocations serves /v1/evaluation/:id/allocations: the
// allocations the evaluation placed.
func (a *Agent) evaluationAllocations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, e, err := a.evalFor(r)
	if err != nil {
		return nil, err
	}
	allocs, err := s.State().AllocsByJob(e.Namespace, e.JobID)
	if err != nil {
		return nil, err
	}
	out := []*structs.AllocListStub{}
	for _, al := range allocs {
		if al.EvalID == e.ID {
			out = append(out, al.Stub())
		}
	}
	setIndex(w, e.ModifyIndex)
	return out, nil
}

// jobEvaluations serves /v1/job/:id/evaluations.
func (a *Agent) jobEvaluations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	evals, err := s.State().EvalsByJob(ns, mux.Vars(r)["id"])
	if err != nil {
		return nil, err
	}
	if evals == nil {
		evals = []*structs.Evaluation{}
	}
	setIndex(w, s.State().LatestIndex())
	return evals, nil
}

// evaluationsList serves /v1/evaluations?namespace=.
func (a *Agent) evaluationsList(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	evals, err := s.State().Evals(ns)
	if err != nil {
		return nil, err
	}
	if evals == nil {
		evals = []*structs.Evaluation{}
	}
	setIndex(w, s.State().LatestIndex())
	return evals, nil
}
