package agent

import (
	"net/http/httptest"
	"testing"
)

func TestIsPretty(t *testing.T) {
	cases := []struct {
		query string
		want  bool
	}{
		{"", false},
		{"node_id=abc", false},
		{"pretty", true},
		{"pretty=1", true},
		{"pretty=true&node_id=x", true},
		{"pretty=0", false},
		{"node_id=x&pretty=", true},
		{"%70retty=1", true}, // an encoded key is still ?pretty
		{"prettyish=1", false},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/v1/client/stats?"+tc.query, nil)
		if got := isPretty(r); got != tc.want {
			t.Errorf("isPretty(%q) = %v; want %v", tc.query, got, tc.want)
		}
	}
}
