// Package ui is Tether's web page for the client API: plain ES modules and
// a vendored uPlot, embedded in the binary, with no build step.
//
// Handler serves it under /ui/. The assets live under a path that names
// the build (/ui/assets/<hash>/...), so they are cached for good and a
// new binary's page never mixes with an old one's scripts; every other
// /ui/... path answers index.html, revalidated on each load, and the page
// routes on the history API (Nomad UI's addresses, no '#'). The page uses
// only the public HTTP API.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var embedded embed.FS

// Prefix is the path the page is served under.
const Prefix = "/ui/"

// contentSecurityPolicy keeps the page to its own origin: scripts and
// styles from the embedded assets only (uPlot sets element styles from
// script, which CSP allows), API calls to the same agent.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// handler serves the embedded page.
type handler struct {
	assets  fs.FS  // the assets folder
	version string // hash of every asset, the path segment after /ui/assets/
	index   []byte // index.html with the version filled in
	etag    string // of index
	modTime time.Time
}

// Handler returns the page's handler, for every path under Prefix (and
// Prefix without its slash, which it redirects).
func Handler() http.Handler {
	h, err := newHandler(embedded)
	if err != nil {
		panic("ui: embedded assets: " + err.Error()) // the build embeds them; not a runtime condition
	}
	return h
}

func newHandler(root fs.FS) (*handler, error) {
	assets, err := fs.Sub(root, "assets")
	if err != nil {
		return nil, err
	}
	sum := sha256.New()
	err = fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		sum.Write([]byte(p))
		sum.Write([]byte{0})
		sum.Write(b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	version := hex.EncodeToString(sum.Sum(nil))[:16]
	index, err := fs.ReadFile(assets, "index.html")
	if err != nil {
		return nil, err
	}
	index = bytes.ReplaceAll(index, []byte("{{VERSION}}"), []byte(version))
	return &handler{assets: assets, version: version, index: index, etag: `"` + version + `"`}, nil
}

// ServeHTTP answers GET and HEAD: an asset of this build, or the page.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Invalid method", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == strings.TrimSuffix(Prefix, "/") {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	rest, ok := strings.CutPrefix(p, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	if asset, ok := strings.CutPrefix(rest, "assets/"); ok {
		h.serveAsset(w, r, asset)
		return
	}
	// Any other path is a place in the page (history routing).
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("ETag", h.etag)
	http.ServeContent(w, r, "index.html", h.modTime, bytes.NewReader(h.index))
}

// serveAsset serves assets/<version>/<name>: immutable, as the version
// names its content. A request for another build's version is a 404, so
// a page loaded before an upgrade reloads rather than mixes.
func (h *handler) serveAsset(w http.ResponseWriter, r *http.Request, rest string) {
	version, name, ok := strings.Cut(rest, "/")
	if !ok || version != h.version || name == "" || name == "index.html" || !fs.ValidPath(name) {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(h.assets, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	if ctype := mime.TypeByExtension(path.Ext(name)); ctype != "" {
		hdr.Set("Content-Type", ctype)
	}
	hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	hdr.Set("ETag", `"`+h.version+`"`)
	http.ServeContent(w, r, name, h.modTime, bytes.NewReader(b))
}
