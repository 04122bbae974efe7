package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestForwarding_GoClient drives the three seed endpoints and the node
// API through the official Go client, against the server (forwarded down
// the node's session) and against the node agent directly.
func TestForwarding_GoClient(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec(),
		withMeta(map[string]string{"rack": "r1", "connect.log_level": "warn"}))
	nodeID := node.Client().NodeID()

	for _, tc := range []struct {
		name   string
		target *testAgent
	}{
		{"via-server", srv},
		{"direct", node},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := tc.target.API(t)

			nodes, _, err := api.Nodes().List(nil)
			if err != nil {
				t.Fatalf("Nodes().List: %v", err)
			}
			if len(nodes) != 1 || nodes[0].ID != nodeID {
				t.Fatalf("Nodes().List = %+v; want one node %s", nodes, nodeID)
			}
			info, _, err := api.Nodes().Info(nodeID, nil)
			if err != nil {
				t.Fatalf("Nodes().Info: %v", err)
			}
			if info.Status != "ready" || info.HTTPAddr != node.HTTPAddr() || info.Resources == nil ||
				info.Resources.CPU == nil || *info.Resources.CPU <= 0 || info.Attributes["nomad.version"] == "" {
				t.Fatalf("Nodes().Info = status %q httpaddr %q (want %q) resources %+v attrs %v",
					info.Status, info.HTTPAddr, node.HTTPAddr(), info.Resources, info.Attributes)
			}

			if d := info.Drivers["raw_exec"]; d == nil || !d.Healthy || d.UpdateTime.IsZero() {
				t.Fatalf("Nodes().Info Drivers[raw_exec] = %+v; want healthy with an update time", d)
			}

			stats, err := api.Nodes().Stats(nodeID, nil)
			if err != nil {
				t.Fatalf("Nodes().Stats: %v", err)
			}
			if stats.Memory == nil || stats.Memory.Total == 0 || len(stats.CPU) == 0 || stats.Uptime == 0 || stats.AllocDirStats == nil {
				t.Fatalf("Nodes().Stats = %+v; want memory, cpus, uptime, alloc dir stats", stats)
			}

			meta, err := api.Nodes().Meta().Read(nodeID, nil)
			if err != nil {
				t.Fatalf("Meta().Read: %v", err)
			}
			if meta.Static["rack"] != "r1" || meta.Meta["connect.log_level"] != "warn" || meta.Static["connect.proxy_concurrency"] != "1" {
				t.Fatalf("Meta().Read = %+v; want static rack and connect defaults", meta)
			}

			key := "tether." + strings.ReplaceAll(tc.name, "-", "_")
			applied, err := api.Nodes().Meta().Apply(&nomad.NodeMetaApplyRequest{
				NodeID: nodeID,
				Meta:   map[string]*string{key: sp("v1"), "rack": nil, "never.set": nil},
			}, nil)
			if err != nil {
				t.Fatalf("Meta().Apply: %v", err)
			}
			if applied.Meta[key] != "v1" {
				t.Fatalf("Apply Meta[%s] = %q; want v1", key, applied.Meta[key])
			}
			if _, ok := applied.Meta["rack"]; ok {
				t.Fatalf("Apply: static key rack still in merged Meta after unset")
			}
			if v, ok := applied.Dynamic["rack"]; !ok || v != nil {
				t.Fatalf("Apply Dynamic[rack] = %v, %v; want a null tombstone", v, ok)
			}
			if _, ok := applied.Dynamic["never.set"]; ok {
				t.Fatalf("Apply: unset of a non-static key left it in Dynamic")
			}
			if applied.Static["rack"] != "r1" {
				t.Fatalf("Apply Static[rack] = %q; want r1 kept", applied.Static["rack"])
			}

			// The merged metadata reaches the servers, batched, within 10s.
			waitFor(t, 15*time.Second, "metadata on /v1/node/:id", func() (bool, error) {
				n, _, err := srv.API(t).Nodes().Info(nodeID, nil)
				if err != nil {
					return false, err
				}
				_, hasRack := n.Meta["rack"]
				return n.Meta[key] == "v1" && !hasRack, nil
			})
		})
	}
}

