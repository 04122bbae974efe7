package server

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"tether/structs"
)

// TestHeartbeatTTL checks the TTL for fleet sizes, Nomad's way: max(min,
// nodes/rate), then a stagger within [TTL, 2·TTL), both from the formula
// and from the leader's timer map holding that many nodes.
func TestHeartbeatTTL(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		min   time.Duration
		rate  int
		want  time.Duration
	}{
		{0, 10 * time.Second, 50, 10 * time.Second},
		{1, 10 * time.Second, 50, 10 * time.Second},
		{100, 10 * time.Second, 50, 10 * time.Second},
		{500, 10 * time.Second, 50, 10 * time.Second},
		{501, 10 * time.Second, 50, 10*time.Second + 20*time.Millisecond},
		{1000, 10 * time.Second, 50, 20 * time.Second},
		{5000, 10 * time.Second, 50, 100 * time.Second},
		{10000, 10 * time.Second, 50, 200 * time.Second},
		{10000, 10 * time.Second, 100, 100 * time.Second},
		{10000, 5 * time.Minute, 50, 5 * time.Minute},
		{10000, 10 * time.Second, 0, 10 * time.Second}, // no rate: the minimum
	} {
		t.Run(fmt.Sprintf("%d nodes min %v rate %d", tc.nodes, tc.min, tc.rate), func(t *testing.T) {
			if got := heartbeatTTL(tc.min, tc.rate, tc.nodes); got != tc.want {
				t.Fatalf("heartbeatTTL = %v; want %v", got, tc.want)
			}
			lo, hi := 2*tc.want, time.Duration(0)
			for range 1000 {
				got := staggerTTL(tc.want)
				if got < tc.want || got >= 2*tc.want {
					t.Fatalf("staggerTTL(%v) = %v; want in [%v, %v)", tc.want, got, tc.want, 2*tc.want)
				}
				lo, hi = min(lo, got), max(hi, got)
			}
			if hi-lo < tc.want/2 {
				t.Fatalf("1000 staggered TTLs spread over [%v, %v] only; want most of [%v, %v)", lo, hi, tc.want, 2*tc.want)
			}

			// The leader counts the nodes it keeps timers for, the one
			// being reset included.
			cfg := &Config{MinHeartbeatTTL: tc.min, MaxHeartbeatsPerSecond: tc.rate, HeartbeatGrace: time.Hour}
			h := newHeartbeats(cfg, func(string) { t.Errorf("timer fired") })
			defer h.stop()
			for i := 1; i < tc.nodes; i++ {
				h.reset(fmt.Sprint("other-", i))
			}
			if got := h.reset("node"); got < tc.want || got >= 2*tc.want {
				t.Fatalf("reset with %d nodes armed = %v; want in [%v, %v)", tc.nodes, got, tc.want, 2*tc.want)
			}
			if got := h.reset("node"); got < tc.want || got >= 2*tc.want {
				t.Fatalf("second reset of the same node = %v; want in [%v, %v)", got, tc.want, 2*tc.want)
			}
			if got := h.armed(); got != max(tc.nodes, 1) {
				t.Fatalf("armed = %d; want %d", got, max(tc.nodes, 1))
			}
		})
	}
}

// TestHeartbeatFailoverTTL checks the TTL a new leader arms: the
// configured one, raised for a fleet whose staggered TTLs exceed it.
func TestHeartbeatFailoverTTL(t *testing.T) {
	for _, tc := range []struct {
		nodes    int
		failover time.Duration
		want     time.Duration
	}{
		{0, 5 * time.Minute, 5 * time.Minute},
		{1000, 5 * time.Minute, 5 * time.Minute},
		{7000, 5 * time.Minute, 5 * time.Minute},    // 2·140s + 10s = 290s
		{10000, 5 * time.Minute, 410 * time.Second}, // 2·200s + 10s
		{0, time.Second, 30 * time.Second},          // 2·10s + 10s
		{20000, 30 * time.Minute, 30 * time.Minute}, // 2·400s + 10s = 810s
		{20000, 10 * time.Minute, 2*400*time.Second + 10*time.Second},
	} {
		cfg := &Config{MinHeartbeatTTL: 10 * time.Second, MaxHeartbeatsPerSecond: 50, HeartbeatGrace: 10 * time.Second, FailoverHeartbeatTTL: tc.failover}
		h := newHeartbeats(cfg, func(string) {})
		if got := h.failoverTTL(tc.nodes); got != tc.want {
			t.Errorf("failoverTTL(%d nodes, configured %v) = %v; want %v", tc.nodes, tc.failover, got, tc.want)
		}
	}
}

