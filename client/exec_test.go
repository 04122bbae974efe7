package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// execHarness serves one exec session on an in-process stream, as the
// node's handler does after its checks.
type execHarness struct {
	st       *rpc.Stream
	taskDone chan struct{}
	pid      chan int
}

func startExecHarness(t *testing.T, ctx context.Context, cmd []string, tty bool) *execHarness {
	t.Helper()
	h := &execHarness{taskDone: make(chan struct{}), pid: make(chan int, 1)}
	m := rpc.NewMux()
	m.HandleStream("Exec", func(ctx context.Context, st *rpc.Stream) error {
		var req structs.AllocExecRequest
		if err := st.Recv(&req); err != nil {
			return err
		}
		s, err := startExec(req.Cmd, req.Tty, []string{"PATH=/usr/bin:/bin", "MARK=task-env"}, t.TempDir())
		if err != nil {
			var ne *execNotFound
			if errors.As(err, &ne) {
				return sendExecNotFound(st, ne)
			}
			return err
		}
		h.pid <- s.grp.pid
		if err := st.SendRaw(execAck); err != nil {
			s.abort(hclog.NewNullLogger())
			return err
		}
		return s.serve(ctx, st, h.taskDone, hclog.NewNullLogger())
	})
	st, err := m.OpenLocal(ctx, "Exec", &structs.AllocExecRequest{Cmd: cmd, Tty: tty})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.st = st
	if out := h.next(t); out != (structs.ExecStreamingOutput{}) {
		t.Fatalf("first message %+v; want the empty acknowledgement", out)
	}
	return h
}

// next reads one output message.
func (h *execHarness) next(t *testing.T) structs.ExecStreamingOutput {
	t.Helper()
	m, err := h.st.RecvMsg()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	defer m.Release()
	var out structs.ExecStreamingOutput
	if err := json.Unmarshal(m.Bytes(), &out); err != nil {
		t.Fatalf("output %q is not JSON: %v", m.Bytes(), err)
	}
	return out
}

// until reads output until the exit; it returns stdout, stderr and the
// exit code.
func (h *execHarness) until(t *testing.T) (stdout, stderr string, code int) {
	t.Helper()
	var o, e strings.Builder
	for {
		out := h.next(t)
		switch {
		case out.Stdout != nil:
			o.Write(out.Stdout.Data)
		case out.Stderr != nil:
			e.Write(out.Stderr.Data)
		case out.Exited:
			return o.String(), e.String(), out.Result.ExitCode
		}
	}
}

func (h *execHarness) send(t *testing.T, in structs.ExecStreamingInput) {
	t.Helper()
	if err := h.st.Send(&in); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func TestExecSession_Commands(t *testing.T) {
	for _, tc := range []struct {
		name           string
		cmd            []string
		tty            bool
		stdin          string
		stdout, stderr string
		code           int
	}{
		{name: "echo", cmd: []string{"echo", "hi"}, stdout: "hi\n"},
		{name: "exit code", cmd: []string{"sh", "-c", "exit 7"}, code: 7},
		{name: "both streams", cmd: []string{"sh", "-c", "echo o; echo e >&2"}, stdout: "o\n", stderr: "e\n"},
		{name: "env", cmd: []string{"sh", "-c", "echo $MARK"}, stdout: "task-env\n"},
		{name: "stdin", cmd: []string{"cat"}, stdin: "abc\n", stdout: "abc\n"},
		{name: "not found", cmd: []string{"no-such-cmd-q"}, stderr: `exec: "no-such-cmd-q": executable file not found in $PATH` + "\n", code: 127},
		{name: "not executable", cmd: []string{"/etc/hostname"}, stderr: `exec: "/etc/hostname"`, code: 126},
		{name: "tty", cmd: []string{"sh", "-c", "test -t 0 && test -t 1 && echo on-tty"}, tty: true, stdout: "on-tty\r\n"},
		{name: "signalled", cmd: []string{"sh", "-c", "kill -KILL $$"}, code: 128 + 9},
		{name: "large output", cmd: []string{"head", "-c", "1000000", "/dev/zero"}, stdout: strings.Repeat("\x00", 1000000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			h := startExecHarness(t, ctx, tc.cmd, tc.tty)
			if tc.stdin != "" {
				h.send(t, structs.ExecStreamingInput{Stdin: &structs.ExecStreamingIOOperation{Data: []byte(tc.stdin)}})
			}
			h.send(t, structs.ExecStreamingInput{Stdin: &structs.ExecStreamingIOOperation{Close: true}})
			stdout, stderr, code := h.until(t)
			if stdout != tc.stdout || !strings.Contains(stderr, tc.stderr) || code != tc.code {
				t.Errorf("stdout %.60q, stderr %q, exit %d; want %.60q, %q, %d", stdout, stderr, code, tc.stdout, tc.stderr, tc.code)
			}
		})
	}
}

// groupGone reports whether process group pgid has no member left.
func groupGone(pgid int) bool {
	return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !groupGone(pgid) {
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still has members", pgid)
		}
		<-time.After(10 * time.Millisecond) // polling, not synchronisation
	}
}

