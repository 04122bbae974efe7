package agent

import (
	"fmt"
	"net/url"
	"testing"

	"tether/structs"
)

// TestEvalPage: the evaluation list pages newest first, and a token
// still finds its place when the evaluation it named is gone.
func TestEvalPage(t *testing.T) {
	var evals []*structs.Evaluation
	for i := 1; i <= 5; i++ {
		evals = append(evals, &structs.Evaluation{ID: fmt.Sprintf("e%d", i), CreateIndex: uint64(i * 10)})
	}
	ids := func(es []*structs.Evaluation) string {
		s := ""
		for _, e := range es {
			s += e.ID
		}
		return s
	}
	cases := []struct {
		name, query, want, next string
	}{
		{"all", "", "e5e4e3e2e1", ""},
		{"first page", "per_page=2", "e5e4", "30.e3"},
		{"second page", "per_page=2&next_token=30.e3", "e3e2", "10.e1"},
		{"last page", "per_page=2&next_token=10.e1", "e1", ""},
		{"token of a deleted eval", "per_page=2&next_token=35.gone", "e3e2", "10.e1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			p, err := parsePage(q)
			if err != nil {
				t.Fatal(err)
			}
			out, next := p.apply(append([]*structs.Evaluation(nil), evals...))
			if ids(out) != tc.want || next != tc.next {
				t.Fatalf("page %s, next %q; want %s, %q", ids(out), next, tc.want, tc.next)
			}
		})
	}
	for _, bad := range []string{"per_page=-1", "per_page=x", "next_token=abc", "next_token=x.e1"} {
		q, _ := url.ParseQuery(bad)
		if _, err := parsePage(q); structs.StatusCode(err) != 400 {
			t.Errorf("%s: %v; want a 400", bad, err)
		}
	}
}
