package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tether/structs"
)

// lockedBuffer is a bytes.Buffer a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// cliProc is a tether command that runs until it is interrupted: its
// stdout lines arrive on lines (closed when it exits), stderr is kept.
type cliProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *lockedBuffer
	done   chan struct{} // closed once the process was waited for
}

// startTetherProc starts the built binary with args and addr as
// NOMAD_ADDR; the process is killed when the test ends.
func startTetherProc(t *testing.T, addr string, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: exec.Command(tetherBin, args...), lines: make(chan string, 1<<16),
		stderr: &lockedBuffer{}, done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOMAD_") && !strings.HasPrefix(kv, "COMP_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, "NOMAD_ADDR="+addr)
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// interrupt sends Ctrl-C and returns the exit code.
func (p *cliProc) interrupt(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		<-p.done
		t.Fatalf("the CLI had ended before Ctrl-C (%v, exit %d): %s", err, p.cmd.ProcessState.ExitCode(), p.stderr.String())
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the CLI did not exit on SIGINT")
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestCLI_Monitor follows agents' logs with "tether monitor": a node
// through the server by an ID prefix, the leader as JSON, and the
// server's own; Ctrl-C ends each with exit 0. Bad input is one error.
func TestCLI_Monitor(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	nodeID := node.Client().NodeID()

	cases := []struct {
		name   string
		args   []string
		target *testAgent
		json   bool
	}{
		{"node by prefix", []string{"-log-level", "debug", "-node-id", nodeID[:8]}, node, false},
		{"leader as json", []string{"-log-level", "DEBUG", "-server-id", "leader", "-json"}, srv, true},
		{"the agent addressed", []string{"-log-level", "debug"}, srv, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startTetherProc(t, srv.URL(), append([]string{"monitor"}, tc.args...)...)
			marker := structs.GenerateUUID()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			deadline := time.After(20 * time.Second)
			var line string
			for line == "" {
				select {
				case l, ok := <-p.lines:
					if !ok {
						t.Fatalf("monitor ended: %s", p.stderr.String())
					}
					if strings.Contains(l, marker) {
						line = l
					}
				case <-tick.C: // the line may come before the monitor's sink: provoke again
					provoke(t, tc.target, marker)
				case <-deadline:
					t.Fatalf("no log line with %s: %s", marker, p.stderr.String())
				}
			}
			if tc.json {
				var v map[string]any
				if err := json.Unmarshal([]byte(line), &v); err != nil || v["@level"] != "debug" {
					t.Fatalf("-json line %q: %v %v", line, err, v["@level"])
				}
			} else if !strings.Contains(line, "[DEBUG]") {
				t.Fatalf("line %q is not a DEBUG line", line)
			}
			if code := p.interrupt(t); code != 0 {
				t.Fatalf("exit %d after Ctrl-C: %s", code, p.stderr.String())
			}
		})
	}

	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	bad := []struct {
		name string
		args []string
		want []string
	}{
		{"bad level", []string{"-log-level", "loud"}, []string{`unknown log level "loud" for parameter log_level`}},
		{"no node", []string{"-node-id", "ffff"}, []string{`No node(s) with prefix "ffff" found`}},
		{"no server", []string{"-server-id", "nope.global"}, []string{"unknown Nomad server nope.global"}},
		{"node and server", []string{"-node-id", nodeID, "-server-id", "leader"}, []string{"Only one of -node-id and -server-id", "Usage: tether monitor"}},
		{"argument", []string{"extra"}, []string{"This command takes no arguments", "Usage: tether monitor"}},
		{"unknown flag", []string{"-follow"}, []string{"flag provided but not defined: -follow", "Usage: tether monitor"}},
		{"unreachable", []string{"-address", "http://127.0.0.1:1"}, []string{"Error monitoring logs: cannot reach http://127.0.0.1:1", "connection refused"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := runTether(t, env, "", append([]string{"monitor"}, tc.args...)...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
			}
			for _, w := range tc.want {
				mustContain(t, r.stderr, w)
			}
			if !strings.Contains(r.stderr, "Usage:") && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Fatalf("want one line:\n%s", r.stderr)
			}
		})
	}
}
