package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWithUI checks which requests the page takes: /ui/... always, / only
// from a browser, and nothing with ui { enabled = false }.
func TestWithUI(t *testing.T) {
	off := false
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name     string
		enabled  *bool
		method   string
		path     string
		accept   string
		code     int
		location string
	}{
		{name: "browser at root", method: "GET", path: "/", accept: "text/html,application/xhtml+xml,*/*;q=0.8", code: http.StatusTemporaryRedirect, location: "/ui/"},
		{name: "curl at root", method: "GET", path: "/", accept: "*/*", code: http.StatusTeapot},
		{name: "post at root", method: "POST", path: "/", accept: "text/html", code: http.StatusTeapot},
		{name: "page", method: "GET", path: "/ui/clients", code: http.StatusOK},
		{name: "page without slash", method: "GET", path: "/ui", code: http.StatusMovedPermanently, location: "/ui/"},
		{name: "api", method: "GET", path: "/v1/nodes", accept: "text/html", code: http.StatusTeapot},
		{name: "not a ui path", method: "GET", path: "/uix", code: http.StatusTeapot},
		{name: "disabled page", enabled: &off, method: "GET", path: "/ui/clients", code: http.StatusTeapot},
		{name: "disabled root", enabled: &off, method: "GET", path: "/", accept: "text/html", code: http.StatusTeapot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{cfg: &Config{UI: UIConfig{Enabled: tc.enabled}}}
			req := httptest.NewRequest(tc.method, "http://agent"+tc.path, nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			rec := httptest.NewRecorder()
			a.withUI(api).ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("%s %s = %d; want %d", tc.method, tc.path, rec.Code, tc.code)
			}
			if got := rec.Header().Get("Location"); got != tc.location {
				t.Errorf("Location = %q; want %q", got, tc.location)
			}
		})
	}
}

// TestLoadConfig_UI reads the ui block: enabled, and Nomad's other keys
// accepted with a warning.
func TestLoadConfig_UI(t *testing.T) {
	for _, tc := range []struct {
		hcl     string
		enabled bool
		warn    string
	}{
		{hcl: ``, enabled: true},
		{hcl: `ui { enabled = false }`, enabled: false},
		{hcl: `ui { enabled = true }`, enabled: true},
		{hcl: `ui { label { text = "prod" } }`, enabled: true, warn: "label"},
	} {
		cfg, warnings := mustLoad(t, writeConfig(t, "a.hcl", tc.hcl))
		merged := DefaultConfig().Merge(cfg)
		if got := merged.UI.IsEnabled(); got != tc.enabled {
			t.Errorf("%q: UI enabled = %v; want %v", tc.hcl, got, tc.enabled)
		}
		if tc.warn != "" && !strings.Contains(strings.Join(warnings, "\n"), tc.warn) {
			t.Errorf("%q: warnings %q; want one naming %q", tc.hcl, warnings, tc.warn)
		}
	}
	// A later file's enabled wins, and the copy does not share it.
	c := DefaultConfig().Merge(mustLoadHCL(t, `ui { enabled = false }`)).Merge(mustLoadHCL(t, `ui { enabled = true }`))
	if !c.UI.IsEnabled() {
		t.Error("ui enabled = false then true: disabled; want enabled")
	}
	cp := c.Copy()
	*cp.UI.Enabled = false
	if !c.UI.IsEnabled() {
		t.Error("Copy shares UI.Enabled")
	}
}

func mustLoadHCL(t *testing.T, hcl string) *Config {
	t.Helper()
	cfg, _ := mustLoad(t, writeConfig(t, "a.hcl", hcl))
	return cfg
}

func ptrTo[T any](v T) *T { return &v }
