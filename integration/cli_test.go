package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
)

// cliResult is what one run of the tether binary printed.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runTether runs the built binary with args and the NOMAD_* environment
// env (nothing of the test process's own NOMAD_* leaks in), stdin as its
// input.
func runTether(t *testing.T, env map[string]string, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(tetherBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOMAD_") && !strings.HasPrefix(kv, "COMP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running tether %v: %v", args, err)
	}
	return res
}

// ok fails the test unless the run exited 0.
func (r cliResult) ok(t *testing.T, args ...string) cliResult {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("tether %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

var columnGap = regexp.MustCompile(`\s{2,}`)

// tableColumns splits the header line of a table that starts at line
// index i of out into its column names.
func tableColumns(out string, header string) []string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, header) {
			return columnGap.Split(strings.TrimSpace(l), -1)
		}
	}
	return nil
}

// tableRows returns the rows under the header line that starts with
// header, split into columns, up to the first blank line.
func tableRows(out, header string) [][]string {
	var rows [][]string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, header):
			in = true
		case in && strings.TrimSpace(l) == "":
			return rows
		case in:
			rows = append(rows, columnGap.Split(strings.TrimSpace(l), -1))
		}
	}
	return rows
}

// kvValue returns the value of "key = value" in out.
func kvValue(out, key string) string {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `\s+= (.*)$`)
	if m := re.FindStringSubmatch(out); m != nil {
		return strings.TrimSpace(m[1])
	}
	return ""
}

