package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tetherBin is the binary built once for the real-process tests.
var tetherBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tether-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tetherBin = filepath.Join(dir, "tether")
	build := exec.Command("go", "build", "-o", tetherBin, "tether/cmd/tether")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tether:", err)
		return 1
	}
	return m.Run()
}

// freePorts returns n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// proc is a running tether process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// startProc runs `tether agent -config file` in its own process group and
// kills the group when the test ends.
func startProc(t testing.TB, configFile string) *proc {
	t.Helper()
	return startProcCmd(t, configFile, exec.Command(tetherBin, "agent", "-config", configFile))
}

// startProcCmd is startProc with the command given (run in a network
// namespace, say); configFile's directory holds the agent's tasks.
func startProcCmd(t testing.TB, configFile string, cmd *exec.Cmd) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting tether: %v", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logf}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		killTasksUnder(filepath.Dir(configFile))
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("agent log %s:\n%s", configFile, b)
		}
	})
	return p
}

// stop asks the agent to shut down (which stops its tasks), and kills it
// if it does not exit in time.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

// killTasksUnder kills every process whose working directory is inside
// dir: tasks of an agent that was killed with SIGKILL (they run in their
// own process groups and outlive it, as Nomad's do).
func killTasksUnder(dir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err == nil && strings.HasPrefix(cwd, dir+"/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func writeFile(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProcess_KillAndRestartNode runs a server and a node as separate
// processes of the built binary, from Nomad-shaped config files: kill -9
// of the node gives "No path to node"; a restart is the same node with its
// dynamic metadata.
func TestProcess_KillAndRestartNode(t *testing.T) {
	ports := freePorts(t, 6)
	sdir, cdir := t.TempDir(), t.TempDir()
	serverCfg := writeFile(t, sdir, "server.hcl", agentHCL("srv1", sdir, "DEBUG", ports[0], ports[1], ports[2], `
server {
  enabled          = true
  bootstrap_expect = 1
}
telemetry {
  collection_interval = "1s"
}
`))
	clientCfg := writeFile(t, cdir, "client.hcl", fmt.Sprintf(`
name      = "node1"
data_dir  = %q
bind_addr = "127.0.0.1"
ports {
  http = %d
  rpc  = %d
  serf = %d
}
client {
  enabled = true
  servers = ["127.0.0.1:%d"]
  meta {
    "connect.log_level" = "debug"
    rack                = "r1"
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, cdir, ports[3], ports[4], ports[5], ports[1]))

	serverURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	startProc(t, serverCfg)
	waitFor(t, 20*time.Second, "server up", func() (bool, error) {
		code, _, err := tryGet(serverURL + "/v1/status/leader")
		return code == 200, err
	})

	node := startProc(t, clientCfg)
	nodeID := waitForOneReadyNode(t, serverURL)

	code, body, _ := do(t, "POST", serverURL+"/v1/client/metadata", strings.NewReader(
		fmt.Sprintf(`{"NodeID":%q,"Meta":{"persist.me":"yes"}}`, nodeID)))
	if code != 200 {
		t.Fatalf("meta apply = %d %q", code, body)
	}
	code, body, _ = do(t, "GET", serverURL+"/v1/client/stats?node_id="+nodeID, nil)
	if code != 200 {
		t.Fatalf("stats via server = %d %q", code, body)
	}

	node.kill()
	waitFor(t, 15*time.Second, "No path to node after kill -9", func() (bool, error) {
		code, body, err := tryGet(serverURL + "/v1/client/stats?node_id=" + nodeID)
		return code == 404 && strings.Contains(body, "No path to node"), err
	})

	startProc(t, clientCfg)
	waitFor(t, 20*time.Second, "restarted node answers", func() (bool, error) {
		code, body, err := tryGet(serverURL + "/v1/client/metadata?node_id=" + nodeID)
		if code != 200 {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		var m struct {
			Meta    map[string]string
			Dynamic map[string]*string
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			return false, err
		}
		return m.Meta["persist.me"] == "yes" && m.Meta["connect.log_level"] == "debug", nil
	})
	if id := waitForOneReadyNode(t, serverURL); id != nodeID {
		t.Fatalf("restarted node ID = %s; want %s", id, nodeID)
	}
}

func waitForOneReadyNode(t *testing.T, serverURL string) string {
	t.Helper()
	var id string
	waitFor(t, 20*time.Second, "one ready node", func() (bool, error) {
		code, body, err := tryGet(serverURL + "/v1/nodes")
		if code != 200 {
			return false, err
		}
		var nodes []struct{ ID, Status string }
		if err := json.Unmarshal([]byte(body), &nodes); err != nil {
			return false, err
		}
		if len(nodes) == 1 && nodes[0].Status == "ready" {
			id = nodes[0].ID
			return true, nil
		}
		return false, fmt.Errorf("nodes: %s", body)
	})
	return id
}