// TestHeartbeats_FailoverAndUnchanged checks the leader's per-node state:
// armAll arms the listed nodes at the failover TTL (they then expire);
// unchanged registrations are accepted only once the view is complete,
// for a node with a timer, once per commit index, and never after the
// leadership is lost.
func TestHeartbeats_FailoverAndUnchanged(t *testing.T) {
	expired := make(chan string, 4)
	cfg := &Config{MinHeartbeatTTL: time.Hour, MaxHeartbeatsPerSecond: 50, HeartbeatGrace: time.Hour, FailoverHeartbeatTTL: time.Hour}
	h := newHeartbeats(cfg, func(id string) { expired <- id })
	defer h.stop()

	h.reset("a")
	if _, ok := h.resetUnchanged("a", 5); ok {
		t.Fatalf("unchanged registration accepted before armAll")
	}
	if d := h.armAll([]string{"a", "b"}); d < time.Hour {
		t.Fatalf("armAll = %v; want at least the configured hour", d)
	}
	for _, tc := range []struct {
		node   string
		commit uint64
		want   bool
	}{
		{"a", 5, true},
		{"a", 5, false}, // the same commit index again: the caller writes
		{"a", 4, false},
		{"a", 6, true},
		{"b", 6, true},  // per node
		{"c", 7, false}, // no timer: expired or never known
	} {
		ttl, ok := h.resetUnchanged(tc.node, tc.commit)
		if ok != tc.want {
			t.Fatalf("resetUnchanged(%s, %d) = %v; want %v", tc.node, tc.commit, ok, tc.want)
		}
		if ok && (ttl < time.Hour || ttl >= 2*time.Hour) {
			t.Fatalf("resetUnchanged(%s, %d) TTL = %v; want in [1h, 2h)", tc.node, tc.commit, ttl)
		}
	}
	h.clear()
	h.reset("a")
	if _, ok := h.resetUnchanged("a", 100); ok {
		t.Fatalf("unchanged registration accepted after leadership was lost")
	}

	// A short failover TTL: both nodes armed by armAll expire.
	cfg = &Config{MinHeartbeatTTL: time.Millisecond, MaxHeartbeatsPerSecond: 50, FailoverHeartbeatTTL: 20 * time.Millisecond}
	h2 := newHeartbeats(cfg, func(id string) { expired <- id })
	defer h2.stop()
	h2.armAll([]string{"x", "y"})
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case id := <-expired:
			got[id] = true
		case <-timeout:
			t.Fatalf("expired %v; want x and y", got)
		}
	}
	if !got["x"] || !got["y"] || h2.armed() != 0 {
		t.Fatalf("expired %v with %d still armed; want x and y, none armed", got, h2.armed())
	}
}

// fullNode is a node as a node agent registers it, every field set.
func fullNode() *structs.Node {
	return &structs.Node{
		ID: structs.GenerateUUID(), SecretID: structs.GenerateUUID(), Datacenter: "dc1", Name: "n1",
		HTTPAddr: "127.0.0.1:4646", Attributes: map[string]string{"kernel.name": "linux", "driver.raw_exec": "1"},
		Resources: &structs.Resources{CPU: 1000, MemoryMB: 512, DiskMB: 100}, Reserved: &structs.Resources{},
		NodeResources: &structs.NodeResources{Cpu: structs.NodeCpuResources{CpuShares: 1000, TotalCpuCores: 2}},
		Links:         map[string]string{"aws.ec2": "i-1"}, Meta: map[string]string{"rack": "r1"},
		NodeClass: "c", NodePool: "default", CgroupParent: "nomad.slice",
		SchedulingEligibility: structs.NodeSchedulingEligible, Status: structs.NodeStatusReady,
		Drivers: map[string]*structs.DriverInfo{"raw_exec": {Detected: true, Healthy: true, HealthDescription: "Healthy",
			UpdateTime: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), Attributes: map[string]string{"driver.raw_exec": "true"}}},
		HostVolumes: map[string]any{"v": "x"}, HostNetworks: map[string]any{"n": "x"},
		CSIControllerPlugins: map[string]any{"c": "x"}, CSINodePlugins: map[string]any{"p": "x"},
		StatusUpdatedAt: 1, Events: []*structs.NodeEvent{{Message: "Node registered"}}, CreateIndex: 3, ModifyIndex: 4,
	}
}