// TestExecSession_EndsKillTheGroup ends sessions the ways other than the
// command's exit (the caller closes, the task ends) and checks that the
// command and its children are gone.
func TestExecSession_EndsKillTheGroup(t *testing.T) {
	for _, tc := range []struct {
		name string
		tty  bool
		end  func(h *execHarness)
	}{
		{"caller closes", false, func(h *execHarness) { h.st.Close() }},
		{"caller closes a tty", true, func(h *execHarness) { h.st.Close() }},
		{"caller closes a shell with jobs", true, func(h *execHarness) { h.st.Close() }},
		{"task ends", false, func(h *execHarness) { close(h.taskDone) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := []string{"sh", "-c", "sleep 1000 & sleep 1000 & echo up; wait"}
			if strings.Contains(tc.name, "jobs") {
				// An interactive shell puts each job in a group of its
				// own: only the session holds them all.
				cmd = []string{"sh", "-i", "-c", "set -m; sleep 1000 & echo up; wait"}
			}
			h := startExecHarness(t, ctx, cmd, tc.tty)
			pgid := <-h.pid
			if out := h.next(t); out.Stdout == nil || !strings.Contains(string(out.Stdout.Data), "up") {
				t.Fatalf("first output %+v", out)
			}
			tc.end(h)
			if tc.name == "task ends" {
				_, err := h.st.RecvMsg()
				var re *rpc.RemoteError
				if !errors.As(err, &re) || structs.StatusCode(err) != 409 {
					t.Errorf("session ended with %v; want the node's 409", err)
				}
			}
			waitGroupGone(t, pgid)
			waitSessionGone(t, pgid)
		})
	}
}

// waitSessionGone waits until no process is left in session sid.
func waitSessionGone(t *testing.T, sid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range stats {
			b, _ := os.ReadFile(p)
			if i := bytes.LastIndexByte(b, ')'); i >= 0 {
				if f := strings.Fields(string(b[i+1:])); len(f) > 3 && f[3] == strconv.Itoa(sid) && f[0] != "Z" {
					left++
				}
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes left in session %d", left, sid)
		}
		<-time.After(10 * time.Millisecond) // polling, not synchronisation
	}
}

// TestExecSession_Resize checks that a resize reaches the terminal.
func TestExecSession_Resize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := startExecHarness(t, ctx, []string{"sh"}, true)
	h.send(t, structs.ExecStreamingInput{TTYSize: &structs.TerminalSize{Height: 12, Width: 34}})
	h.send(t, structs.ExecStreamingInput{Stdin: &structs.ExecStreamingIOOperation{Data: []byte("stty size; exit 5\n")}})
	stdout, _, code := h.until(t)
	if !strings.Contains(stdout, "12 34") || code != 5 {
		t.Fatalf("stdout %q, exit %d; want the size and 5", stdout, code)
	}
}

// TestExecOutputJSON checks the hand-written output encoding against
// encoding/json.
func TestExecOutputJSON(t *testing.T) {
	for _, data := range [][]byte{{0}, []byte("hello\n"), make([]byte, 70000)} {
		want, _ := json.Marshal(structs.ExecStreamingOutput{Stderr: &structs.ExecStreamingIOOperation{Data: data}})
		if got := structs.AppendExecDataJSON(nil, "stderr", data); string(got) != string(want) {
			t.Errorf("data of %d bytes: %.80s; want %.80s", len(data), got, want)
		}
	}
	want, _ := json.Marshal(structs.ExecStreamingOutput{Exited: true, Result: &structs.ExecStreamingExitResult{ExitCode: 130}})
	if got := structs.AppendExecExitJSON(nil, 130); string(got) != string(want) {
		t.Errorf("exit: %s; want %s", got, want)
	}
}
