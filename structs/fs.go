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
}

// IsHeartbeat reports whether the frame carries nothing.
func (f *StreamFrame) IsHeartbeat() bool {
	return f.Offset == 0 && len(f.Data) == 0 && f.File == "" && f.FileEvent == ""
}

// File events carried in StreamFrame.FileEvent.
const (
	FileEventDeleted   = "file deleted"
	FileEventTruncated = "file truncated"
)

// MaxFrameData is the most data one stream frame carries.
const MaxFrameData = 64 * 1024
