package agent

import (
	"net/http"
	"strings"

	"tether/ui"
)

// withUI puts the web page (package ui) in front of the API h: every
// /ui/... path answers the page, on servers and node agents alike (a
// node-only agent serves it itself, not through its server), and a
// browser's GET / is sent to /ui/. Any other request to / (an API client,
// a health probe) gets what it always got. With ui { enabled = false }
// the API is all there is.
func (a *Agent) withUI(h http.Handler) http.Handler {
	if !a.cfg.UI.IsEnabled() {
		return h
	}
	page := ui.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/ui" || strings.HasPrefix(p, ui.Prefix):
			page.ServeHTTP(w, r)
		case p == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) && acceptsHTML(r):
			http.Redirect(w, r, ui.Prefix, http.StatusTemporaryRedirect)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// acceptsHTML reports whether the request asks for HTML, as a browser's
// navigation does (Accept: text/html,...); curl and the Go client do not.
func acceptsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/html") {
			return true
		}
	}
	return false
}
