package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/mux"
)

// TestRoutes checks that exact paths served from the map answer exactly
// as gorilla/mux would: the first of overlapping routes wins, variables
// still reach their handlers, and anything else falls through.
func TestRoutes(t *testing.T) {
	rt := &routes{mux: mux.NewRouter(), exact: make(map[string]http.Handler)}
	named := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(name + ":" + mux.Vars(r)["id"]))
		})
	}
	rt.handle("/v1/client/stats", named("stats"))
	rt.handle("/v1/acl/token/self", named("self"))
	rt.handle("/v1/acl/token/{id}", named("token"))
	rt.handle("/v1/client/stats", named("second")) // never reached
	rt.mux.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	tests := []struct {
		method, target string
		code           int
		body           string
	}{
		{"GET", "/v1/client/stats", 200, "stats:"},
		{"POST", "/v1/client/stats?node_id=x", 200, "stats:"},
		{"GET", "/v1/client/%73tats", 200, "stats:"}, // decoded path, as gorilla/mux matches
		{"GET", "/v1/acl/token/self", 200, "self:"},
		{"GET", "/v1/acl/token/abc", 200, "token:abc"},
		{"GET", "/v1/client/stats/", 404, ""},
		{"GET", "/v1/client/stat", 404, ""},
		{"GET", "/v1//client/stats", 301, ""}, // gorilla/mux cleans the path
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			w := httptest.NewRecorder()
			rt.ServeHTTP(w, httptest.NewRequest(tt.method, tt.target, nil))
			if w.Code != tt.code || (tt.body != "" && w.Body.String() != tt.body) {
				t.Fatalf("got %d %q, want %d %q", w.Code, w.Body.String(), tt.code, tt.body)
			}
		})
	}
}
