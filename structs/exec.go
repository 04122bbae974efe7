package structs

import (
	"slices"
	"strconv"

	"github.com/segmentio/asm/base64"
)

// Methods that act on an allocation's tasks (client methods). Exec
// streams both ways; restart and signal are unary.
const (
	MethodClientExec         = "Allocations.Exec"
	MethodClientAllocRestart = "ClientAllocations.Restart"
	MethodClientAllocSignal  = "ClientAllocations.Signal"
)

// Task event types of the lifecycle calls, Nomad's names.
const (
	TaskRestartSignal = "Restart Signaled"
	TaskSignaling     = "Signaling"
)

// Limits of an exec session's input.
const (
	// MaxExecCommandArgs and MaxExecCommandBytes bound the command of an
	// exec: its words, and its JSON as the query carries it.
	MaxExecCommandArgs  = 1024
	MaxExecCommandBytes = 64 << 10

	// MaxExecInputMessage bounds one WebSocket message from an exec
	// caller (Nomad's clients send 2 KiB of stdin at a time).
	MaxExecInputMessage = 1 << 20

	// MaxExecOutputChunk is the most output one exec message carries.
	MaxExecOutputChunk = 32 << 10

	// MaxTerminalDimension bounds a TTY resize (rows or columns).
	MaxTerminalDimension = 10000
)

// AllocExecRequest runs a command in a task's environment (GET
// /v1/client/allocation/:alloc_id/exec). The stream then carries
// ExecStreamingInput from the caller and ExecStreamingOutput, as JSON in
// raw messages, from the node; the first message from the node is an
// empty output (an acknowledgement: the command runs).
type AllocExecRequest struct {
	AllocID string
	Task    string
	Tty     bool
	Cmd     []string
	QueryOptions
}

// ValidateExecCommand refuses an empty or oversized command.
func ValidateExecCommand(cmd []string) error {
	switch {
	case len(cmd) == 0 || cmd[0] == "":
		return BadRequest("command is not present")
	case len(cmd) > MaxExecCommandArgs:
		return BadRequest("command has more than %d words", MaxExecCommandArgs)
	}
	n := 0
	for _, w := range cmd {
		n += len(w)
	}
	if n > MaxExecCommandBytes {
		return BadRequest("command is longer than %d bytes", MaxExecCommandBytes)
	}
	return nil
}

// ExecStreamingIOOperation is a write to a stream: data, or its close.
type ExecStreamingIOOperation struct {
	Data  []byte `json:"data,omitempty"`
	Close bool   `json:"close,omitempty"`
}

// TerminalSize is a TTY's size.
type TerminalSize struct {
	Height int `json:"height,omitempty"`
	Width  int `json:"width,omitempty"`
}

// ExecStreamingInput is one message from an exec caller: stdin data or
// close, or a TTY resize; none of them is a heartbeat.
type ExecStreamingInput struct {
	Stdin   *ExecStreamingIOOperation `json:"stdin,omitempty"`
	TTYSize *TerminalSize             `json:"tty_size,omitempty"`
}

// IsHeartbeat reports whether the input carries nothing.
func (in *ExecStreamingInput) IsHeartbeat() bool { return in.Stdin == nil && in.TTYSize == nil }

// Validate refuses input a command cannot be given.
func (in *ExecStreamingInput) Validate() error {
	if in.Stdin != nil && in.TTYSize != nil {
		return BadRequest("exec input must carry stdin or tty_size, not both")
	}
	if s := in.TTYSize; s != nil {
		if s.Height < 0 || s.Width < 0 || s.Height > MaxTerminalDimension || s.Width > MaxTerminalDimension {
			return BadRequest("tty_size must be between 0 and %d", MaxTerminalDimension)
		}
	}
	return nil
}

// ExecStreamingExitResult is how an exec'd command ended.
type ExecStreamingExitResult struct {
	ExitCode int `json:"exit_code"`
}

// ExecStreamingOutput is one message to an exec caller: stdout or stderr
// data, or the exit.
type ExecStreamingOutput struct {
	Stdout *ExecStreamingIOOperation `json:"stdout,omitempty"`
	Stderr *ExecStreamingIOOperation `json:"stderr,omitempty"`
	Exited bool                      `json:"exited,omitempty"`
	Result *ExecStreamingExitResult  `json:"result,omitempty"`
}

// AppendExecDataJSON appends the JSON of an ExecStreamingOutput carrying
// data on stream ("stdout" or "stderr"), as encoding/json writes it,
// without reflection: bulk output spends its time here.
func AppendExecDataJSON(b []byte, stream string, data []byte) []byte {
	b = append(b, `{"`...)
	b = append(b, stream...)
	b = append(b, `":{"data":"`...)
	n := base64.StdEncoding.EncodedLen(len(data))
	b = slices.Grow(b, n+4)
	start := len(b)
	b = b[:start+n]
	base64.StdEncoding.Encode(b[start:], data)
	return append(b, `"}}`...)
}

// AppendExecExitJSON appends the JSON of the exit message.
func AppendExecExitJSON(b []byte, code int) []byte {
	b = append(b, `{"exited":true,"result":{"exit_code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, "}}"...)
}

// AllocRestartRequest restarts one task of an allocation, or all
// (PUT /v1/client/allocation/:alloc_id/restart). With neither, the
// running tasks restart.
type AllocRestartRequest struct {
	AllocID  string
	TaskName string
	AllTasks bool
	QueryOptions
}

// AllocSignalRequest sends a signal to one task of an allocation, or to
// every running one when Task is empty
// (PUT /v1/client/allocation/:alloc_id/signal).
type AllocSignalRequest struct {
	AllocID string
	Task    string
	Signal  string
	QueryOptions
}
