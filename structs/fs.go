package structs

import "time"

// AllocFileInfo describes a file or directory in an allocation dir.
type AllocFileInfo struct {
	Name        string
	IsDir       bool
	Size        int64
	FileMode    string
	ModTime     time.Time
	ContentType string `json:",omitempty"`
}

// StreamFrame is one frame of a file or log stream. A frame with every
// field empty is a heartbeat ("{}" on the wire).
type StreamFrame struct {
	Offset    int64  `json:",omitempty"`
	Data      []byte `json:",omitempty"`
	File      string `json:",omitempty"`
	FileEvent string `json:",omitempty"`

	// DataConn, on the acknowledgement of a plain log read only, says the
	// bytes follow on the data connection the request's DataToken offered
	// (never part of the HTTP API).
	DataConn bool `codec:"DataConn,omitempty" json:"-"`

	// Stamps, in a line-mode log stream (LogsExt.LineMode), is the
	// capture time (Unix nanoseconds, 0 when unknown) of each line of
	// Data, in order (never part of the HTTP API).
	Stamps []int64 `codec:"Stamps,omitempty" json:"-"`

	// TaskEnd, on the last frame of a followed log stream, says how the
	// task ended (a field Nomad's clients ignore).
	TaskEnd *TaskEnd `codec:"TaskEnd,omitempty" json:",omitempty"`

	RelayRoute
}

// RelayRoute, on the first message of a stream a server relays to a node
// agent (a file stream's acknowledgement, a read's header), names the
// server holding the target node's session and the hops from the relay:
// the node agent's X-Tether-Node-Server and X-Tether-Hops. Never part of
// the HTTP API.
type RelayRoute struct {
	Via  string `codec:"Via,omitempty" json:"-"`
	Hops int    `codec:"Hops,omitempty" json:"-"`
}

// SetRelayRoute sets the route; a pointer to any type embedding
// RelayRoute has it.
func (r *RelayRoute) SetRelayRoute(via string, hops int) { r.Via, r.Hops = via, hops }

// IsHeartbeat reports whether the frame carries nothing.
func (f *StreamFrame) IsHeartbeat() bool {
	return f.Offset == 0 && len(f.Data) == 0 && f.File == "" && f.FileEvent == "" && f.TaskEnd == nil
}

// File events carried in StreamFrame.FileEvent.
const (
	FileEventDeleted   = "file deleted"
	FileEventTruncated = "file truncated"
)

// MaxFrameData is the most data one stream frame carries.
const MaxFrameData = 64 * 1024

// File system RPC methods (client methods; the last three stream).
const (
	MethodFsList   = "FileSystem.List"
	MethodFsStat   = "FileSystem.Stat"
	MethodFsReadAt = "FileSystem.ReadAt"
	MethodFsStream = "FileSystem.Stream"
	MethodFsLogs   = "FileSystem.Logs"
)

// FsListRequest lists (or stats) a path of an allocation dir.
type FsListRequest struct {
	AllocID string
	Path    string
	QueryOptions
}

// FsListResponse is a directory listing.
type FsListResponse struct {
	Files []*AllocFileInfo
}

// FsStatResponse describes one path.
type FsStatResponse struct {
	Info *AllocFileInfo
}

// FsReadAtRequest reads Limit bytes (≤ 0: to the end) from Offset; cat is
// Offset 0, Limit -1.
type FsReadAtRequest struct {
	AllocID string
	Path    string
	Offset  int64
	Limit   int64

	// DataToken, set by a server that holds the node's session, offers a
	// data connection (rpc.DialData) for the bytes; see FsReadAtHeader.
	DataToken []byte `codec:"DataToken" json:"-"`

	QueryOptions
}

// FsReadAtHeader is the first message a node sends for FsReadAtRequest,
// once the file is open: what follows it. Then come exactly Length bytes,
// as raw stream messages (rpc.Stream.SendRaw) or on a data connection;
// fewer means the read failed.
type FsReadAtHeader struct {
	// Length is the number of bytes that follow: the file's size when it
	// was opened, less Offset, at most Limit.
	Length int64

	// ContentType is sniffed from the first 512 bytes of what follows.
	ContentType string

	// DataConn says the bytes follow on the data connection the request's
	// DataToken offered, not on the stream; the stream then carries only
	// the result.
	DataConn bool

	RelayRoute
}

// FsStreamRequest streams a file.
type FsStreamRequest struct {
	AllocID string
	Path    string
	Offset  int64
	Origin  string
	Follow  bool
	QueryOptions
}

// FsLogsRequest streams a task's logs.
type FsLogsRequest struct {
	AllocID string
	Task    string
	LogType string
	Offset  int64
	Origin  string
	Follow  bool

	// Plain asks for the log's bytes only: after the acknowledgement the
	// node sends data as raw stream messages, with no File, Offset or
	// file events (plain=true over HTTP, which shows none of them).
	Plain bool

	// DataToken offers a data connection for a plain read that does not
	// follow, as FsReadAtRequest.DataToken does; the acknowledgement's
	// DataConn says whether the node took it.
	DataToken []byte `codec:"DataToken" json:"-"`

	// LogsExt are Tether's additions (structs/logs_ext.go).
	LogsExt

	QueryOptions
}

// The streaming file methods answer with StreamFrames. The first frame is
// always an empty acknowledgement sent once the request was validated and
// the file opened, so a caller can answer validation errors with a real
// HTTP status before it commits to 200. A clean end is EOF; an error ends
// the stream with the remote error.
