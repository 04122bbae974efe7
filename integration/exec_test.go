package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
)

// withUnreachableHTTP advertises a node HTTP address nothing listens on,
// so that the Go client, which tries the node first, falls back to the
// server it was given: the calls take the server's route.
func withUnreachableHTTP() agentOpt {
	return func(c *agent.Config) { c.Advertise.HTTP = "127.0.0.1:1" }
}

// execEnv is where exec tests run: api is the agent the caller talks to,
// node runs the allocation.
type execEnv struct {
	api  *testAgent
	node *testAgent
}

// startExecEnv starts a server (or, with peer, two servers, the node
// dialing the first and the caller talking to the second) and a node with
// raw_exec and mock_driver that the Go client cannot reach directly.
func startExecEnv(t *testing.T, peer bool, opts ...agentOpt) execEnv {
	t.Helper()
	if !peer {
		srv := startServer(t, "server1")
		node := startNode(t, "node1", append([]agentOpt{withServers(srv.RPCAddr()), withMockDriver(), withUnreachableHTTP()}, opts...)...)
		return execEnv{api: srv, node: node}
	}
	c := startCluster(t, 2)
	node := startNode(t, "node1", append([]agentOpt{withServers(c.servers[0].RPCAddr()), withMockDriver(), withUnreachableHTTP()}, opts...)...)
	return execEnv{api: c.servers[1], node: node}
}

// execVias are the two routes every exec test takes.
var execVias = []struct {
	name string
	peer bool
}{{"server", false}, {"peer", true}}

// execJob runs a long-lived raw_exec task "main" (and a mock_driver task
// "mock" in its own group) and returns the allocations by group.
func execJob(t *testing.T, api *nomad.Client, id string) (raw, mock *nomad.Allocation) {
	t.Helper()
	job := &nomad.Job{ID: ptr(id), Type: ptr("service"), Datacenters: []string{"dc1"}}
	for _, task := range []*nomad.Task{shellTask("main", `echo started; while :; do sleep 1; done`), mockTask("mock", map[string]any{"run_for": "1h"})} {
		job.TaskGroups = append(job.TaskGroups, &nomad.TaskGroup{Name: ptr(task.Name), Tasks: []*nomad.Task{task}})
	}
	registerJob(t, api, job)
	byTask := map[string]string{}
	waitFor(t, 30*time.Second, "allocations of "+id, func() (bool, error) {
		allocs, _, err := api.Jobs().Allocations(id, false, nil)
		for _, a := range allocs {
			byTask[a.TaskGroup] = a.ID
		}
		return len(byTask) == 2, err
	})
	waitStarted(t, api, byTask["main"], "main")
	waitStarted(t, api, byTask["mock"], "mock")
	raw, _, err := api.Allocations().Info(byTask["main"], nil)
	if err != nil {
		t.Fatal(err)
	}
	mock, _, err = api.Allocations().Info(byTask["mock"], nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw, mock
}

// registerJob registers job, again while the cluster answers that it
// lost its leader mid-write (two in-process servers on a loaded machine
// do re-elect; that is not what these tests test).
func registerJob(t *testing.T, api *nomad.Client, job *nomad.Job) {
	t.Helper()
	waitFor(t, 30*time.Second, "job "+*job.ID+" registered", func() (bool, error) {
		_, _, err := api.Jobs().Register(job, nil)
		return err == nil, err
	})
}

// execResult is what one exec returned.
type execResult struct {
	code           int
	stdout, stderr string
	err            error
}

// runExec runs cmd in task through the Go client, with stdin as input.
func runExec(ctx context.Context, api *nomad.Client, a *nomad.Allocation, task string, tty bool, stdin string, cmd ...string) execResult {
	var out, errb bytes.Buffer
	code, err := api.Allocations().Exec(ctx, a, task, tty, cmd, strings.NewReader(stdin), &out, &errb, nil, nil)
	return execResult{code, out.String(), errb.String(), err}
}

// TestExec_Commands runs commands through a server and through a peer
// with the official Go client: exit codes, output on both streams, stdin,
// the task's environment and working directory, a command that does not
// exist, and the refusals of a task that cannot take an exec.
func TestExec_Commands(t *testing.T) {
	for _, via := range execVias {
		t.Run(via.name, func(t *testing.T) {
			env := startExecEnv(t, via.peer)
			api := env.api.API(t)
			raw, mock := execJob(t, api, "exec-"+via.name)
			ctx, cancel := contextWithTimeout(30 * time.Second)
			defer cancel()

			for _, tc := range []struct {
				name       string
				stdin      string
				cmd        []string
				code       int
				stdout     string
				stderrPart string
			}{
				{name: "echo", cmd: []string{"echo", "hello"}, stdout: "hello\n"},
				{name: "exit 7", cmd: []string{"sh", "-c", "exit 7"}, code: 7},
				{name: "stderr", cmd: []string{"sh", "-c", "echo out; echo err >&2"}, stdout: "out\n", stderrPart: "err"},
				{name: "stdin", stdin: "one\ntwo\n", cmd: []string{"cat"}, stdout: "one\ntwo\n"},
				{name: "task env", cmd: []string{"sh", "-c", `echo "$NOMAD_TASK_NAME $NOMAD_ALLOC_ID"; basename "$PWD"`}, stdout: "main " + raw.ID + "\nmain\n"},
				{name: "not found", cmd: []string{"no-such-command-xyz"}, code: 127, stderrPart: "no-such-command-xyz"},
				{name: "signalled", cmd: []string{"sh", "-c", "kill -TERM $$"}, code: 128 + 15},
			} {
				res := runExec(ctx, api, raw, "main", false, tc.stdin, tc.cmd...)
				if res.err != nil || res.code != tc.code || res.stdout != tc.stdout || !strings.Contains(res.stderr, tc.stderrPart) {
					t.Errorf("%s: exit %d, stdout %q, stderr %q, err %v; want exit %d, stdout %q, stderr with %q",
						tc.name, res.code, res.stdout, res.stderr, res.err, tc.code, tc.stdout, tc.stderrPart)
				}
			}

			for _, tc := range []struct {
				name, task string
				alloc      *nomad.Allocation
				cmd        []string
				want       string
			}{
				{"unknown task", "nope", raw, []string{"true"}, `unknown task name "nope"`},
				{"mock driver", "mock", mock, []string{"true"}, "task driver does not support exec"},
				{"empty command", "main", raw, []string{}, "command is not present"},
			} {
				res := runExec(ctx, api, tc.alloc, tc.task, false, "", tc.cmd...)
				if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
					t.Errorf("%s: exit %d, err %v; want an error with %q", tc.name, res.code, res.err, tc.want)
				}
			}
		})
	}
}

