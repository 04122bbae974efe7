package agent

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

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
	related, err := boolParam(r.URL.Query(), "related")
	if err != nil {
		return nil, err
	}
	if !related {
		return e, nil
	}
	return &evalWithRelated{Evaluation: e, RelatedEvals: relatedEvals(s.State(), e)}, nil
}

// evalWithRelated is an evaluation with ?related=true: Nomad's
// RelatedEvals, the evaluations linked to it through PreviousEval,
// NextEval and BlockedEval, transitively.
type evalWithRelated struct {
	*structs.Evaluation
	RelatedEvals []*structs.Evaluation
}

// maxRelatedEvals bounds the walk (a job keeps few evaluations anyway).
const maxRelatedEvals = 64

// relatedEvals walks e's links, oldest first.
func relatedEvals(st *server.StateStore, e *structs.Evaluation) []*structs.Evaluation {
	seen := map[string]bool{e.ID: true}
	queue := []*structs.Evaluation{e}
	out := []*structs.Evaluation{}
	for len(queue) > 0 && len(out) < maxRelatedEvals {
		cur := queue[0]
		queue = queue[1:]
		for _, id := range []string{cur.PreviousEval, cur.NextEval, cur.BlockedEval} {
			if id == "" || seen[id] {
				continue
			}
			seen[id] = true
			if next, err := st.Eval(id); err == nil && next != nil {
				out = append(out, next)
				queue = append(queue, next)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex < out[j].CreateIndex })
	return out
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
	q := r.URL.Query()
	page, err := parsePage(q)
	if err != nil {
		return nil, err
	}
	filter, err := parseFilter(q)
	if err != nil {
		return nil, err
	}
	prefix := q.Get("prefix")
	var evals []*structs.Evaluation
	if err := a.query(w, r, s, func(ws memdb.WatchSet) (uint64, error) {
		idx := s.State().TableIndex(ws, server.TableEvals)
		all, err := s.State().Evals(ns)
		evals = evals[:0]
		for _, e := range all {
			if strings.HasPrefix(e.ID, prefix) {
				evals = append(evals, e)
			}
		}
		return idx, err
	}); err != nil {
		return nil, err
	}
	if evals, err = filterList(filter, evals); err != nil {
		return nil, err
	}
	out, next := page.apply(evals)
	if next != "" {
		w.Header().Set("X-Nomad-NextToken", next)
	}
	return out, nil
}

// evalPage is ?per_page= and ?next_token= on the evaluation list, as
// Nomad pages it: newest first, per_page at a time; the token names the
// first evaluation of the next page ("<CreateIndex>.<ID>"), so a page
// still starts in the right place when evaluations came or went since.
type evalPage struct {
	perPage int
	token   string
}

func parsePage(q url.Values) (evalPage, error) {
	var p evalPage
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p, structs.BadRequest("Invalid per_page %q", v)
		}
		p.perPage = n
	}
	p.token = q.Get("next_token")
	if p.token != "" {
		if _, _, ok := splitEvalToken(p.token); !ok {
			return p, structs.BadRequest("Invalid next_token %q", p.token)
		}
	}
	return p, nil
}

func evalToken(e *structs.Evaluation) string {
	return strconv.FormatUint(e.CreateIndex, 10) + "." + e.ID
}

func splitEvalToken(t string) (uint64, string, bool) {
	i, id, ok := strings.Cut(t, ".")
	if !ok {
		return 0, "", false
	}
	n, err := strconv.ParseUint(i, 10, 64)
	return n, id, err == nil
}

// apply returns the page of evals (newest first, ties by ID) and the
// token of the next page, "" at the end.
func (p evalPage) apply(evals []*structs.Evaluation) ([]*structs.Evaluation, string) {
	sort.SliceStable(evals, func(i, j int) bool {
		if evals[i].CreateIndex != evals[j].CreateIndex {
			return evals[i].CreateIndex > evals[j].CreateIndex
		}
		return evals[i].ID < evals[j].ID
	})
	if p.token != "" {
		idx, id, _ := splitEvalToken(p.token)
		start := sort.Search(len(evals), func(i int) bool {
			e := evals[i]
			return e.CreateIndex < idx || e.CreateIndex == idx && e.ID >= id
		})
		evals = evals[start:]
	}
	out := []*structs.Evaluation{}
	next := ""
	for _, e := range evals {
		if p.perPage > 0 && len(out) == p.perPage {
			next = evalToken(e)
			break
		}
		out = append(out, e)
	}
	return out, next
}
