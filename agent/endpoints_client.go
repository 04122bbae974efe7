package agent

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"

	"tether/server"
	"tether/structs"
)

// clientStats serves /v1/client/stats (any method, as Nomad).
func (a *Agent) clientStats(w http.ResponseWriter, r *http.Request) (any, error) {
	req := nodeRequest(r)
	return a.backend.routeJSON(r.Context(), server.Target{NodeID: req.NodeID}, structs.MethodClientStats, &req)
}

// clientMetadata serves GET and POST /v1/client/metadata.
func (a *Agent) clientMetadata(w http.ResponseWriter, r *http.Request) (any, error) {
	switch r.Method {
	case http.MethodGet:
		req := nodeRequest(r)
		return a.backend.routeJSON(r.Context(), server.Target{NodeID: req.NodeID}, structs.MethodNodeMetaRead, &req)
	case http.MethodPost:
		req, err := decodeMetaApply(r)
		if err != nil {
			return nil, err
		}
		return a.backend.routeJSON(r.Context(), server.Target{NodeID: req.NodeID}, structs.MethodNodeMetaApply, req)
	default:
		return nil, structs.ErrInvalidMethod
	}
}

// decodeMetaApply parses a metadata update: values must be strings or
// null, keys dotted identifiers; the first offence is named and nothing is
// applied. ?node_id overrides the body's NodeID.
func decodeMetaApply(r *http.Request) (*structs.NodeMetaApplyRequest, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var raw struct {
		NodeID string
		Meta   map[string]json.RawMessage
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, structs.BadRequest("%v", err)
	}
	if len(raw.Meta) == 0 {
		return nil, structs.BadRequest("missing required Meta object")
	}
	keys := make([]string, 0, len(raw.Meta))
	for k := range raw.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	req := &structs.NodeMetaApplyRequest{NodeID: raw.NodeID, Meta: make(map[string]*string, len(raw.Meta))}
	for _, k := range keys {
		if err := structs.ValidateMetaKey(k); err != nil {
			return nil, err
		}
		v := bytes.TrimSpace(raw.Meta[k])
		if bytes.Equal(v, []byte("null")) {
			req.Meta[k] = nil
			continue
		}
		var s string
		if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return nil, structs.BadRequest("metadata value for %q must be a string or null", k)
		}
		req.Meta[k] = &s
	}
	if id := r.URL.Query().Get("node_id"); id != "" {
		req.NodeID = id
	}
	req.QueryOptions = queryOptions(r)
	return req, nil
}
