package agent

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

func TestParseTTL(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    time.Duration
		wantErr bool
	}{
		{``, 0, false},
		{`null`, 0, false},
		{`""`, 0, false},
		{`"10m"`, 10 * time.Minute, false},
		{`"1h30m"`, 90 * time.Minute, false},
		{`600000000000`, 10 * time.Minute, false},
		{`"ten minutes"`, 0, true},
		{`true`, 0, true},
	} {
		got, err := parseTTL(json.RawMessage(tc.raw))
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("parseTTL(%s) = %v, %v; want %v, error %v", tc.raw, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRequestToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		url    string
		header [2]string
		want   string
	}{
		{"x-nomad-token", "/v1/x", [2]string{"X-Nomad-Token", "abc"}, "abc"},
		{"bearer", "/v1/x", [2]string{"Authorization", "Bearer  abc def"}, "abc"},
		{"basic is not a token", "/v1/x", [2]string{"Authorization", "Basic abc"}, ""},
		{"query token ignored", "/v1/x?token=abc&X-Nomad-Token=abc", [2]string{}, ""},
	} {
		r := httptest.NewRequest("GET", tc.url, nil)
		if tc.header[0] != "" {
			r.Header.Set(tc.header[0], tc.header[1])
		}
		if got := requestToken(r); got != tc.want {
			t.Errorf("%s: requestToken = %q; want %q", tc.name, got, tc.want)
		}
	}
}
