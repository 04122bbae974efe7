package server

import (
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"tether/structs"
)

// Server-to-server methods. They are refused on sessions bound to a node
// (requirePeer). None of them forwards again: a forwarded call makes at
// most one extra hop.
const (
	// methodRaftApply applies an encoded raft command on the leader.
	methodRaftApply = "Raft.Apply"

	// Writes that run whole on the leader (scheduling, heartbeat TTLs).
	methodLeaderNodeRegister  = "Leader.NodeRegister"
	methodLeaderNodeHeartbeat = "Leader.NodeHeartbeat"
	methodLeaderNodeUpdate    = "Leader.NodeUpdateAlloc"
	methodLeaderJobRegister   = "Leader.JobRegister"
	methodLeaderJobDeregister = "Leader.JobDeregister"
	methodLeaderAllocStop     = "Leader.AllocStop"

	// methodHasNode asks a peer whether it holds a node's session.
	methodHasNode = "Routing.HasNode"

	// methodSessionCount asks a peer how many node sessions it holds
	// (rebalancing).
	methodSessionCount = "Routing.SessionCount"

	// methodForwardNodeRPC and methodForwardNodeStream run a client
	// method on a node whose session the receiving server holds.
	methodForwardNodeRPC    = "Forward.NodeRPC"
	methodForwardNodeStream = "Forward.NodeStream"
)

// raftApplyRequest carries one encoded raft command to the leader.
type raftApplyRequest struct {
	Data []byte
}

// raftApplyResponse is the index the command was applied at.
type raftApplyResponse struct {
	Index uint64
}

// nodeRegisterLeaderResponse is the leader's half of a registration.
type nodeRegisterLeaderResponse struct {
	// HeartbeatTTL is the TTL handed to the node.
	HeartbeatTTL time.Duration

	// Index is the index the node was written at or, when it was
	// unchanged and nothing was written, the leader's commit index.
	Index uint64

	// BindOrder ranks the session binding the registration makes
	// (bindOrderWritten, bindOrderUnchanged).
	BindOrder uint64
}

// jobRegisterRequest forwards a job registration to the leader.
type jobRegisterRequest struct {
	Job *structs.Job
	structs.JobRegisterOptions
}

// jobDeregisterRequest forwards a job stop (or purge) to the leader.
type jobDeregisterRequest struct {
	Namespace    string
	JobID        string
	Purge        bool
	EvalPriority int `codec:",omitempty"`
}

// allocStopRequest forwards an allocation stop to the leader.
type allocStopRequest struct {
	AllocID         string
	NoShutdownDelay bool
}

// hasNodeRequest asks a peer about a node's session.
type hasNodeRequest struct {
	NodeID string
}

// hasNodeResponse answers hasNodeRequest. Index orders the bindings of
// one node across servers: the holder with the highest one has the newest
// session.
type hasNodeResponse struct {
	Connected bool
	Index     uint64
}

// forwardRequest carries a client call to the server holding the node's
// session. Args is the caller's request as it decodes generically (a
// msgpack map); the holder passes it on unchanged, and never forwards
// again.
type forwardRequest struct {
	NodeID string
	Method string
	Args   any
}

// forwardStreamAck is the first frame of a forwarded stream, sent once the
// holder has opened the stream to the node, so the caller can tell a stale
// route (an error instead) before it hands the stream on.
type forwardStreamAck struct {
	OK bool
}

// RaftServer is one server of the raft configuration, in Nomad's
// /v1/operator/raft/configuration shape.
type RaftServer struct {
	ID           string
	Node         string
	Address      string
	Leader       bool
	Voter        bool
	RaftProtocol string
}

// RaftConfigurationResponse is the raft configuration and its index.
type RaftConfigurationResponse struct {
	Servers []*RaftServer
	Index   uint64
}

// rawMsg passes a msgpack value through a server untyped: it decodes into
// a generic value and encodes that value as itself (not wrapped), so a
// reply relayed by the holder reaches the origin as the node sent it.
type rawMsg struct {
	v any
}

// CodecEncodeSelf implements codec.Selfer.
func (r *rawMsg) CodecEncodeSelf(e *codec.Encoder) { e.MustEncode(r.v) }

// CodecDecodeSelf implements codec.Selfer.
func (r *rawMsg) CodecDecodeSelf(d *codec.Decoder) { d.MustDecode(&r.v) }