// TestExec_TTY drives an interactive shell on a terminal through a server
// and through a peer: a line in, its answer and the prompt out, a resize
// seen by the shell, and exit.
func TestExec_TTY(t *testing.T) {
	for _, via := range execVias {
		t.Run(via.name, func(t *testing.T) {
			env := startExecEnv(t, via.peer)
			api := env.api.API(t)
			raw, _ := execJob(t, api, "tty-"+via.name)
			ctx, cancel := contextWithTimeout(30 * time.Second)
			defer cancel()

			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			sizes := make(chan nomad.TerminalSize, 1)
			type result struct {
				code int
				err  error
			}
			done := make(chan result, 1)
			go func() {
				code, err := api.Allocations().Exec(ctx, raw, "main", true, []string{"/bin/sh"}, inR, outW, outW, sizes, nil)
				outW.Close()
				done <- result{code, err}
			}()
			out := bufio.NewReader(outR)
			expect := func(want string) string {
				t.Helper()
				var seen strings.Builder
				for !strings.Contains(seen.String(), want) {
					b, err := out.ReadByte()
					if err != nil {
						t.Fatalf("reading the terminal for %q: %v (saw %q)", want, err, seen.String())
					}
					seen.WriteByte(b)
				}
				return seen.String()
			}
			write := func(s string) {
				t.Helper()
				if _, err := io.WriteString(inW, s); err != nil {
					t.Fatalf("writing %q: %v", s, err)
				}
			}
			write("PS1='prompt> '\n")
			expect("prompt> ")
			write("echo answer-$((6*7))\n")
			expect("answer-42")
			expect("prompt> ")
			sizes <- nomad.TerminalSize{Height: 33, Width: 101}
			// The Go client sends resizes and stdin from two goroutines:
			// ask until the shell sees the new size.
			resized := false
			for range 100 {
				write("stty size\n")
				if strings.Contains(expect("prompt> "), "33 101") {
					resized = true
					break
				}
			}
			if !resized {
				t.Fatal("the shell never saw the resize")
			}
			write("exit 3\n")
			go io.Copy(io.Discard, out) // the echo of "exit"
			r := <-done
			inW.Close()
			if r.err != nil || r.code != 3 {
				t.Fatalf("shell ended with %d, %v; want 3", r.code, r.err)
			}
		})
	}
}

