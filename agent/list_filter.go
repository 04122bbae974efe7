package agent

import (
	"net/url"

	"github.com/hashicorp/go-bexpr"

	"tether/structs"
)

// Lists take ?filter=, as Nomad's do: a go-bexpr expression (`Status ==
// "running" and Meta.team == "web"`) over each object of the list, by
// its fields' names as the JSON shows them; only the objects it matches
// are answered. It applies before paging, after the blocking query (the
// index stays the table's).

// maxFilterLen bounds an expression, and maxFilterSteps the parser's
// work on it (go-bexpr's WithMaxExpressions counts parser steps).
const (
	maxFilterLen   = 4096
	maxFilterSteps = 1 << 18
)

// listFilter is a parsed ?filter=; nil matches everything.
type listFilter struct {
	ev *bexpr.Evaluator
}

// parseFilter reads ?filter= (nil when absent).
func parseFilter(q url.Values) (*listFilter, error) {
	v := q.Get("filter")
	if v == "" {
		return nil, nil
	}
	if len(v) > maxFilterLen {
		return nil, structs.BadRequest("failed to read filter expression: longer than %d bytes", maxFilterLen)
	}
	ev, err := bexpr.CreateEvaluator(v, bexpr.WithMaxExpressions(maxFilterSteps))
	if err != nil {
		return nil, structs.BadRequest("failed to read filter expression: %v", err)
	}
	return &listFilter{ev: ev}, nil
}

// filterList returns the objects of in that f matches (in itself when f
// is nil). An expression that cannot be applied to the list's objects (a
// field they do not have) is the caller's error.
func filterList[T any](f *listFilter, in []T) ([]T, error) {
	if f == nil {
		return in, nil
	}
	out := make([]T, 0, len(in))
	for _, v := range in {
		ok, err := f.ev.Evaluate(v)
		if err != nil {
			return nil, structs.BadRequest("failed to apply filter expression: %v", err)
		}
		if ok {
			out = append(out, v)
		}
	}
	return out, nil
}
