package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestAgentSelf_NodePlaneCounters checks the figures the fleet benchmark
// reads from a server: /v1/agent/self counts the node's session, its
// registration and heartbeats ("tether"), raft's indexes ("raft") and the
// process's memory and goroutines ("runtime"); /v1/agent/sessions lists
// the node.
func TestAgentSelf_NodePlaneCounters(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	nodeID := node.Client().NodeID()

	var self struct {
		Stats map[string]map[string]string `json:"stats"`
	}
	num := func(block, key string) uint64 {
		v, err := strconv.ParseUint(self.Stats[block][key], 10, 64)
		if err != nil {
			t.Fatalf("stats.%s.%s = %q: %v", block, key, self.Stats[block][key], err)
		}
		return v
	}
	waitFor(t, 10*time.Second, "the node's session and registration counted", func() (bool, error) {
		code, body, err := tryGet(srv.URL() + "/v1/agent/self")
		if code != 200 || json.Unmarshal([]byte(body), &self) != nil {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		return self.Stats["tether"]["sessions"] == "1", fmt.Errorf("tether stats %v", self.Stats["tether"])
	})
	for _, tc := range []struct {
		block, key string
		min        uint64
	}{
		{"tether", "sessions_bound", 1},
		{"tether", "node_registrations", 1},
		{"tether", "leader_registrations", 1},
		{"tether", "node_heartbeats", 0},
		{"tether", "leader_heartbeats", 0},
		{"raft", "applied_index", 0},
		{"raft", "last_log_index", 1},
		{"runtime", "goroutines", 1},
		{"runtime", "heap_live_bytes", 0}, // 0 until the first GC
		{"runtime", "heap_objects_bytes", 1},
		{"runtime", "stack_bytes", 1},
		{"runtime", "total_bytes", 1},
	} {
		if got := num(tc.block, tc.key); got < tc.min {
			t.Errorf("stats.%s.%s = %d; want at least %d", tc.block, tc.key, got, tc.min)
		}
	}

	code, body, err := tryGet(srv.URL() + "/v1/agent/sessions")
	var sessions struct{ NodeIDs []string }
	if code != 200 || json.Unmarshal([]byte(body), &sessions) != nil {
		t.Fatalf("/v1/agent/sessions = %d %s %v", code, body, err)
	}
	if !slices.Equal(sessions.NodeIDs, []string{nodeID}) {
		t.Fatalf("/v1/agent/sessions = %v; want [%s]", sessions.NodeIDs, nodeID)
	}
	if code, _, _ := tryGet(node.URL() + "/v1/agent/sessions"); code != 400 {
		t.Fatalf("/v1/agent/sessions on a node = %d; want 400", code)
	}
}