// procsWith returns the PIDs of this host's processes whose command line
// holds marker.
func procsWith(marker string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && bytes.Contains(b, []byte(marker)) {
			out = append(out, filepath.Base(d))
		}
	}
	return out
}

// waitNoProcs waits until no process holds marker.
func waitNoProcs(t *testing.T, marker string) {
	t.Helper()
	waitFor(t, 15*time.Second, "no process with "+marker, func() (bool, error) {
		p := procsWith(marker)
		return len(p) == 0, fmt.Errorf("still running: %v", p)
	})
}

// TestExec_CancelKillsCommand cancels a long-running exec (a shell with a
// child of its own) through a server and through a peer, and checks that
// the whole process group is gone from the node.
func TestExec_CancelKillsCommand(t *testing.T) {
	for _, via := range execVias {
		t.Run(via.name, func(t *testing.T) {
			env := startExecEnv(t, via.peer)
			api := env.api.API(t)
			raw, _ := execJob(t, api, "cancel-"+via.name)
			// The shell's $0 and its child's argument mark them in /proc.
			marker, child := "tether-exec-cancel-"+via.name, fmt.Sprintf("%d.5", 90000+len(via.name))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			outR, outW := io.Pipe()
			done := make(chan error, 1)
			go func() {
				_, err := api.Allocations().Exec(ctx, raw, "main", false,
					[]string{"sh", "-c", "sleep " + child + " & echo ready; wait", marker},
					blockingReader{ctx}, outW, io.Discard, nil, nil)
				outW.Close()
				done <- err
			}()
			line, err := bufio.NewReader(outR).ReadString('\n')
			if err != nil || line != "ready\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			waitFor(t, 10*time.Second, "the shell and its child", func() (bool, error) {
				return len(procsWith(marker)) > 0 && len(procsWith("sleep\x00"+child)) > 0, nil
			})
			cancel()
			go io.Copy(io.Discard, outR)
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("exec ended with %v; want context.Canceled", err)
			}
			waitNoProcs(t, marker)
			waitNoProcs(t, "sleep\x00"+child)
		})
	}
}

// blockingReader is a stdin that gives nothing until ctx ends.
type blockingReader struct{ ctx context.Context }

func (r blockingReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, io.EOF
}

