package agent

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-memdb"

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

// evaluationInfo serves /v1/evaluation/:id, a blocking query on the
// evaluation once the caller is found to read it.
func (a *Agent) evaluationInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	s, e, err := a.evalFor(r)
	if err != nil {
		return nil, err
	}
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableEvals)
		cur, err := s.State().Eval(e.ID)
		if cur != nil {
			e, idx = cur, cur.ModifyIndex
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	return e, nil
}

// evaluationAllocations serves /v1/evaluation/:id/allocations: the
// allocations the evaluation placed.
func (a *Agent) evaluationAllocations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, e, err := a.evalFor(r)
	var nf *structs.Error
	if errors.As(err, &nf) && nf.StatusCode() == http.StatusNotFound {
		// As Nomad: an unknown evaluation placed nothing, 200 and [] at
		// the allocations' index, for a caller who may read jobs.
		if s, err = a.serverFor(r, acl.NamespaceCapabilityReadJob); err != nil {
			return nil, err
		}
		if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
			return s.State().TableIndex(ws, server.TableAllocs), nil
		}); err != nil {
			return nil, err
		}
		return []*structs.AllocListStub{}, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*structs.AllocListStub
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableAllocs)
		allocs, err := s.State().AllocsByJob(e.Namespace, e.JobID)
		out = []*structs.AllocListStub{}
		for _, al := range allocs {
			if al.EvalID == e.ID {
				out = append(out, al.Stub())
			}
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// jobEvaluations serves /v1/job/:id/evaluations.
func (a *Agent) jobEvaluations(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns, id := namespaceOf(r), mux.Vars(r)["id"]
	var evals []*structs.Evaluation
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableEvals)
		var err error
		evals, err = s.State().EvalsByJob(ns, id)
		return idx, err
	}); err != nil {
		return nil, err
	}
	if evals == nil {
		evals = []*structs.Evaluation{}
	}
	return evals, nil
}

// evaluationsList serves /v1/evaluations?namespace=.
func (a *Agent) evaluationsList(w http.ResponseWriter, r *http.Request) (any, error) {
	s, err := a.serverFor(r, acl.NamespaceCapabilityReadJob)
	if err != nil {
		return nil, err
	}
	ns := namespaceOf(r)
	var evals []*structs.Evaluation
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableEvals)
		var err error
		evals, err = s.State().Evals(ns)
		return idx, err
	}); err != nil {
		return nil, err
	}
	if evals == nil {
		evals = []*structs.Evaluation{}
	}
	return evals, nil
}
