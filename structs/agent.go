package structs

// Agent methods: the agent's own log and profiles, served by every agent
// (servers and nodes) and forwarded like client calls: to a node through
// the servers (NodeID), to another server through the peer pool
// (ServerID).
const (
	// MethodAgentMonitor streams the agent's log: an empty StreamFrame
	// once the request is valid, then one StreamFrame per log line.
	MethodAgentMonitor = "Agent.Monitor"

	// MethodAgentProfile streams a runtime profile: a ProfileHeader once
	// the profile has started, then its bytes as raw messages.
	MethodAgentProfile = "Agent.Profile"
)

// MaxProfileSeconds bounds the seconds of a CPU profile or trace.
const MaxProfileSeconds = 300

// MonitorRequest asks an agent for its log.
type MonitorRequest struct {
	AgentTarget
	// LogLevel is the least level sent (hclog's names, any case).
	LogLevel string
	// LogJSON sends each line as hclog's JSON.
	LogJSON bool
	// PlainText asks the HTTP side for the bare lines (no frames).
	PlainText bool

	QueryOptions
}

// ProfileRequest asks an agent for a runtime profile.
type ProfileRequest struct {
	AgentTarget
	// Profile is cmdline, profile (CPU), trace, or a runtime/pprof
	// profile name (goroutine, heap, allocs, block, mutex, threadcreate).
	Profile string
	// Seconds is how long a CPU profile or trace runs (0 means 1).
	Seconds int
	// Debug > 0 asks a lookup profile in text form.
	Debug int
	// GC > 0 runs a garbage collection before a heap profile.
	GC int

	QueryOptions
}

// ProfileHeader is the first message of a profile stream, sent once the
// profile has started: until then an error is a real HTTP status.
type ProfileHeader struct {
	// ContentType is the HTTP Content-Type of the profile's bytes.
	ContentType string
	// Filename is what a browser saves the bytes as.
	Filename string
}

// AgentTarget is where an agent call goes; both requests embed it.
type AgentTarget struct {
	// NodeID names the node whose agent answers ("" for the agent asked).
	NodeID string
	// ServerID names the server that answers: its member name, its name
	// without the region, its raft ID, its RPC or membership address, or
	// "leader".
	ServerID string
	// Forwarded is set by the server that resolved ServerID: the peer
	// answers itself and never forwards again.
	Forwarded bool
}

// Target returns the target itself, for code shared by both requests.
func (t *AgentTarget) Target() *AgentTarget { return t }
