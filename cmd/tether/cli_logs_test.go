package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// TestRetryable runs real responses through the official client and
// checks which of its errors a follow reconnects after.
func TestRetryable(t *testing.T) {
	cases := []struct {
		name string
		code int
		body string
		want bool
	}{
		{"no path to node while the node redials", http.StatusNotFound, "No path to node", true},
		{"server error", http.StatusInternalServerError, "No cluster leader", true},
		{"too many requests", http.StatusTooManyRequests, "Too many requests", true},
		{"unknown allocation", http.StatusNotFound, "Unknown allocation", false},
		{"permission denied", http.StatusForbidden, "Permission denied", false},
		{"bad request", http.StatusBadRequest, "invalid origin", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				fmt.Fprintln(w, tc.body)
			}))
			defer srv.Close()
			c, err := nomad.NewClient(&nomad.Config{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.AllocFS().List(&nomad.Allocation{ID: "a", NodeID: "n"}, "alloc/logs", nil)
			if err == nil {
				t.Fatal("no error from a failed call")
			}
			if got := retryable(err); got != tc.want {
				t.Fatalf("retryable(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		addr := srv.URL
		srv.Close()
		c, err := nomad.NewClient(&nomad.Config{Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.AllocFS().List(&nomad.Allocation{ID: "a", NodeID: "n"}, "alloc/logs", nil)
		if err == nil || !retryable(err) {
			t.Fatalf("retryable(%v) = false, want true", err)
		}
	})
	t.Run("output cannot be written", func(t *testing.T) {
		if retryable(fatalError{errors.New("writing output: broken pipe")}) {
			t.Fatal("a fatal error is retryable")
		}
	})
}
