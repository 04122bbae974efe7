package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"

	"tether/internal/atomicfile"
	"tether/rpc"
	"tether/structs"
)

// defaultStaticMeta is injected into every node's static metadata when the
// config does not set the key, as Nomad does.
var defaultStaticMeta = map[string]string{
	"connect.sidecar_image":     "docker.io/envoyproxy/envoy:v${NOMAD_envoy_version}",
	"connect.gateway_image":     "docker.io/envoyproxy/envoy:v${NOMAD_envoy_version}",
	"connect.log_level":         "info",
	"connect.proxy_concurrency": "1",
}

// metaStore holds the node's static metadata (from config) and dynamic
// metadata (from the API, persisted in the state dir). A nil dynamic value
// on a static key is a tombstone that masks the static value.
type metaStore struct {
	path string

	mu      sync.Mutex
	static  map[string]string
	dynamic map[string]*string
	ver     uint64 // bumped whenever dynamic changes, under mu

	// snap is the response for the current state (Version ver+1), made
	// by read once per change; under mu.
	snap *structs.NodeMetaResponse

	// The JSON of the metadata at response Version jsonVer (ver+1 when
	// it was made), for jsonOf; under mu.
	jsonVer  uint64
	jsonBody []byte

	// Group commit: applies bump gen and wait until a save covers it, so
	// one fsync serves every apply that arrived while the last one ran.
	saveMu  sync.Mutex // held while writing the file
	gen     uint64     // bumped by each apply, under mu
	saved   uint64     // highest gen on disk, under mu
	saveErr error      // error of the last save, under mu
}

// newMetaStore loads dynamic metadata from path (if present) over static.
// Tombstones for keys that are no longer static are dropped and the cleaned
// map is saved back.
func newMetaStore(path string, static map[string]string) (*metaStore, error) {
	m := &metaStore{path: path, static: make(map[string]string), dynamic: make(map[string]*string)}
	for k, v := range defaultStaticMeta {
		m.static[k] = v
	}
	for k, v := range static {
		m.static[k] = v
	}
	if err := atomicfile.RemoveTemps(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("reading dynamic metadata: %w", err)
	}
	var dyn map[string]*string
	if err := json.Unmarshal(b, &dyn); err != nil {
		return nil, fmt.Errorf("decoding dynamic metadata: %w", err)
	}
	cleaned := false
	for k, v := range dyn {
		if _, isStatic := m.static[k]; v == nil && !isStatic {
			delete(dyn, k)
			cleaned = true
		}
	}
	if dyn != nil {
		m.dynamic = dyn
	}
	if cleaned {
		if err := m.save(m.dynamic); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// read returns the current metadata.
//
// The response is built once per change and shared by every read until
// the next: callers must not modify it (its maps are shared).
func (m *metaStore) read() *structs.NodeMetaResponse {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snap == nil || m.snap.Version != m.ver+1 {
		m.snap = m.responseLocked()
	}
	return m.snap
}

// readJSON returns the current metadata as the HTTP API shows it.
func (m *metaStore) readJSON() ([]byte, error) { return m.jsonOf(m.read()) }

// jsonOf encodes r as the HTTP API shows it, once per change: a response
// this store made for its current state reuses the bytes of the last one
// (reads come far more often than changes). The bytes are shared and must
// not be modified.
func (m *metaStore) jsonOf(r *structs.NodeMetaResponse) ([]byte, error) {
	m.mu.Lock()
	if r.Version != 0 && r.Version == m.jsonVer && m.jsonBody != nil {
		b := m.jsonBody
		m.mu.Unlock()
		return b, nil
	}
	m.mu.Unlock()
	b, err := rpc.EncodeJSON(r)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if r.Version != 0 && r.Version == m.ver+1 { // still current
		m.jsonVer, m.jsonBody = r.Version, b
	}
	m.mu.Unlock()
	return b, nil
}

func (m *metaStore) merged() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mergedLocked()
}

// apply validates every key of update, then merges it into the dynamic
// metadata and persists it. Nothing is applied if any key is invalid or the
// write fails.
func (m *metaStore) apply(update map[string]*string) (*structs.NodeMetaResponse, error) {
	if len(update) == 0 {
		return nil, structs.BadRequest("missing required Meta object")
	}
	keys := make([]string, 0, len(update))
	for k := range update {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := structs.ValidateMetaKey(k); err != nil {
			return nil, err
		}
	}

	m.mu.Lock()
	next := make(map[string]*string, len(m.dynamic)+len(update))
	for k, v := range m.dynamic {
		next[k] = v
	}
	for k, v := range update {
		if v == nil {
			if _, isStatic := m.static[k]; isStatic {
				next[k] = nil
			} else {
				delete(next, k)
			}
			continue
		}
		s := *v
		next[k] = &s
	}
	prev := m.dynamic
	m.dynamic = next
	m.ver++
	m.gen++
	mine := m.gen
	resp := m.responseLocked()
	m.mu.Unlock()

	if err := m.commit(mine); err != nil {
		// Not durable: undo this update unless a later one built on it.
		m.mu.Lock()
		if m.gen == mine {
			m.dynamic = prev
			m.ver++
		}
		m.mu.Unlock()
		return nil, err
	}
	return resp, nil
}

// commit returns once the dynamic metadata as of generation gen is on
// disk. Whoever holds saveMu writes the newest state, covering every
// apply that came before it.
func (m *metaStore) commit(gen uint64) error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	if m.saved >= gen {
		err := m.saveErr
		m.mu.Unlock()
		return err
	}
	snapshot := make(map[string]*string, len(m.dynamic))
	for k, v := range m.dynamic {
		snapshot[k] = v
	}
	upTo := m.gen
	m.mu.Unlock()

	err := m.save(snapshot)
	m.mu.Lock()
	m.saved, m.saveErr = upTo, err
	m.mu.Unlock()
	return err
}

func (m *metaStore) save(dyn map[string]*string) error {
	b, err := json.Marshal(dyn)
	if err != nil {
		return fmt.Errorf("encoding dynamic metadata: %w", err)
	}
	if err := atomicfile.WriteFile(m.path, b, 0o600); err != nil {
		return fmt.Errorf("saving dynamic metadata: %w", err)
	}
	return nil
}

func (m *metaStore) mergedLocked() map[string]string {
	out := make(map[string]string, len(m.static)+len(m.dynamic))
	for k, v := range m.static {
		out[k] = v
	}
	for k, v := range m.dynamic {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	return out
}

func (m *metaStore) responseLocked() *structs.NodeMetaResponse {
	resp := &structs.NodeMetaResponse{
		Version: m.ver + 1,
		Meta:    m.mergedLocked(),
		Static:  make(map[string]string, len(m.static)),
		Dynamic: make(map[string]*string, len(m.dynamic)),
	}
	for k, v := range m.static {
		resp.Static[k] = v
	}
	for k, v := range m.dynamic {
		if v == nil {
			resp.Dynamic[k] = nil
		} else {
			s := *v
			resp.Dynamic[k] = &s
		}
	}
	return resp
}
