package server

import (
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// The raft metrics of writes this server applied as leader, with the
// names and types hashicorp/raft gives them in Nomad: nomad.raft.apply
// counts the entries (a counter: dashboards take its rate), and
// nomad.raft.commitTime is the time from Apply to the entry committed
// and applied (a sample, milliseconds).
var (
	keyRaftApply      = []string{"raft", "apply"}
	keyRaftCommitTime = []string{"raft", "commitTime"}
)

// Nomad's timers of a node's registration and heartbeat on the server
// that took them (nomad.nomad.client.register, .update_status; ms).
var (
	keyClientRegister     = []string{"nomad", "client", "register"}
	keyClientUpdateStatus = []string{"nomad", "client", "update_status"}
)

// serverMetrics is where the server sends what it measures: the agent's
// go-metrics instance, or nothing.
type serverMetrics struct {
	m atomic.Pointer[metrics.Metrics]
}

// SetMetrics makes the server record its measures (raft apply time) on
// m; nil stops it. The counters of Stats are read by the agent instead.
func (s *Server) SetMetrics(m *metrics.Metrics) { s.metrics.m.Store(m) }

// RPCStats returns the server's transport counters (rpc.Counters.Stats):
// connections, handshakes and frames refused.
func (s *Server) RPCStats() map[string]uint64 { return s.rpcSrv.Counters().Stats() }

// incr adds one to the counter key, when metrics are on.
func (sm *serverMetrics) incr(key []string) {
	if m := sm.m.Load(); m != nil {
		m.IncrCounter(key, 1)
	}
}

// measureSince records the time since start under key, when metrics are
// on.
func (sm *serverMetrics) measureSince(key []string, start time.Time) {
	if m := sm.m.Load(); m != nil {
		m.MeasureSince(key, start)
	}
}
