package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/gorilla/websocket"

	"tether/rpc"
	"tether/server"
	"tether/structs"
)

// Exec into a task (issue #20): GET /v1/client/allocation/:alloc_id/exec
// upgraded to a WebSocket carrying Nomad's JSON messages. A malformed
// request (no task, a command that is not a JSON list) is an HTTP 400
// before the upgrade; the token, the allocation, the task and the
// command's start are checked after it, and a refusal is a close frame
// with the error's text, as Nomad sends it (the Go client returns that
// text as its error). With ws_handshake=true (a browser, which cannot
// set headers) the token comes in the first message. Then one goroutine copies the caller's messages to
// the node's stream and the handler copies the node's to the caller, one
// message at a time each way: a side that does not read holds the other
// back, through TCP and the stream's window.

// execWriteTimeout bounds one write to an exec caller: a caller that
// stops reading for that long ends the session (and the command).
const execWriteTimeout = 30 * time.Second

// execHandshakeTimeout bounds the wait for a browser's handshake message.
const execHandshakeTimeout = 10 * time.Second

// execUpgrader upgrades exec requests. Its buffers are per connection and
// small (Nomad's clients send 2 KiB of stdin at a time); its origin check
// is gorilla's default, same origin only.
var execUpgrader = websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}

// clientAllocExec serves /v1/client/allocation/:alloc_id/exec.
func (a *Agent) clientAllocExec(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod
	}
	req, handshake, err := execRequest(r)
	if err != nil {
		return nil, err
	}
	if !websocket.IsWebSocketUpgrade(r) {
		return nil, structs.BadRequest("exec needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)")
	}
	if err := a.streams.acquire(); err != nil {
		return nil, err
	}
	defer a.streams.release()

	// The session outlives neither its caller nor the agent: a hijacked
	// connection is not waited for by the HTTP server's shutdown.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(a.queries.done(), cancel)
	defer stop()

	// As Nomad: the request's parameters are refused with an HTTP status;
	// from the token on (a browser's comes after the upgrade), refusals
	// are close frames carrying the error's text, which the Go client
	// returns as the error.
	conn, err := execUpgrader.Upgrade(w, r, routeHeaders(w.Header()))
	if err != nil {
		return nil, nil // Upgrade answered the caller
	}
	defer conn.Close()
	if handshake {
		if err := readExecHandshake(conn, req); err != nil {
			closeExec(conn, err)
			return nil, nil
		}
	}
	st, err := a.openExec(ctx, req)
	if err != nil {
		closeExec(conn, err)
		return nil, nil
	}
	a.serveExec(ctx, conn, st)
	return nil, nil
}

// execRequest reads an exec's parameters: task, command (a JSON array of
// strings), tty, ws_handshake.
func execRequest(r *http.Request) (*structs.AllocExecRequest, bool, error) {
	allocID := mux.Vars(r)["id"]
	if err := checkAllocID(allocID); err != nil {
		return nil, false, err
	}
	q := r.URL.Query()
	req := &structs.AllocExecRequest{AllocID: allocID, Task: q.Get("task"), QueryOptions: queryOptionsOf(r, q)}
	if req.Task == "" {
		return nil, false, structs.BadRequest("must provide task name")
	}
	raw := q.Get("command")
	if len(raw) > structs.MaxExecCommandBytes {
		return nil, false, structs.BadRequest("command is longer than %d bytes", structs.MaxExecCommandBytes)
	}
	if raw == "" {
		return nil, false, structs.BadRequest("command is not present")
	}
	if err := json.Unmarshal([]byte(raw), &req.Cmd); err != nil {
		return nil, false, structs.BadRequest("failed to decode command: command must be a JSON array of strings")
	}
	if err := structs.ValidateExecCommand(req.Cmd); err != nil {
		return nil, false, err
	}
	var err error
	if req.Tty, err = queryBool(q, "tty", false); err != nil {
		return nil, false, err
	}
	handshake, err := queryBool(q, "ws_handshake", false)
	if err != nil {
		return nil, false, err
	}
	return req, handshake, nil
}

// execHandshake is a browser's first message when it asked for
// ws_handshake: the token it cannot send as a header (Nomad's shape).
type execHandshake struct {
	Version   int    `json:"version"`
	AuthToken string `json:"auth_token"`
}

// readExecHandshake reads the handshake message into req's token.
func readExecHandshake(conn *websocket.Conn, req *structs.AllocExecRequest) error {
	conn.SetReadLimit(structs.MaxExecInputMessage)
	conn.SetReadDeadline(time.Now().Add(execHandshakeTimeout))
	var h execHandshake
	if err := conn.ReadJSON(&h); err != nil {
		return structs.BadRequest("failed to read the exec handshake: %v", err)
	}
	if h.Version != 1 {
		return structs.BadRequest("unexpected handshake value")
	}
	conn.SetReadDeadline(time.Time{})
	if h.AuthToken != "" {
		req.AuthToken = h.AuthToken
	}
	return nil
}

