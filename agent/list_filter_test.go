package agent

import (
	"net/url"
	"strings"
	"testing"

	"tether/structs"
)

func TestListFilter(t *testing.T) {
	stubs := []*structs.JobListStub{
		{ID: "web", Type: "service", Status: "running", Priority: 50},
		{ID: "batch-1", Type: "batch", Status: "dead", Priority: 70},
		{ID: "batch-2", Type: "batch", Status: "running", Priority: 70},
	}
	cases := []struct {
		filter string
		want   string // IDs matched, comma-separated
		err    string // a 400 naming it
	}{
		{"", "web,batch-1,batch-2", ""},
		{`Type == "batch"`, "batch-1,batch-2", ""},
		{`Type == "batch" and Status == "running"`, "batch-2", ""},
		{`ID matches "^b" and Priority == 70`, "batch-1,batch-2", ""},
		{`"web" in ID or Status != "running"`, "web,batch-1", ""},
		{`Status == "pending"`, "", ""},
		{`Type ==`, "", "failed to read filter expression"},
		{`Nope == "x"`, "", "failed to apply filter expression"},
		{strings.Repeat("a", maxFilterLen+1), "", "longer than"},
	}
	for _, tc := range cases {
		f, err := parseFilter(url.Values{"filter": {tc.filter}})
		var got []*structs.JobListStub
		if err == nil {
			got, err = filterList(f, stubs)
		}
		if tc.err != "" {
			if structs.StatusCode(err) != 400 || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("filter %.40q: %v; want a 400 naming %q", tc.filter, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("filter %q: %v", tc.filter, err)
		}
		var ids []string
		for _, s := range got {
			ids = append(ids, s.ID)
		}
		if strings.Join(ids, ",") != tc.want || got == nil {
			t.Errorf("filter %q = %v; want [%s]", tc.filter, ids, tc.want)
		}
	}
}