// mutate changes v so that it no longer equals its old value.
func mutate(t *testing.T, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "-changed")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(v.Int() + 1)
	case reflect.Uint64, reflect.Uint16:
		v.SetUint(v.Uint() + 1)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range v.MapKeys() {
			m.SetMapIndex(k, v.MapIndex(k))
		}
		var e reflect.Value
		switch et := v.Type().Elem(); et.Kind() {
		case reflect.Pointer:
			e = reflect.New(et.Elem())
		case reflect.Interface:
			e = reflect.ValueOf("added")
		default:
			e = reflect.New(et).Elem()
		}
		m.SetMapIndex(reflect.ValueOf("added-key"), e)
		v.Set(m)
	case reflect.Pointer:
		n := reflect.New(v.Type().Elem())
		if !v.IsNil() {
			n.Elem().Set(v.Elem())
		}
		mutate(t, n.Elem().Field(0))
		v.Set(n)
	case reflect.Struct:
		mutate(t, v.Field(0))
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem()))
	default:
		t.Fatalf("cannot mutate a %s", v.Kind())
	}
}

// TestNodeUnchanged checks that a change to any field of a node but those
// the server keeps itself counts as a change, so that a registration
// carrying it is written; a field added to structs.Node later fails here
// until nodeUnchanged compares it.
func TestNodeUnchanged(t *testing.T) {
	// Not compared: what the server keeps itself, and the ID the stored
	// node was looked up by.
	notCompared := map[string]bool{"ID": true, "StatusUpdatedAt": true, "Events": true, "CreateIndex": true, "ModifyIndex": true}
	base := fullNode()
	if !nodeUnchanged(base, base.Copy()) {
		t.Fatalf("a copy counts as changed")
	}
	typ := reflect.TypeOf(*base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			c := base.Copy()
			mutate(t, reflect.ValueOf(c).Elem().Field(i))
			if got, want := nodeUnchanged(base, c), notCompared[f.Name]; got != want {
				t.Fatalf("nodeUnchanged after changing %s = %v; want %v", f.Name, got, want)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		modify func(n *structs.Node)
		want   bool
	}{
		{"nil and empty maps alike", func(n *structs.Node) { n.Links = map[string]string{}; base.Links = nil }, true},
		{"driver time in another zone", func(n *structs.Node) {
			n.Drivers["raw_exec"].UpdateTime = n.Drivers["raw_exec"].UpdateTime.In(time.FixedZone("x", 3600))
		}, true},
		{"driver unhealthy", func(n *structs.Node) { n.Drivers["raw_exec"].Healthy = false }, false},
		{"driver updated", func(n *structs.Node) { n.Drivers["raw_exec"].UpdateTime = time.Now() }, false},
		{"driver attribute", func(n *structs.Node) { n.Drivers["raw_exec"].Attributes["driver.raw_exec"] = "false" }, false},
		{"driver gone", func(n *structs.Node) { n.Drivers = nil }, false},
		{"meta value", func(n *structs.Node) { n.Meta["rack"] = "r2" }, false},
		{"free-form map value", func(n *structs.Node) { n.HostVolumes = map[string]any{"v": "y"} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base = fullNode()
			c := base.Copy()
			tc.modify(c)
			if got := nodeUnchanged(base, c); got != tc.want {
				t.Fatalf("nodeUnchanged = %v; want %v", got, tc.want)
			}
		})
	}
	// A stored node that is not ready is never unchanged: coming back
	// writes its status.
	for _, status := range []string{structs.NodeStatusDown, structs.NodeStatusInit, "disconnected"} {
		old := fullNode()
		old.Status = status
		c := old.Copy()
		c.Status = structs.NodeStatusReady
		if nodeUnchanged(old, c) {
			t.Fatalf("a %s node registering ready counts as unchanged", status)
		}
	}
}

// waitEstablished waits until s leads and has armed its heartbeat timers
// for the term (establishLeadership ran).
func waitEstablished(t testing.TB, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.hb.mu.Lock()
		leading := s.hb.leading
		s.hb.mu.Unlock()
		if leading && s.IsLeader() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not establish leadership")
		}
		<-time.After(10 * time.Millisecond) // polling interval; the condition decides
	}
}

