package structs

import "time"

// RPC method names. Server methods are called by node agents on the session
// they dialed; client methods are called by servers on that same session
// (and by the node's own HTTP API, in process).
const (
	// Server methods.
	MethodNodeRegister  = "Node.Register"
	MethodNodeHeartbeat = "Node.Heartbeat"
	MethodNodeList      = "Node.List"
	MethodNodeGet       = "Node.GetNode"
	MethodStatusPeers   = "Status.Peers"

	// Client (node) methods.
	MethodClientStats   = "ClientStats.Stats"
	MethodNodeMetaRead  = "NodeMeta.Read"
	MethodNodeMetaApply = "NodeMeta.Apply"
)

// QueryOptions is embedded in every request that comes from an HTTP caller.
type QueryOptions struct {
	Region    string
	Namespace string
	AuthToken string
}

// NodeSpecificRequest names the node a client call is for.
type NodeSpecificRequest struct {
	NodeID string
	QueryOptions
}

// NodeRegisterRequest registers (or re-registers) a node. The session it
// arrives on becomes the node's session once the secret checks out.
type NodeRegisterRequest struct {
	Node *Node
}

// NodeRegisterResponse tells the node how often to heartbeat and which
// servers it may fail over to.
type NodeRegisterResponse struct {
	HeartbeatTTL time.Duration
	Servers      []string
	Index        uint64
	// AllocIndex is the node's allocation index on the answering server
	// (see NodeClientAllocsResponse.Index): a node that has pulled less
	// pulls again.
	AllocIndex uint64
}

// NodeHeartbeatRequest keeps a node alive.
type NodeHeartbeatRequest struct {
	NodeID   string
	SecretID string
	Status   string
}

// NodeHeartbeatResponse is the answer to a heartbeat.
type NodeHeartbeatResponse struct {
	HeartbeatTTL time.Duration
	Servers      []string
	Index        uint64
	// AllocIndex is the node's allocation index, as in
	// NodeRegisterResponse: the backstop for a lost AllocsChanged push.
	AllocIndex uint64
}

// GenericResponse is the reply of calls that return nothing.
type GenericResponse struct {
	Index uint64
}

// BlockingOptions make a read a blocking query: it answers once the index
// of what it reads passes MinQueryIndex, or after MaxQueryTime (capped,
// with jitter, by the server). A zero MinQueryIndex answers at once.
type BlockingOptions struct {
	MinQueryIndex uint64
	MaxQueryTime  time.Duration
}

// NodeListRequest lists nodes whose ID starts with Prefix; Resources adds
// each node's resources to its stub (?resources=true).
type NodeListRequest struct {
	Prefix    string
	Resources bool
	QueryOptions
	BlockingOptions
}

// NodeGetRequest reads one node, as a blocking query if asked.
type NodeGetRequest struct {
	NodeID string
	QueryOptions
	BlockingOptions
}

// NodeListResponse is the answer to Node.List.
type NodeListResponse struct {
	Nodes []*NodeListStub
	Index uint64
}

// SingleNodeResponse is the answer to Node.GetNode; Node is nil when the
// node is unknown.
type SingleNodeResponse struct {
	Node  *Node
	Index uint64
}

// StatusResponse names the cluster leader and voters by RPC address.
type StatusResponse struct {
	Leader string
	Peers  []string
}

// Allocation RPC methods.
const (
	// Server methods called by nodes.
	MethodNodeGetClientAllocs = "Node.GetClientAllocs"
	MethodNodeUpdateAlloc     = "Node.UpdateAlloc"

	// Client (node) methods.
	MethodClientAllocStats = "ClientAllocations.Stats"
	MethodClientAllocGC    = "ClientAllocations.GarbageCollect"
	MethodClientGCAll      = "ClientAllocations.GarbageCollectAll"

	// MethodClientAllocsChanged is the server's push on a node's session:
	// the node's allocations changed at AllocsChangedRequest.Index, so
	// the node pulls them (Node.GetClientAllocs). It replaces a blocking
	// query parked on the server for every node.
	MethodClientAllocsChanged = "Client.AllocsChanged"
)

// AllocsChangedRequest is the body of Client.AllocsChanged; the reply is a
// GenericResponse.
type AllocsChangedRequest struct {
	Index uint64
}

// AllocSpecificRequest names the allocation a client call is for.
type AllocSpecificRequest struct {
	AllocID string
	QueryOptions
}

// NodeClientAllocsRequest asks for a node's allocations. With MaxWait > 0
// it is a blocking query: it returns once the node's allocation index
// passes MinIndex or MaxWait ends; with MaxWait 0 it answers at once (what
// nodes do: they pull when told, see MethodClientAllocsChanged).
type NodeClientAllocsRequest struct {
	NodeID   string
	SecretID string
	MinIndex uint64
	MaxWait  time.Duration
}

// NodeClientAllocsResponse carries the node's allocations and the node's
// allocation index: the highest AllocModifyIndex among them, i.e. the raft
// index of the last server-side change to any of them (a node's own status
// reports do not move it).
type NodeClientAllocsResponse struct {
	Allocs []*Allocation
	Index  uint64
}

// AllocUpdateRequest carries a node's report of its allocations' client
// status and task states.
type AllocUpdateRequest struct {
	NodeID   string
	SecretID string
	Allocs   []*Allocation
}