// withNodeID gives a node agent a chosen node ID (written where the agent
// keeps its identity), so a test can build ambiguous prefixes.
func withNodeID(t *testing.T, id string) agentOpt {
	return func(c *agent.Config) {
		dir := filepath.Join(c.DataDir, "client")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "node-id"), []byte(id+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const (
	cliNode1 = "abcd0001-0000-4000-8000-000000000001"
	cliNode2 = "abcd0002-0000-4000-8000-000000000002"
)

// cliJobJSON is a job as "nomad job run -output" prints it.
const cliJobJSON = `{"Job": {"ID": "web", "Name": "web", "Type": "service", "Datacenters": ["dc1"],
 "TaskGroups": [{"Name": "web", "Count": 1, "Tasks": [{"Name": "server", "Driver": "mock_driver",
   "Config": {"run_for": "1h", "stdout_string": "hello\n"},
   "Resources": {"CPU": 100, "MemoryMB": 64}}]}]}}`

const cliJobHCL = `
job "hweb" {
  datacenters = ["dc1"]
  type        = "batch"
  group "g" {
    task "t" {
      driver = "mock_driver"
      config {
        run_for       = "1h"
        stdout_string = "on ${node.unique.name}\n"
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
`

// TestCLI_Commands drives every read and job command of the built binary
// against a server and two mock_driver nodes: table columns, -json, -t,
// prefix resolution and the errors of bad input.
func TestCLI_Commands(t *testing.T) {
	srv := startServerNode(t, "server1", withMockDriver(), withNodeID(t, cliNode1))
	startNode(t, "node2", withServers(srv.RPCAddr()), withMockDriver(), withNodeID(t, cliNode2))
	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	cli := func(args ...string) cliResult { t.Helper(); return runTether(t, env, "", args...) }

	jobFile := writeFile(t, t.TempDir(), "web.json", cliJobJSON)
	out := cli("job", "run", jobFile).ok(t, "job run")
	mustContain(t, out.stdout, `finished with status "complete"`)
	waitAllocsStatus(t, srv.API(t), "web", 1, "running")

	tables := []struct {
		name   string
		args   []string
		header string
		cols   []string
		rows   int
	}{
		{"node status", []string{"node", "status"}, "ID ",
			[]string{"ID", "Node Pool", "DC", "Name", "Class", "Drain", "Eligibility", "Status"}, 2},
		{"job status list", []string{"job", "status"}, "ID ",
			[]string{"ID", "Type", "Priority", "Status", "Submit Date"}, 1},
		{"status", []string{"status"}, "ID ",
			[]string{"ID", "Type", "Priority", "Status", "Submit Date"}, 1},
		{"job allocs", []string{"job", "allocs", "web"}, "ID ",
			[]string{"ID", "Node ID", "Task Group", "Version", "Desired", "Status", "Created", "Modified"}, 1},
		{"job status one", []string{"job", "status", "we"}, "Task Group",
			[]string{"Task Group", "Queued", "Starting", "Running", "Failed", "Complete", "Lost", "Unknown"}, 1},
		{"node allocations", []string{"node", "status", cliNode1[:8]}, "ID ",
			nil, -1},
		{"server members", []string{"server", "members"}, "Name",
			[]string{"Name", "Address", "Port", "Status", "Leader", "Raft Version", "Build", "Datacenter", "Region"}, 1},
		{"raft peers", []string{"operator", "raft", "list-peers"}, "Node",
			[]string{"Node", "ID", "Address", "State", "Voter", "RaftProtocol"}, 1},
	}
	for _, tc := range tables {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(tc.args...).ok(t, tc.args...)
			if tc.cols == nil {
				return
			}
			if got := tableColumns(r.stdout, tc.header); strings.Join(got, "|") != strings.Join(tc.cols, "|") {
				t.Fatalf("columns %q, want %q\n%s", got, tc.cols, r.stdout)
			}
			rows := tableRows(r.stdout, tc.header)
			if len(rows) != tc.rows {
				t.Fatalf("%d rows, want %d\n%s", len(rows), tc.rows, r.stdout)
			}
			for _, row := range rows {
				if len(row) != len(tc.cols) {
					t.Fatalf("row %q has %d columns, want %d", row, len(row), len(tc.cols))
				}
				if tc.cols[0] == "ID" && len(row[0]) > 8 && tc.name != "job status list" && tc.name != "status" {
					t.Fatalf("ID %q is not the short form", row[0])
				}
			}
		})
	}

	if rows := tableRows(cli("server", "members").ok(t).stdout, "Name"); rows[0][4] != "true" || rows[0][1] != "127.0.0.1" {
		t.Fatalf("server members: the only server is not the leader at 127.0.0.1: %q", rows[0])
	}

	// -json decodes as the API's types.
	var nodes []*nomad.NodeListStub
	decodeJSON(t, cli("node", "status", "-json").ok(t).stdout, &nodes)
	if len(nodes) != 2 {
		t.Fatalf("node status -json: %d nodes", len(nodes))
	}
	var allocs []*nomad.AllocationListStub
	decodeJSON(t, cli("job", "allocs", "-json", "web").ok(t).stdout, &allocs)
	if len(allocs) != 1 {
		t.Fatalf("job allocs -json: %d allocs", len(allocs))
	}
	allocID := allocs[0].ID
	var alloc nomad.Allocation
	decodeJSON(t, cli("alloc", "status", "-json", allocID[:8]).ok(t).stdout, &alloc)
	if alloc.ID != allocID || alloc.JobID != "web" {
		t.Fatalf("alloc status -json: %s %s", alloc.ID, alloc.JobID)
	}
	var job nomad.Job
	decodeJSON(t, cli("job", "status", "-json", "web").ok(t).stdout, &job)
	if job.ID == nil || *job.ID != "web" {
		t.Fatalf("job status -json: %+v", job.ID)
	}

	// key = value blocks.
	as := cli("alloc", "status", "-stats", allocID[:6]).ok(t).stdout
	for key, want := range map[string]string{"ID": allocID, "Job ID": "web", "Client Status": "running",
		"Node ID": alloc.NodeID[:8], "Eval ID": alloc.EvalID[:8]} {
		if got := kvValue(as, key); got != want {
			t.Errorf("alloc status %s = %q, want %q\n%s", key, got, want, as)
		}
	}
	for _, section := range []string{`Task "server" is "running"`, "Memory Stats", "CPU Stats", "Recent Events:"} {
		mustContain(t, as, section)
	}
	ns := cli("node", "status", "-verbose", cliNode1[:8]).ok(t).stdout
	if got := kvValue(ns, "ID"); got != cliNode1 {
		t.Fatalf("node status ID = %q\n%s", got, ns)
	}
	mustContain(t, ns, "\nAttributes\n")
	self := cli("node", "status", "-self").ok(t).stdout
	if got := kvValue(self, "ID"); got != cliNode1 {
		t.Fatalf("node status -self ID = %q", got)
	}
	if got := strings.TrimSpace(cli("node", "status", "-t", "{{.ID}}", cliNode1[:4]+"0001").ok(t).stdout); got != cliNode1 {
		t.Fatalf("node status -t: %q", got)
	}

	// Prefix resolution and bad input.
	bad := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"ambiguous node", []string{"node", "status", "abcd"}, 1, []string{"Prefix matched multiple nodes", cliNode1, cliNode2}},
		{"odd prefix trimmed", []string{"node", "status", "abcd0"}, 1, []string{"Prefix matched multiple nodes"}},
		{"no node", []string{"node", "status", "ffff"}, 1, []string{`No node(s) with prefix "ffff" found`}},
		{"short id", []string{"node", "status", "a"}, 1, []string{"at least two characters"}},
		{"no alloc", []string{"alloc", "status", "ffff"}, 1, []string{`No allocation(s) with prefix or id "ffff" found`}},
		{"no job", []string{"job", "status", "nope"}, 1, []string{`No job(s) with prefix or id "nope" found`}},
		{"unknown flag", []string{"node", "status", "-bogus"}, 1, []string{"flag provided but not defined: -bogus", "Usage: tether node status"}},
		{"unknown subcommand", []string{"node", "bogus"}, 1, []string{"Usage: tether node"}},
		{"unknown command", []string{"bogus"}, 1, []string{`unknown command "bogus"`, "Usage: tether <command>"}},
		{"missing arg", []string{"alloc", "status"}, 1, []string{"Usage: tether alloc status"}},
		{"both json and t", []string{"node", "status", "-json", "-t", "x"}, 1, []string{"Both -json and -t"}},
		{"bad template", []string{"node", "status", "-t", "{{.Nope"}, 1, []string{"Error parsing template"}},
		{"unreachable", []string{"node", "status", "-address", "http://127.0.0.1:1"}, 1,
			[]string{"http://127.0.0.1:1", "connection refused"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:%s\nstderr:%s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				mustContain(t, r.stderr, w)
			}
			if strings.Contains(r.stderr, "goroutine ") {
				t.Fatalf("stack trace on stderr:\n%s", r.stderr)
			}
		})
	}
	if r := cli("node", "status", "-address", "http://127.0.0.1:1"); strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("unreachable address: want one line, got:\n%s", r.stderr)
	}

	// The flag wins over the environment.
	runTether(t, map[string]string{"NOMAD_ADDR": "http://127.0.0.1:1"}, "", "node", "status", "-address", srv.URL()).ok(t)

	// Node metadata.
	cli("node", "meta", "apply", "-node-id", cliNode1[:8], "rack=r1", "zone=z1").ok(t)
	cli("node", "meta", "apply", "-node-id", cliNode1[:8], "-unset", "zone").ok(t)
	var meta nomad.NodeMetaResponse
	decodeJSON(t, cli("node", "meta", "read", "-node-id", cliNode1, "-json").ok(t).stdout, &meta)
	if v := meta.Dynamic["rack"]; v == nil || *v != "r1" {
		t.Fatalf("dynamic meta rack = %v", v)
	}
	if _, ok := meta.Meta["zone"]; ok {
		t.Fatalf("zone still set after -unset: %v", meta.Meta)
	}
	mr := cli("node", "meta", "read", "-node-id", cliNode1).ok(t).stdout
	mustContain(t, mr, "All Meta\n")
	mustContain(t, mr, "Dynamic Meta\nrack = r1")

	// operator api: GET, and a body from stdin as PUT.
	if got := strings.TrimSpace(cli("operator", "api", "/v1/status/leader").ok(t).stdout); got != `"`+srv.RPCAddr()+`"` {
		t.Fatalf("operator api leader: %s", got)
	}
	put := runTether(t, env, `{"Meta":{"via":"api"}}`, "operator", "api", "-H", "Content-Type: application/json",
		"/v1/client/metadata?node_id="+cliNode2).ok(t).stdout
	mustContain(t, put, `"via":"api"`)
	if r := cli("operator", "api", "/v1/job/nope"); r.code != 1 || !strings.Contains(r.stderr, "404") {
		t.Fatalf("operator api 404: %d %s", r.code, r.stderr)
	}

	// Stopping: an allocation, then the job.
	stop := cli("alloc", "stop", "-detach", allocID[:8]).ok(t).stdout
	if id := strings.TrimSpace(stop); len(id) != 36 {
		t.Fatalf("alloc stop -detach: %q", stop)
	}
	cli("job", "stop", "-purge", "web").ok(t)
	if r := cli("job", "status", "web"); r.code != 1 {
		t.Fatalf("job status after purge: exit %d", r.code)
	}

	// HCL: parsed by the server, through the Go client and "job run".
	dir := t.TempDir()
	hclFile := writeFile(t, dir, "hweb.hcl", cliJobHCL)
	parsed, err := srv.API(t).Jobs().ParseHCL(cliJobHCL, true)
	if err != nil {
		t.Fatalf("ParseHCL: %v", err)
	}
	if *parsed.ID != "hweb" || *parsed.TaskGroups[0].Tasks[0].Resources.MemoryMB != 64 || parsed.Type == nil {
		t.Fatalf("ParseHCL: %+v", parsed)
	}
	mustContain(t, cli("job", "run", hclFile).ok(t).stdout, `finished with status "complete"`)
	waitAllocsStatus(t, srv.API(t), "hweb", 1, "running")
	if got := kvValue(cli("job", "status", "hweb").ok(t).stdout, "Type"); got != "batch" {
		t.Fatalf("hweb type %q", got)
	}
	cli("job", "stop", "-purge", "hweb").ok(t)
	badFiles := []struct{ name, body, want string }{
		{"bad.hcl", "job \"x\" {\n  group \"g\" {\n    bogus = 1\n  }\n}\n", `bad.hcl:3,5-10: Unsupported argument`},
		{"bad.json", `{"Job": {"ID": 5}}`, "bad.json: line 1, column 17"},
	}
	for _, bf := range badFiles {
		r := cli("job", "run", writeFile(t, dir, bf.name, bf.body))
		if r.code != 1 || !strings.Contains(r.stderr, bf.want) {
			t.Fatalf("job run %s: exit %d\n%s", bf.name, r.code, r.stderr)
		}
	}

	cli("system", "gc").ok(t)

	// Completion: the scripts load in bash; IDs come from the API.
	for _, sh := range []string{"bash", "zsh"} {
		script := cli("completion", sh).ok(t).stdout
		mustContain(t, script, "complete ")
		if sh == "bash" {
			check := exec.Command("bash", "-n")
			check.Stdin = strings.NewReader(script)
			if b, err := check.CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, b)
			}
		}
	}
	complete := func(line string) string {
		t.Helper()
		return runTether(t, map[string]string{"NOMAD_ADDR": srv.URL(), "COMP_LINE": line,
			"COMP_POINT": strconv.Itoa(len(line))}, "").ok(t).stdout
	}
	mustContain(t, complete("tether node st"), "status")
	mustContain(t, complete("tether node status -ver"), "-verbose")
	got := complete("tether node status abcd")
	if !strings.Contains(got, cliNode1) || !strings.Contains(got, cliNode2) {
		t.Fatalf("node ID completion: %q", got)
	}
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %T: %v\n%s", v, err, s)
	}
}

