package ui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHandler checks what each kind of path answers: the page for every
// place in it, this build's assets cached for good, nothing else.
func TestHandler(t *testing.T) {
	h, err := newHandler(embedded)
	if err != nil {
		t.Fatal(err)
	}
	asset := "/ui/assets/" + h.version + "/"
	for _, tc := range []struct {
		name, method, path string
		hdr                []string
		code               int
		ctype, cache, body string
	}{
		{name: "no slash", path: "/ui", code: http.StatusMovedPermanently},
		{name: "root", path: "/ui/", code: 200, ctype: "text/html", cache: "no-cache", body: asset + "app.js"},
		{name: "nomad address", path: "/ui/allocations/5eb0c1d2/web/fs/alloc/logs", code: 200, ctype: "text/html", cache: "no-cache", body: `<main id="main"`},
		{name: "unknown address", path: "/ui/no/such/thing", code: 200, ctype: "text/html", body: "app.js"},
		{name: "head", method: "HEAD", path: "/ui/clients", code: 200, ctype: "text/html"},
		{name: "script", path: asset + "app.js", code: 200, ctype: "text/javascript", cache: "immutable", body: "import"},
		{name: "vendored", path: asset + "vendor/uplot/uPlot.esm.js", code: 200, ctype: "text/javascript", cache: "immutable", body: "uPlot"},
		{name: "style", path: asset + "app.css", code: 200, ctype: "text/css"},
		{name: "revalidated", path: asset + "app.js", hdr: []string{"If-None-Match", `"` + h.version + `"`}, code: http.StatusNotModified},
		{name: "other build", path: "/ui/assets/0123456789abcdef/app.js", code: 404},
		{name: "no name", path: asset, code: 404},
		{name: "index as asset", path: asset + "index.html", code: 404},
		{name: "missing asset", path: asset + "nope.js", code: 404},
		{name: "escape", path: asset + "../ui.go", code: 404},
		{name: "post", method: "POST", path: "/ui/clients", code: http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req := httptest.NewRequest(method, "http://agent"+tc.path, nil)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("%s %s = %d; want %d", method, tc.path, rec.Code, tc.code)
			}
			if got := rec.Header().Get("Content-Type"); !strings.HasPrefix(got, tc.ctype) {
				t.Errorf("Content-Type = %q; want %q", got, tc.ctype)
			}
			if got := rec.Header().Get("Cache-Control"); !strings.Contains(got, tc.cache) {
				t.Errorf("Cache-Control = %q; want it to contain %q", got, tc.cache)
			}
			if body := rec.Body.String(); !strings.Contains(body, tc.body) {
				t.Errorf("body does not contain %q", tc.body)
			}
			if tc.ctype == "text/html" && rec.Header().Get("Content-Security-Policy") == "" {
				t.Error("the page has no Content-Security-Policy")
			}
		})
	}
}
