package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"tether/rpc"
	"tether/structs"
)

// GET /v1/agent/pprof/<profile> answers a runtime profile of an agent, as
// Nomad does: agent:write, and with ACLs off only where enable_debug is
// set (else 403, Nomad's "Permission denied"); node_id and server_id
// forward it like the monitor. The profile's bytes are streamed as they
// are written, and a CPU profile or trace stops when the caller goes away.

// profiles are the profiles served: cmdline, profile (CPU) and trace,
// and the runtime/pprof lookups.
var profiles = map[string]bool{
	"cmdline": true, "profile": true, "trace": true, "goroutine": true, "heap": true,
	"allocs": true, "block": true, "mutex": true, "threadcreate": true,
}

// agentPprof serves GET /v1/agent/pprof/{profile}.
func (a *Agent) agentPprof(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	q := r.URL.Query()
	req := structs.ProfileRequest{
		AgentTarget:  structs.AgentTarget{NodeID: q.Get("node_id"), ServerID: q.Get("server_id")},
		Profile:      mux.Vars(r)["profile"],
		QueryOptions: queryOptionsOf(r, q),
	}
	var err error
	if req.Seconds, err = queryInt(q, "seconds"); err != nil {
		return nil, err
	}
	if req.Debug, err = queryInt(q, "debug"); err != nil {
		return nil, err
	}
	if req.GC, err = queryInt(q, "gc"); err != nil {
		return nil, err
	}
	if err := checkProfileRequest(&req); err != nil {
		return nil, err
	}
	if err := a.streams.acquire(); err != nil {
		return nil, err
	}
	defer a.streams.release()
	st, err := a.openAgentStream(r.Context(), structs.MethodAgentProfile, &req)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var hdr structs.ProfileHeader
	if err := st.Recv(&hdr); err != nil {
		return nil, err
	}
	h := w.Header()
	h.Set("Content-Type", hdr.ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", hdr.Filename))
	w.WriteHeader(http.StatusOK)
	// The caller learns at once that the profile runs (a CPU profile or
	// trace sends nothing for a while).
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for {
		m, err := st.RecvMsg()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			// A profile cut short must not look complete.
			a.logger.Named("http").Debug("profile stream failed", "profile", req.Profile, "error", err)
			panic(http.ErrAbortHandler)
		}
		if m.Raw() {
			err = rpc.WithBatch(r.Context(), func() error {
				if _, err := w.Write(m.Bytes()); err != nil {
					return err
				}
				return rc.Flush()
			})
		}
		m.Release()
		if err != nil {
			return nil, nil // the caller went away; the deferred Close stops the profile
		}
	}
}

// queryInt parses an optional integer parameter (0 when absent).
func queryInt(q url.Values, name string) (int, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, structs.BadRequest("failed to parse %s parameter %q as an integer", name, v)
	}
	return n, nil
}

// checkProfileRequest refuses an unknown profile (404, as Nomad) and
// seconds outside [0, MaxProfileSeconds] (400).
func checkProfileRequest(req *structs.ProfileRequest) error {
	if !profiles[req.Profile] {
		return structs.NotFound("unknown pprof profile %q; want one of cmdline, profile, trace, goroutine, heap, allocs, block, mutex, threadcreate", req.Profile)
	}
	if req.Seconds < 0 || req.Seconds > structs.MaxProfileSeconds {
		return structs.BadRequest("seconds must be between 0 and %d, got %d", structs.MaxProfileSeconds, req.Seconds)
	}
	return nil
}

// serveProfile answers a profile of this agent: a ProfileHeader once it
// has started, then its bytes as raw messages.
func (a *Agent) serveProfile(ctx context.Context, st *rpc.Stream, req *structs.ProfileRequest) error {
	aclObj, err := a.agentACL(ctx, req.AuthToken)
	if err != nil {
		return err
	}
	if !aclObj.AllowAgentWrite() {
		return structs.ErrPermissionDenied
	}
	if !a.cfg.ACL.Enabled && !a.cfg.EnableDebug {
		// Nomad: with ACLs off, profiles need enable_debug.
		return structs.ErrPermissionDenied
	}
	if err := checkProfileRequest(req); err != nil {
		return err
	}
	w := &profileWriter{st: st}
	binary := structs.ProfileHeader{ContentType: "application/octet-stream", Filename: req.Profile}
	text := structs.ProfileHeader{ContentType: "text/plain; charset=utf-8", Filename: req.Profile}
	secs := time.Duration(max(req.Seconds, 1)) * time.Second
	switch req.Profile {
	case "cmdline":
		if err := w.start(func() error { return nil }, text); err != nil {
			return err
		}
		_, _ = io.WriteString(w, strings.Join(os.Args, "\x00"))
	case "profile":
		if err := w.start(func() error { return pprof.StartCPUProfile(w) }, binary); err != nil {
			return err
		}
		waitOrDone(ctx, secs)
		pprof.StopCPUProfile()
	case "trace":
		if err := w.start(func() error { return trace.Start(w) }, binary); err != nil {
			return err
		}
		waitOrDone(ctx, secs)
		trace.Stop()
	default:
		p := pprof.Lookup(req.Profile)
		if p == nil {
			return structs.NotFound("unknown pprof profile %q", req.Profile)
		}
		if req.GC > 0 && req.Profile == "heap" {
			runtime.GC()
		}
		hdr := binary
		if req.Debug > 0 {
			hdr = text
		}
		if err := w.start(func() error { return nil }, hdr); err != nil {
			return err
		}
		_ = p.WriteTo(w, req.Debug)
	}
	return w.flush()
}

// waitOrDone waits d or until ctx ends.
func waitOrDone(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// profileChunk is the most bytes a profile message carries.
const profileChunk = 64 << 10

// profileWriter sends what a profiler writes as raw stream messages of up
// to profileChunk bytes. The runtime's CPU profiler writes from a
// goroutine of its own, so writes are serialised, and none is sent before
// the header.
type profileWriter struct {
	mu      sync.Mutex
	st      *rpc.Stream
	buf     []byte
	started bool // the header went: bytes may follow
	err     error
}

// start runs begin and, when it succeeds, sends hdr; what the profiler
// writes meanwhile is held until the header has gone.
func (w *profileWriter) start(begin func() error, hdr structs.ProfileHeader) error {
	if err := begin(); err != nil {
		return structs.NewError(http.StatusInternalServerError, "starting profile: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err = w.st.Send(&hdr); w.err == nil {
		w.started = true
		w.sendFull()
	}
	return w.err
}

// sendFull sends the full chunks buffered; w.mu is held.
func (w *profileWriter) sendFull() {
	for len(w.buf) >= profileChunk && w.err == nil {
		w.err = w.st.SendRaw(w.buf[:profileChunk])
		w.buf = append(w.buf[:0], w.buf[profileChunk:]...)
	}
}

// Write buffers p and sends full chunks. After a failed send (the caller
// went away) it drops what it is given.
func (w *profileWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	if w.started {
		w.sendFull()
	}
	return len(p), w.err
}

// flush sends what is buffered.
func (w *profileWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil && w.started && len(w.buf) > 0 {
		w.err = w.st.SendRaw(w.buf)
		w.buf = w.buf[:0]
	}
	return w.err
}