// TestServer_ReRegisterWritesOnlyChanges registers a node, then sends
// registrations and heartbeats and counts the raft entries each costs: a
// node that only reconnects, or heartbeats while ready, writes nothing; a
// change, a node coming back from down, or a second unchanged
// registration at the same commit index (whose session binding would tie
// with the first) writes.
func TestServer_ReRegisterWritesOnlyChanges(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.NodeAdmissionInterval = -1 // one node registers many times in a row on purpose
	cfg.RPCAdvertise = "127.0.0.1:4647"
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Shutdown)
	waitEstablished(t, s)
	ctx := context.Background()
	node := fullNode()
	node.StatusUpdatedAt, node.Events, node.CreateIndex, node.ModifyIndex = 0, nil, 0, 0
	register := func(n *structs.Node) *structs.NodeRegisterResponse {
		t.Helper()
		var resp structs.NodeRegisterResponse
		if err := s.mux.CallLocal(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: n.Copy()}, &resp); err != nil {
			t.Fatalf("register: %v", err)
		}
		if resp.HeartbeatTTL < cfg.MinHeartbeatTTL || resp.HeartbeatTTL >= 2*cfg.MinHeartbeatTTL {
			t.Fatalf("register TTL = %v; want in [%v, %v)", resp.HeartbeatTTL, cfg.MinHeartbeatTTL, 2*cfg.MinHeartbeatTTL)
		}
		return &resp
	}
	heartbeat := func() {
		t.Helper()
		var resp structs.NodeHeartbeatResponse
		req := &structs.NodeHeartbeatRequest{NodeID: node.ID, SecretID: node.SecretID, Status: structs.NodeStatusReady}
		if err := s.mux.CallLocal(ctx, structs.MethodNodeHeartbeat, req, &resp); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if resp.HeartbeatTTL < cfg.MinHeartbeatTTL || resp.HeartbeatTTL >= 2*cfg.MinHeartbeatTTL {
			t.Fatalf("heartbeat TTL = %v; want in [%v, %v)", resp.HeartbeatTTL, cfg.MinHeartbeatTTL, 2*cfg.MinHeartbeatTTL)
		}
	}
	register(node)
	markDown := func() {
		if _, err := s.raftApply(ctx, msgUpdateNodeStatus, &nodeStatusCmd{NodeID: node.ID, Status: structs.NodeStatusDown, Description: "node heartbeat missed"}); err != nil {
			t.Fatal(err)
		}
	}
	same := func() *structs.Node { return node }

	for _, step := range []struct {
		name   string
		before func() // changes the stored state first (its write is not counted)
		node   func() *structs.Node
		beat   bool // a heartbeat, not a registration
		writes bool
	}{
		{"reconnect unchanged", nil, same, false, false},
		{"heartbeat while ready", nil, same, true, false},
		{"second reconnect at the same commit index", nil, same, false, true},
		{"reconnect without status or pool, as stored", nil, func() *structs.Node {
			n := node.Copy()
			n.Status, n.NodePool, n.SchedulingEligibility = "", "", ""
			return n
		}, false, false},
		{"changed attribute", nil, func() *structs.Node {
			node.Attributes["kernel.version"] = "6.1"
			return node
		}, false, true},
		{"changed meta", nil, func() *structs.Node {
			node.Meta["rack"] = "r9"
			return node
		}, false, true},
		{"reconnect back from down", markDown, same, false, true},
		{"heartbeat back from down", markDown, same, true, true},
		{"heartbeat while ready again", nil, same, true, false},
	} {
		if step.before != nil {
			step.before()
		}
		before, _ := s.store.Node(node.ID)
		raftBefore, stateBefore, unchangedBefore := s.raft.LastIndex(), s.store.LatestIndex(), s.unchangedRegistrations.Load()
		if step.beat {
			heartbeat()
		} else {
			register(step.node())
		}
		after, _ := s.store.Node(node.ID)
		raftWrites := s.raft.LastIndex() - raftBefore
		if step.writes {
			if raftWrites == 0 || s.store.LatestIndex() == stateBefore || after.ModifyIndex == before.ModifyIndex {
				t.Fatalf("%s: %d raft entries, state index %d → %d; want a write", step.name, raftWrites, stateBefore, s.store.LatestIndex())
			}
			if after.Status != structs.NodeStatusReady || after.StatusDescription != "" {
				t.Fatalf("%s: status %q %q; want ready", step.name, after.Status, after.StatusDescription)
			}
		} else {
			if raftWrites != 0 || s.store.LatestIndex() != stateBefore || after.StatusUpdatedAt != before.StatusUpdatedAt {
				t.Fatalf("%s: %d raft entries, state index %d → %d; want no write", step.name, raftWrites, stateBefore, s.store.LatestIndex())
			}
		}
		if got := s.unchangedRegistrations.Load() - unchangedBefore; !step.beat && (got > 0) == step.writes {
			t.Fatalf("%s: %d registrations accepted unchanged; writes %v", step.name, got, step.writes)
		}
		if after.Attributes["kernel.version"] != node.Attributes["kernel.version"] || after.Meta["rack"] != node.Meta["rack"] {
			t.Fatalf("%s: stored node %v %v; want the registered one", step.name, after.Attributes, after.Meta)
		}
	}
}

// TestBindOrder checks the order of session bindings: an unchanged
// registration ranks above everything applied when it was accepted, below
// the next write.
func TestBindOrder(t *testing.T) {
	for _, c := range []uint64{0, 1, 41, 1 << 40} {
		u := bindOrderUnchanged(c)
		if !(bindOrderWritten(c) < u && u < bindOrderWritten(c+1)) {
			t.Fatalf("commit %d: written %d, unchanged %d, next write %d; want strictly increasing", c, bindOrderWritten(c), u, bindOrderWritten(c+1))
		}
	}
}
