package structs

import (
	"net/http"
	"time"
)

// Archives of an allocation directory (GET /v1/client/fs/archive/:alloc_id)
// and the explanation of a client call's route (GET /v1/client/route): both
// additions to Nomad's API, which has neither.

// MethodFsArchive streams a directory of an allocation as a tar, built on
// the node. It is a streaming client method: an empty acknowledgement
// (StreamFrame, DataConn set when the bytes take a data connection) once
// the directory is open, then the archive as raw messages or on the data
// connection, then the result.
const MethodFsArchive = "FileSystem.Archive"

// Archive formats (the format parameter).
const (
	ArchiveTar   = "tar"
	ArchiveTarGz = "tar.gz"
)

// FsArchiveRequest asks for a tar of the directory Path of an allocation.
type FsArchiveRequest struct {
	AllocID string
	Path    string
	Format  string // ArchiveTar or ArchiveTarGz

	// DataToken offers a data connection for the archive, as
	// FsReadAtRequest.DataToken does; the acknowledgement's DataConn says
	// whether the node took it.
	DataToken []byte `codec:"DataToken" json:"-"`

	QueryOptions
}

// MethodRouteExplain asks a server to explain the route of a client call
// without making it (a node-only agent asks its server).
const MethodRouteExplain = "Routing.Explain"

// RouteExplainRequest names the node or the allocation whose route is
// explained.
type RouteExplainRequest struct {
	NodeID  string
	AllocID string
	QueryOptions
}

// RouteExplain is the answer of GET /v1/client/route: where a client call
// for the node (or the allocation's node) goes from the agent that answers,
// and, when it goes nowhere, why.
type RouteExplain struct {
	NodeID  string
	AllocID string `json:",omitempty"`

	// ServedBy is the agent that answered (the server, or the node-only
	// agent that asked its server: then Relay names that server's
	// address).
	ServedBy string
	Relay    string `json:",omitempty"`

	// NodeServer and NodeServerAddr name the server holding the node's
	// session ("" when none does, or when the node is the answering agent
	// itself); Hops counts the RPC hops from ServedBy to the node: 0 the
	// agent's own node, 1 the node's session on ServedBy, 2 through the
	// peer holding it (one more through a node-only agent's server).
	NodeServer     string
	NodeServerAddr string
	Hops           int

	// Reachable says a call would reach the node now. Cached says the
	// holder came from the route cache (and was then checked).
	Reachable bool
	Cached    bool

	// NodeStatus is the node's status in the answering server's state.
	NodeStatus string `json:",omitempty"`

	// NoPath is why a call would end in "No path to node"; nil when
	// Reachable.
	NoPath *NoPathDetail `json:",omitempty"`
}

// Reasons for "No path to node" (NoPathDetail.Reason, header
// X-Tether-No-Path-Reason).
const (
	// NoPathNoSession: no alive server holds a session of the node.
	NoPathNoSession = "no_session"
	// NoPathHolderUnreachable: the server holding the node's session could
	// not be reached.
	NoPathHolderUnreachable = "holder_unreachable"
	// NoPathNodeDown: the servers consider the node down (its heartbeats
	// stopped).
	NoPathNodeDown = "node_down"
)

// NoPathDetail says why a call found no path to its node.
type NoPathDetail struct {
	Reason string

	// Since is when the answering server last saw the node's session go,
	// or when the node was marked down; zero when it does not know.
	Since time.Time `json:",omitzero"`

	// Server is the unreachable holder (its member name, else its RPC
	// address) for NoPathHolderUnreachable.
	Server string `json:",omitempty"`
}

// NoPathError is ErrNoPathToNode with the reason attached: its text and
// status are exactly ErrNoPathToNode's (clients match on the body), and
// errors.Is(err, ErrNoPathToNode) holds. Only the text and status survive
// an RPC hop; the agent that answers HTTP puts the detail in headers.
type NoPathError struct {
	NoPathDetail
}

// Error returns Nomad's text, "No path to node".
func (e *NoPathError) Error() string { return ErrNoPathToNode.Message }

// StatusCode returns 404, as Nomad.
func (e *NoPathError) StatusCode() int { return http.StatusNotFound }

// Unwrap returns ErrNoPathToNode.
func (e *NoPathError) Unwrap() error { return ErrNoPathToNode }

// Headers of every answer to a client call, naming where it went
// (README, "Why a call went where it did").
const (
	// HeaderServedBy names the agent that answered the HTTP request.
	HeaderServedBy = "X-Tether-Served-By"
	// HeaderNodeServer names the server holding the node's session.
	HeaderNodeServer = "X-Tether-Node-Server"
	// HeaderHops is the number of RPC hops from HeaderServedBy to the node.
	HeaderHops = "X-Tether-Hops"
	// HeaderRelay is the RPC address of the server a node-only agent asked.
	HeaderRelay = "X-Tether-Relay"
	// HeaderNoPathReason, HeaderNoPathSince and HeaderNoPathServer carry
	// a NoPathDetail beside the body "No path to node".
	HeaderNoPathReason = "X-Tether-No-Path-Reason"
	HeaderNoPathSince  = "X-Tether-No-Path-Since"
	HeaderNoPathServer = "X-Tether-No-Path-Server"
)