// TestExec_Concurrent runs 50 execs at once on one node through a server.
func TestExec_Concurrent(t *testing.T) {
	env := startExecEnv(t, false)
	api := env.api.API(t)
	raw, _ := execJob(t, api, "concurrent")
	ctx, cancel := contextWithTimeout(60 * time.Second)
	defer cancel()
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("exec-%d\n", i)
			res := runExec(ctx, api, raw, "main", false, "", "sh", "-c", fmt.Sprintf("echo exec-%d; exit %d", i, i%5))
			if res.err != nil || res.code != i%5 || res.stdout != want {
				errs <- fmt.Errorf("exec %d: exit %d, stdout %q, err %v", i, res.code, res.stdout, res.err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// execURL is the WebSocket URL of an exec on agent a.
func execURL(a *testAgent, allocID, task, command string, extra ...string) string {
	q := url.Values{"task": {task}, "command": {command}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return "ws://" + a.HTTPAddr() + "/v1/client/allocation/" + allocID + "/exec?" + q.Encode()
}

// dialExec dials an exec WebSocket; on a refused upgrade it returns the
// HTTP status and body.
func dialExec(t *testing.T, u string, hdr http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(u, hdr)
	if err == nil {
		return conn, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return nil, resp.StatusCode, string(b)
}

// readClose reads until the server closes, and returns the close error.
func readClose(t *testing.T, conn *websocket.Conn) *websocket.CloseError {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read ended with %v; want a close frame", err)
			}
			return ce
		}
	}
}

// TestExec_BadInput sends what an exec must refuse through a server: bad
// parameters (HTTP 4xx before any upgrade), an unknown allocation or task
// and a dead task (refused after the upgrade with a close frame carrying
// the error's text, as Nomad refuses them), garbage frames
// and oversized messages on a running command (a close frame, and the
// command gone), and a caller that never reads while the command writes
// without end (nothing buffers without bound; closing ends the command).
func TestExec_BadInput(t *testing.T) {
	env := startExecEnv(t, false)
	api := env.api.API(t)
	raw, _ := execJob(t, api, "badinput")
	done := runJob(t, api, "badinput-dead", "batch", shellTask("quick", "true"))["quick"]
	waitAllocsStatus(t, api, "badinput-dead", 1, "complete")

	for _, tc := range []struct {
		name          string
		alloc, task   string
		command       string
		extra         []string
		code          int
		bodyFragments string
	}{
		{"no command", raw.ID, "main", "", nil, 400, "command is not present"},
		{"empty command", raw.ID, "main", "[]", nil, 400, "command is not present"},
		{"non-JSON command", raw.ID, "main", "/bin/sh", nil, 400, "failed to decode command"},
		{"command of numbers", raw.ID, "main", "[1,2]", nil, 400, "failed to decode command"},
		{"no task", raw.ID, "", `["true"]`, nil, 400, "must provide task name"},
		{"unknown task", raw.ID, "nope", `["true"]`, nil, 101, `unknown task name "nope"`},
		{"bad tty", raw.ID, "main", `["true"]`, []string{"tty", "maybe"}, 400, "tty"},
		{"bad alloc id", "not-a-uuid", "main", `["true"]`, nil, 400, "alloc"},
		{"unknown alloc", "8d2b2b7a-0c6e-4a6f-9d3e-2f3c4b5a6d7e", "main", `["true"]`, nil, 101, `Unknown allocation "8d2b2b7a-0c6e-4a6f-9d3e-2f3c4b5a6d7e"`},
		{"dead task", done, "quick", `["true"]`, nil, 101, `task "quick" is not running.`},
	} {
		conn, code, body := dialExec(t, execURL(env.api, tc.alloc, tc.task, tc.command, tc.extra...), nil)
		if conn != nil {
			ce := readClose(t, conn)
			if ce.Code != websocket.ClosePolicyViolation {
				t.Errorf("%s: close code %d; want %d", tc.name, ce.Code, websocket.ClosePolicyViolation)
			}
			body = ce.Text
			conn.Close()
		}
		if code != tc.code || !strings.Contains(body, tc.bodyFragments) {
			t.Errorf("%s: %d %q; want %d with %q", tc.name, code, body, tc.code, tc.bodyFragments)
		}
	}
	if code, body, _ := do(t, "GET", env.api.URL()+"/v1/client/allocation/"+raw.ID+"/exec?task=main&command=%5B%22true%22%5D", nil); code != 400 || !strings.Contains(body, "WebSocket") {
		t.Errorf("plain GET: %d %q; want 400 asking for a WebSocket", code, body)
	}

	for _, tc := range []struct {
		name string
		send func(*websocket.Conn) error
		want string
	}{
		{"binary frame", func(c *websocket.Conn) error { return c.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2}) }, "JSON text"},
		{"not JSON", func(c *websocket.Conn) error { return c.WriteMessage(websocket.TextMessage, []byte("{nope")) }, "not JSON"},
		{"both fields", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, []byte(`{"stdin":{"data":"eA=="},"tty_size":{"height":1,"width":1}}`))
		}, "not both"},
		{"huge resize", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, []byte(`{"tty_size":{"height":99999,"width":1}}`))
		}, "tty_size"},
	} {
		// A command that runs until the session ends, marked by its
		// argument.
		marker := fmt.Sprintf("%d.25", 91000+len(tc.name))
		conn, code, body := dialExec(t, execURL(env.api, raw.ID, "main", `["sleep","`+marker+`"]`), nil)
		if conn == nil {
			t.Fatalf("%s: upgrade refused: %d %q", tc.name, code, body)
		}
		if err := tc.send(conn); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		ce := readClose(t, conn)
		conn.Close()
		if ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, tc.want) {
			t.Errorf("%s: closed with %d %q; want 1008 with %q", tc.name, ce.Code, ce.Text, tc.want)
		}
		waitNoProcs(t, "sleep\x00"+marker)
	}

	// An oversized message: the agent stops reading at the limit and
	// closes (the caller's write may fail first), and the command ends.
	marker := "92000.25"
	conn, code, body := dialExec(t, execURL(env.api, raw.ID, "main", `["sleep","`+marker+`"]`), nil)
	if conn == nil {
		t.Fatalf("oversized: upgrade refused: %d %q", code, body)
	}
	if err := conn.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte(" "), 2<<20)); err == nil {
		if ce := readClose(t, conn); ce.Code != websocket.CloseMessageTooBig {
			t.Errorf("oversized: closed with %d %q; want 1009", ce.Code, ce.Text)
		}
	}
	conn.Close()
	waitNoProcs(t, "sleep\x00"+marker)

	// A caller that never reads: the command blocks on its output (the
	// stream's window and the sockets' buffers fill), and the agent holds
	// at most a message. Closing the connection ends the command.
	marker = "tether-never-reads"
	conn, code, body = dialExec(t, execURL(env.api, raw.ID, "main", `["yes","`+marker+`"]`), nil)
	if conn == nil {
		t.Fatalf("never-reads: upgrade refused: %d %q", code, body)
	}
	waitFor(t, 10*time.Second, "yes blocked on its output", func() (bool, error) {
		p := procsWith(marker)
		if len(p) != 1 {
			return false, fmt.Errorf("processes %v", p)
		}
		st, err := os.ReadFile("/proc/" + p[0] + "/wchan")
		return err == nil && strings.Contains(string(st), "pipe_write"), fmt.Errorf("wchan %q", st)
	})
	conn.Close()
	waitNoProcs(t, marker)
}