// startServerNode starts an agent that is a server and a node (as
// "tether agent -dev"), and waits until its node registered.
func startServerNode(t *testing.T, name string, opts ...agentOpt) *testAgent {
	t.Helper()
	cfg := baseConfig(t, name)
	cfg.Server.Enabled, cfg.Server.BootstrapExpect = true, 1
	cfg.Client.Enabled = true
	for _, o := range opts {
		o(cfg)
	}
	a := startAgent(t, cfg)
	select {
	case <-a.Client().Registered():
	case <-time.After(15 * time.Second):
		t.Fatalf("node %s did not register", name)
	}
	return a
}

// TestCLI_ACL bootstraps ACLs and runs every acl command of the binary.
func TestCLI_ACL(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	var boot nomad.ACLToken
	waitFor(t, 20*time.Second, "acl bootstrap", func() (bool, error) {
		r := runTether(t, env, "", "acl", "bootstrap", "-json")
		if r.code != 0 {
			return false, nil
		}
		return true, json.Unmarshal([]byte(r.stdout), &boot)
	})
	if boot.Type != "management" || boot.SecretID == "" {
		t.Fatalf("bootstrap token: %+v", boot)
	}
	env["NOMAD_TOKEN"] = boot.SecretID
	cli := func(args ...string) cliResult { t.Helper(); return runTether(t, env, "", args...) }

	rules := writeFile(t, t.TempDir(), "read.hcl", `node { policy = "read" }`)
	mustContain(t, cli("acl", "policy", "apply", "-description", "reads nodes", "readnodes", rules).ok(t).stdout,
		`Successfully wrote "readnodes" ACL policy!`)
	pl := cli("acl", "policy", "list").ok(t).stdout
	if rows := tableRows(pl, "Name"); len(rows) != 1 || rows[0][0] != "readnodes" || rows[0][1] != "reads nodes" {
		t.Fatalf("policy list:\n%s", pl)
	}
	pi := cli("acl", "policy", "info", "readnodes").ok(t).stdout
	if kvValue(pi, "Name") != "readnodes" || !strings.Contains(pi, `policy = "read"`) {
		t.Fatalf("policy info:\n%s", pi)
	}

	var tok nomad.ACLToken
	decodeJSON(t, cli("acl", "token", "create", "-name", "ops", "-policy", "readnodes", "-json").ok(t).stdout, &tok)
	if tok.Type != "client" || len(tok.Policies) != 1 || tok.Policies[0] != "readnodes" {
		t.Fatalf("token create: %+v", tok)
	}
	tl := cli("acl", "token", "list").ok(t).stdout
	if got := tableColumns(tl, "Name"); strings.Join(got, "|") != "Name|Type|Global|Accessor ID|Expired" {
		t.Fatalf("token list columns %q", got)
	}
	if rows := tableRows(tl, "Name"); len(rows) != 2 {
		t.Fatalf("token list:\n%s", tl)
	}
	ti := cli("acl", "token", "info", tok.AccessorID).ok(t).stdout
	if kvValue(ti, "Accessor ID") != tok.AccessorID || kvValue(ti, "Name") != "ops" {
		t.Fatalf("token info:\n%s", ti)
	}
	self := runTether(t, map[string]string{"NOMAD_ADDR": srv.URL()}, "", "acl", "token", "self", "-token", tok.SecretID).ok(t).stdout
	if kvValue(self, "Accessor ID") != tok.AccessorID {
		t.Fatalf("token self:\n%s", self)
	}
	up := cli("acl", "token", "update", "-name", "ops2", tok.AccessorID).ok(t).stdout
	if kvValue(up, "Name") != "ops2" {
		t.Fatalf("token update:\n%s", up)
	}
	// The client token may read nodes but not write policies.
	if r := runTether(t, map[string]string{"NOMAD_ADDR": srv.URL(), "NOMAD_TOKEN": tok.SecretID}, "", "acl", "policy", "delete", "readnodes"); r.code != 1 || !strings.Contains(r.stderr, "403") {
		t.Fatalf("denied policy delete: %d %s", r.code, r.stderr)
	}
	if r := runTether(t, map[string]string{"NOMAD_ADDR": srv.URL(), "NOMAD_TOKEN": tok.SecretID}, "", "system", "gc"); r.code != 1 || !strings.Contains(r.stderr, "403") {
		t.Fatalf("system gc with a client token: %d %s", r.code, r.stderr)
	}
	cli("system", "gc").ok(t)
	cli("acl", "token", "delete", tok.AccessorID).ok(t)
	mustContain(t, cli("acl", "policy", "delete", "readnodes").ok(t).stdout, "Successfully deleted")
	if r := cli("acl", "policy", "info", "readnodes"); r.code != 1 {
		t.Fatalf("policy info after delete: exit %d", r.code)
	}
}
