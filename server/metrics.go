package server

import (
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// keyRaftApply is the raft apply time sample (nomad.raft.apply,
// milliseconds), as Nomad names it.
var keyRaftApply = []string{"raft", "apply"}

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

// measureSince records the time since start under key, when metrics are
// on.
func (sm *serverMetrics) measureSince(key []string, start time.Time) {
	if m := sm.m.Load(); m != nil {
		m.MeasureSince(key, start)
	}
}