// TestClientAPI_BadInput checks each malformed call gets a clear 4xx and
// applies nothing.
func TestClientAPI_BadInput(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	nodeID := node.Client().NodeID()
	unknown := "2b6a7ae6-4c7a-4f1e-9f0a-123456789abc"

	cases := []struct {
		name     string
		method   string
		url      string
		body     string
		wantCode int
		wantBody string
	}{
		{"stats without node_id", "GET", srv.URL() + "/v1/client/stats", "", 400, "No local Node and node_id not provided"},
		{"stats unknown node", "GET", srv.URL() + "/v1/client/stats?node_id=" + unknown, "", 404, "Unknown node"},
		{"stats short id", "GET", srv.URL() + "/v1/client/stats?node_id=" + nodeID[:8], "", 400, "UUID must be 36 characters"},
		{"stats not hex", "GET", srv.URL() + "/v1/client/stats?node_id=zzzzzzzz-4c7a-4f1e-9f0a-123456789abc", "", 400, "invalid UUID"},
		{"metadata unknown node", "GET", srv.URL() + "/v1/client/metadata?node_id=" + unknown, "", 404, "Unknown node"},
		{"metadata put", "PUT", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{"a":"b"}}`, 405, "Invalid method"},
		{"metadata empty body", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, "", 400, "Request body is empty"},
		{"metadata malformed json", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":`, 400, "unexpected end of JSON input"},
		{"metadata missing meta", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{}}`, 400, "missing required Meta object"},
		{"metadata invalid key", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{"good":"1","some/path":"x"}}`, 400, `"some/path" is invalid`},
		{"metadata leading digit", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{"1a":"x"}}`, 400, `"1a" is invalid`},
		{"metadata empty part", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{"a..b":"x"}}`, 400, `"a..b" is invalid`},
		{"metadata number value", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{"good":"1","num":5}}`, 400, `"num" must be a string or null`},
		{"metadata body too large", "POST", srv.URL() + "/v1/client/metadata?node_id=" + nodeID, `{"Meta":{"a":"` + strings.Repeat("x", 1<<20+10) + `"}}`, 413, "Request body too large"},
		{"unknown route", "GET", srv.URL() + "/v1/client/nope", "", 404, ""},
		{"trailing slash", "GET", srv.URL() + "/v1/client/stats/", "", 404, ""},
		{"node info unknown", "GET", srv.URL() + "/v1/node/" + unknown, "", 404, "node not found"},
		{"direct invalid key", "POST", node.URL() + "/v1/client/metadata", `{"Meta":{"bad key":"x"}}`, 400, `"bad key" is invalid`},
		{"direct other node", "GET", node.URL() + "/v1/client/stats?node_id=" + nodeID[:8], "", 400, "UUID must be 36 characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := do(t, tc.method, tc.url, strings.NewReader(tc.body))
			if code != tc.wantCode {
				t.Fatalf("status = %d (%q); want %d", code, body, tc.wantCode)
			}
			mustContain(t, body, tc.wantBody)
		})
	}

	// Nothing of the refused updates was applied.
	code, body, _ := do(t, "GET", srv.URL()+"/v1/client/metadata?node_id="+nodeID, nil)
	if code != 200 {
		t.Fatalf("metadata read = %d %q", code, body)
	}
	var meta struct{ Dynamic map[string]*string }
	if err := json.Unmarshal([]byte(body), &meta); err != nil {
		t.Fatalf("decoding metadata: %v", err)
	}
	if len(meta.Dynamic) != 0 {
		t.Fatalf("Dynamic = %v after only refused updates; want empty", meta.Dynamic)
	}
}

// TestClientAPI_NoPathToNode: a known node whose session is gone answers
// "No path to node" at once.
func TestClientAPI_NoPathToNode(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	nodeID := node.Client().NodeID()

	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatalf("node shutdown: %v", err)
	}
	waitFor(t, 10*time.Second, "session dropped", func() (bool, error) {
		return srv.Server().ConnectedNodes() == 0, nil
	})
	start := time.Now()
	code, body, _ := do(t, "GET", srv.URL()+"/v1/client/stats?node_id="+nodeID, nil)
	if code != http.StatusNotFound || body != "No path to node" {
		t.Fatalf("stats = %d %q; want 404 No path to node", code, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("No path to node took %v; want an immediate answer", d)
	}
}

// TestDevAgent: one process holding a server and a node answers the
// client API without node_id, and with its own node_id.
func TestDevAgent(t *testing.T) {
	cfg := baseConfig(t, "dev")
	cfg.DevMode = true
	cfg.Server.Enabled = true
	cfg.Client.Enabled = true
	a := startAgent(t, cfg)
	select {
	case <-a.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatal("dev node did not register")
	}
	for _, path := range []string{"/v1/client/stats", "/v1/client/stats?node_id=" + a.Client().NodeID(), "/v1/client/metadata", "/v1/client/metadata?pretty"} {
		code, body, hdr := do(t, "GET", a.URL()+path, nil)
		if code != 200 || hdr.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s = %d %q (%s)", path, code, body, hdr.Get("Content-Type"))
		}
	}
	code, body, _ := do(t, "POST", a.URL()+"/v1/client/metadata", strings.NewReader(`{"Meta":{"foo":"bar","gone":null}}`))
	if code != 200 {
		t.Fatalf("POST metadata = %d %q", code, body)
	}
	mustContain(t, body, `"foo":"bar"`)
	code, body, _ = do(t, "GET", a.URL()+"/v1/status/leader", nil)
	if code != 200 || !strings.HasPrefix(body, `"127.0.0.1:`) {
		t.Fatalf("status/leader = %d %q", code, body)
	}
	api := a.API(t)
	if name, err := api.Agent().NodeName(); err != nil || name == "" {
		t.Fatalf("Agent().NodeName() = %q, %v", name, err)
	}
}

// TestStats_SeedFields checks every field of the seed's sample is on the
// wire, with the seed's names.
func TestStats_SeedFields(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	code, body, _ := do(t, "GET", srv.URL()+"/v1/client/stats?node_id="+node.Client().NodeID(), nil)
	if code != 200 {
		t.Fatalf("stats = %d %q", code, body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"AllocDirStats", "CPU", "CPUTicksConsumed", "DeviceStats", "DiskStats", "Memory", "Timestamp", "Uptime"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stats lacks %q", k)
		}
	}
	var s struct {
		CPU           []map[string]any
		AllocDirStats map[string]any
		Memory        map[string]any
		DeviceStats   []any
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"CPU", "Idle", "System", "Total", "User", "TotalPercent", "TotalTicks"} {
		if _, ok := s.CPU[0][k]; !ok {
			t.Errorf("CPU entry lacks %q", k)
		}
	}
	for _, k := range []string{"Available", "Device", "InodesUsedPercent", "Mountpoint", "Size", "Used", "UsedPercent"} {
		if _, ok := s.AllocDirStats[k]; !ok {
			t.Errorf("AllocDirStats lacks %q", k)
		}
	}
	for _, k := range []string{"Available", "Free", "Total", "Used"} {
		if _, ok := s.Memory[k]; !ok {
			t.Errorf("Memory lacks %q", k)
		}
	}
	if s.DeviceStats == nil {
		t.Errorf("DeviceStats is null; want []")
	}
}
