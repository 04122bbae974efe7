package structs

import (
	"fmt"
	"testing"
	"time"
)

// remote mimics the error an RPC hop rebuilds: code and message only.
type remote struct {
	code int
	msg  string
}

func (r *remote) Error() string   { return r.msg }
func (r *remote) StatusCode() int { return r.code }

func TestRetryAfter(t *testing.T) {
	e := TooManyRequests(1500*time.Millisecond, "too many registrations on %s", "s1")
	cases := []struct {
		name string
		err  error
		want time.Duration
		ok   bool
	}{
		{"typed", e, 1500 * time.Millisecond, true},
		{"wrapped", fmt.Errorf("register: %w", e), 1500 * time.Millisecond, true},
		{"after a hop", &remote{e.Code, e.Message}, 1500 * time.Millisecond, true},
		{"tiny hint is a millisecond", TooManyRequests(0, "x"), time.Millisecond, true},
		{"other code", &remote{503, e.Message}, 0, false},
		{"429 without hint", NewError(429, "too many streams"), 0, false},
		{"nil", nil, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := RetryAfter(tc.err)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("RetryAfter = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
