package agent

import (
	"net/http"

	"github.com/gorilla/mux"

	"tether/structs"
	"tether/structs/acl"
)

// evaluationInfo serves /v1/evaluation/:id.
func (a *Agent) evaluationInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	if err := structs.ValidateUUID("eval", id); err != nil {
		return nil, err
	}
	e, err := s.State().Eval(id)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, structs.NotFound("eval not found")
	}
	if _, err := a.authorize(r, allowNs(e.Namespace, acl.NamespaceCapabilityReadJob)); err != nil {
		return nil, err
	}
	setIndex(w, e.ModifyIndex)
	return e, nil
}

// evaluationAllocations serves /v1/evaluation/:id/allocations: the
// allocations the evaluation placed.
func (a *Agent) evaluationAllocations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	id := mux.Vars(r)["id"]
	if err := structs.ValidateUUID("eval", id); err != nil {
		return nil, err
	}
	e, err := s.State().Eval(id)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, structs.NotFound("eval not found")
	}
	if _, err := a.authorize(r, allowNs(e.Namespace, acl.NamespaceCapabilityReadJob)); err != nil {
		return nil, err
	}
	allocs, err := s.State().AllocsByJob(e.Namespace, e.JobID)
	if err != nil {
		return nil, err
	}
	out := []*structs.AllocListStub{}
	for _, al := range allocs {
		if al.EvalID == id {
			out = append(out, al.Stub())
		}
	}
	setIndex(w, e.ModifyIndex)
	return out, nil
}

// jobEvaluations serves /v1/job/:id/evaluations.
func (a *Agent) jobEvaluations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	if _, err := a.authorize(r, allowNs(ns, acl.NamespaceCapabilityReadJob)); err != nil {
		return nil, err
	}
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
	s, err := a.needServer()
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	if _, err := a.authorize(r, allowNs(ns, acl.NamespaceCapabilityReadJob)); err != nil {
		return nil, err
	}
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