// TestExec_BrowserHandshake connects as a browser does (no headers: the
// token in the first message, ws_handshake=true) with ACLs on, and checks
// that a bad token is a close frame and a good one runs the command.
func TestExec_BrowserHandshake(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withACL(time.Second), withUnreachableHTTP())
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	raw, _ := execJob(t, mgmt, "browser")

	for _, tc := range []struct {
		name, token string
		wantExit    bool
	}{{"bad token", "00000000-0000-0000-0000-000000000000", false}, {"management", mgmtSecret, true}} {
		conn, code, body := dialExec(t, execURL(srv, raw.ID, "main", `["echo","from-browser"]`, "ws_handshake", "true"), nil)
		if conn == nil {
			t.Fatalf("%s: upgrade refused: %d %q", tc.name, code, body)
		}
		if err := conn.WriteJSON(map[string]any{"version": 1, "auth_token": tc.token}); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		exited := false
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		var closeErr *websocket.CloseError
		for {
			var msg nomad.ExecStreamingOutput
			if err := conn.ReadJSON(&msg); err != nil {
				errors.As(err, &closeErr)
				break
			}
			if msg.Stdout != nil {
				out.Write(msg.Stdout.Data)
			}
			if msg.Exited && msg.Result != nil && msg.Result.ExitCode == 0 {
				exited = true
			}
		}
		conn.Close()
		if tc.wantExit && (!exited || out.String() != "from-browser\n" || closeErr == nil || closeErr.Code != websocket.CloseNormalClosure) {
			t.Errorf("%s: exited %v, stdout %q, close %v; want exit 0, the line, a normal close", tc.name, exited, out.String(), closeErr)
		}
		if !tc.wantExit && (exited || closeErr == nil || closeErr.Code != websocket.ClosePolicyViolation || !strings.Contains(closeErr.Text, "ACL token not found")) {
			t.Errorf("%s: exited %v, close %v; want a 1008 close with ACL token not found", tc.name, exited, closeErr)
		}
	}
}

// TestExec_ThroughNodeAgent sends an exec and a restart for an allocation
// of node1 to node2's own agent, which relays them to its server over its
// session (the third route an HTTP call can take).
func TestExec_ThroughNodeAgent(t *testing.T) {
	env := startExecEnv(t, false)
	api := env.api.API(t)
	raw, _ := execJob(t, api, "via-node") // placed before node2 exists
	other := startNode(t, "node2", withServers(env.api.RPCAddr()), withMockDriver())
	ctx, cancel := contextWithTimeout(30 * time.Second)
	defer cancel()
	res := runExec(ctx, other.API(t), raw, "main", false, "in\n", "sh", "-c", "cat; exit 3")
	if res.err != nil || res.code != 3 || res.stdout != "in\n" {
		t.Fatalf("exec via node2: exit %d, stdout %q, err %v", res.code, res.stdout, res.err)
	}
	code, body, _ := do(t, "PUT", other.URL()+"/v1/client/allocation/"+raw.ID+"/restart", strings.NewReader(`{"TaskName":"main"}`))
	if code != 200 {
		t.Fatalf("restart via node2: %d %q", code, body)
	}
	waitEvent(t, api, raw.ID, "main", "Restart Signaled", 1)
}