// openExec routes the exec, starts it on the node and waits for the
// node's acknowledgement: the command runs. An error is the node's (or
// the route's), with its status.
func (a *Agent) openExec(ctx context.Context, req *structs.AllocExecRequest) (*rpc.Stream, error) {
	rt, err := a.backend.route(ctx, server.Target{AllocID: req.AllocID}, structs.MethodClientExec, req)
	if err != nil {
		return nil, err
	}
	if rt.srv != nil {
		if err := a.server.CheckExecDriver(req.AuthToken, rt.srv.Alloc, req.Task); err != nil {
			return nil, err
		}
	}
	st, err := rt.duplex(ctx, structs.MethodClientExec, req)
	if err != nil {
		return nil, err
	}
	m, err := st.RecvMsg()
	if err != nil {
		st.Close()
		if errors.Is(err, io.EOF) {
			err = structs.NewError(http.StatusInternalServerError, "exec ended before it started")
		}
		return nil, err
	}
	m.Release()
	return st, nil
}

// duplex opens a streaming client call whose caller keeps sending (exec):
// in process, through this server's route, or relayed by the node's
// server.
func (rt *callRoute) duplex(ctx context.Context, method string, args any) (*rpc.Stream, error) {
	var st *rpc.Stream
	var err error
	switch {
	case rt.local:
		st, err = rt.b.client.Mux().OpenLocal(ctx, method, args)
	case rt.srv != nil:
		st, err = rt.srv.OpenDuplex(ctx, method, args)
	default:
		st, err = rt.b.client.ServerStream(ctx, method, args)
	}
	rt.note(err)
	return st, err
}

// routeHeaders returns the route's headers (X-Tether-*) of h, for the
// upgrade's answer.
func routeHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "X-Tether-") {
			out[k] = v
		}
	}
	return out
}

// serveExec relays an upgraded exec between conn and the node's stream
// until either ends, then closes both: the caller gets the node's last
// word (its exit message then a normal close, or the error in a close
// frame), the node's command is killed if it still runs.
func (a *Agent) serveExec(ctx context.Context, conn *websocket.Conn, st *rpc.Stream) {
	conn.SetReadLimit(structs.MaxExecInputMessage)
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()

	var once sync.Once
	var last error // why the session ended, for the close frame (nil: normally)
	end := func(err error) {
		once.Do(func() {
			last = err
			st.Close()
		})
	}

	input := make(chan struct{})
	go func() {
		defer close(input)
		if err := execInput(conn, st); err != nil {
			end(err) // the caller is done: so is the command
		}
	}()

	err := execOutput(conn, st)
	end(err)
	closeExec(conn, last)
	conn.Close() // ends the input copy's read
	<-input
}

// execInput copies the caller's messages to the node, one at a time,
// until the caller closes or goes away (errExecCallerGone), sends what is
// not an exec input, or the node's stream ends (nil: the output copy
// relays the end).
func execInput(conn *websocket.Conn, st *rpc.Stream) error {
	for {
		typ, p, err := conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				return structs.NewError(http.StatusRequestEntityTooLarge, "exec message is larger than %d bytes", structs.MaxExecInputMessage)
			}
			return errExecCallerGone // closed, reset, or our own close
		}
		if typ != websocket.TextMessage {
			return structs.BadRequest("exec messages must be JSON text")
		}
		var in structs.ExecStreamingInput
		if err := json.Unmarshal(p, &in); err != nil {
			return structs.BadRequest("exec message is not JSON: %v", err)
		}
		if err := in.Validate(); err != nil {
			return err
		}
		if in.IsHeartbeat() {
			continue
		}
		if err := st.Send(&in); err != nil {
			return nil // the node ended: the output copy relays how
		}
	}
}

// execOutput copies the node's messages to the caller until the node
// ends: nil after its exit message, else the node's error.
func execOutput(conn *websocket.Conn, st *rpc.Stream) error {
	for {
		m, err := st.RecvMsg()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !m.Raw() {
			m.Release()
			return structs.NewError(http.StatusInternalServerError, "unexpected exec message from the node")
		}
		conn.SetWriteDeadline(time.Now().Add(execWriteTimeout))
		err = conn.WriteMessage(websocket.TextMessage, m.Bytes())
		m.Release()
		if err != nil {
			return errExecCallerGone
		}
	}
}

// errExecCallerGone ends a session whose caller cannot be written to.
var errExecCallerGone = errors.New("exec caller went away")

// closeExec sends the close frame that ends a session: normal after the
// exit, else the error's text with Nomad's code for its status (1011 for
// a 5xx, 1008 otherwise; 1009 for an oversized message).
func closeExec(conn *websocket.Conn, err error) {
	code, text := websocket.CloseNormalClosure, ""
	if err != nil {
		if errors.Is(err, errExecCallerGone) {
			return
		}
		code, text = websocket.ClosePolicyViolation, err.Error()
		switch status := structs.StatusCode(err); {
		case status == http.StatusRequestEntityTooLarge:
			code = websocket.CloseMessageTooBig
		case status >= 500:
			code = websocket.CloseInternalServerErr
		}
		const maxCloseText = 123 // a control frame carries 125 bytes, the code 2
		if len(text) > maxCloseText {
			text = strings.ToValidUTF8(text[:maxCloseText], "")
		}
	}
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}
