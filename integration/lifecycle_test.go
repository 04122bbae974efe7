package integration

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/structs"
)

// lifecycleScript prints its PID, answers SIGUSR1 with a line, and runs
// until stopped (the sleep is waited for, so the trap runs at once).
const lifecycleScript = `echo "pid=$$"; trap 'echo got-USR1' USR1; while :; do sleep 0.2 & wait; done`

// lifecycleJob runs tasks a and b of one group, with a restart policy
// that allows no restart: a user's restart must not count against it.
func lifecycleJob(t *testing.T, api *nomad.Client, id string) *nomad.Allocation {
	t.Helper()
	job := &nomad.Job{ID: ptr(id), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"),
			Tasks:         []*nomad.Task{shellTask("a", lifecycleScript), shellTask("b", lifecycleScript)},
			RestartPolicy: &nomad.RestartPolicy{Attempts: ptr(0), Interval: ptr(time.Hour), Delay: ptr(time.Second), Mode: ptr("fail")}}}}
	registerJob(t, api, job)
	stub := waitAllocsStatus(t, api, id, 1, "running")[0]
	a, _, err := api.Allocations().Info(stub.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range []string{"a", "b"} {
		waitPIDs(t, api, a, task, 1)
	}
	return a
}

var pidLine = regexp.MustCompile(`pid=(\d+)`)

// taskStdout reads a task's whole stdout log through the API.
func taskStdout(api *nomad.Client, a *nomad.Allocation, task string) (string, error) {
	rc, err := api.AllocFS().Cat(a, "alloc/logs/"+task+".stdout.0", nil)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// waitPIDs waits until the task's stdout has n distinct PIDs (one per
// start, in the same log file) and returns them.
func waitPIDs(t *testing.T, api *nomad.Client, a *nomad.Allocation, task string, n int) []string {
	t.Helper()
	var pids []string
	waitFor(t, 30*time.Second, fmt.Sprintf("%d starts of %s", n, task), func() (bool, error) {
		out, err := taskStdout(api, a, task)
		if err != nil {
			return false, err
		}
		pids = pids[:0]
		seen := map[string]bool{}
		for _, m := range pidLine.FindAllStringSubmatch(out, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				pids = append(pids, m[1])
			}
		}
		return len(pids) == n, fmt.Errorf("pids %v", pids)
	})
	return pids
}

// waitEvent waits until the servers have at least count events of type
// want among the task's last ones, and the task running.
func waitEvent(t *testing.T, api *nomad.Client, allocID, task, want string, count int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d %q events of %s", count, want, task), func() (bool, error) {
		a, _, err := api.Allocations().Info(allocID, nil)
		if err != nil {
			return false, err
		}
		st := a.TaskStates[task]
		if st == nil {
			return false, nil
		}
		n := 0
		var types []string
		for _, ev := range st.Events {
			types = append(types, ev.Type)
			if ev.Type == want {
				n++
			}
		}
		return n >= count && st.State == "running", fmt.Errorf("state %s, events %v", st.State, types)
	})
}

// TestLifecycle_RestartAndSignal restarts one task and then all, and
// signals one, through a server and through a peer with the official Go
// client: new PIDs in the same log files, task events, the restart
// policy (no restarts allowed) not counting them, the signal trapped by
// the task; then the refusals: an unknown signal or task, and an
// allocation that is terminal.
func TestLifecycle_RestartAndSignal(t *testing.T) {
	for _, via := range execVias {
		t.Run(via.name, func(t *testing.T) {
			env := startExecEnv(t, via.peer)
			api := env.api.API(t)
			a := lifecycleJob(t, api, "life-"+via.name)

			if err := api.Allocations().Restart(a, "a", nil); err != nil {
				t.Fatalf("restart a: %v", err)
			}
			pidsA := waitPIDs(t, api, a, "a", 2)
			waitEvent(t, api, a.ID, "a", structs.TaskRestartSignal, 1)
			if pids := waitPIDs(t, api, a, "b", 1); len(pids) != 1 {
				t.Fatalf("b restarted too: %v", pids)
			}

			if err := api.Allocations().RestartAllTasks(a, nil); err != nil {
				t.Fatalf("restart all: %v", err)
			}
			if pids := waitPIDs(t, api, a, "a", 3); pids[0] != pidsA[0] || pids[1] != pidsA[1] {
				t.Fatalf("a's starts %v after %v", pids, pidsA)
			}
			waitPIDs(t, api, a, "b", 2)
			waitEvent(t, api, a.ID, "b", structs.TaskRestartSignal, 1)
			waitFor(t, 20*time.Second, "a restarted twice, not failed", func() (bool, error) {
				info, _, err := api.Allocations().Info(a.ID, nil)
				if err != nil {
					return false, err
				}
				st := info.TaskStates["a"]
				return info.ClientStatus == "running" && st.Restarts == 2 && !st.Failed && st.State == "running",
					fmt.Errorf("status %s, a restarts %d failed %v", info.ClientStatus, st.Restarts, st.Failed)
			})

			if err := api.Allocations().Signal(a, nil, "b", "SIGUSR1"); err != nil {
				t.Fatalf("signal b: %v", err)
			}
			waitFor(t, 20*time.Second, "b trapped SIGUSR1", func() (bool, error) {
				out, err := taskStdout(api, a, "b")
				return strings.Contains(out, "got-USR1"), err
			})
			waitEvent(t, api, a.ID, "b", structs.TaskSignaling, 1)
			if out, _ := taskStdout(api, a, "a"); strings.Contains(out, "got-USR1") {
				t.Fatalf("a got b's signal: %q", out)
			}

			for _, tc := range []struct {
				name string
				err  error
				want string
			}{
				{"unknown signal", api.Allocations().Signal(a, nil, "a", "SIGNOPE"), `invalid signal "SIGNOPE"`},
				{"signal unknown task", api.Allocations().Signal(a, nil, "nope", "SIGHUP"), `unknown task name "nope"`},
				{"restart unknown task", api.Allocations().Restart(a, "nope", nil), `unknown task name "nope"`},
			} {
				if tc.err == nil || !strings.Contains(tc.err.Error(), "400") || !strings.Contains(tc.err.Error(), tc.want) {
					t.Errorf("%s: %v; want a 400 with %q", tc.name, tc.err, tc.want)
				}
			}

			if _, _, err := api.Jobs().Deregister("life-"+via.name, false, nil); err != nil {
				t.Fatal(err)
			}
			waitAllocsStatus(t, api, "life-"+via.name, 1, "complete")
			for name, err := range map[string]error{
				"signal":  api.Allocations().Signal(a, nil, "a", "SIGHUP"),
				"restart": api.Allocations().Restart(a, "", nil),
			} {
				if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "terminal") {
					t.Errorf("%s of a terminal allocation: %v; want a 400", name, err)
				}
			}
		})
	}
}

// TestLifecycle_ACLMatrix calls exec, restart and signal with a token per
// grant, through a server and on the node's own agent (each checks), and
// expects exactly the grants Nomad asks for: alloc-exec and
// alloc-node-exec for a raw_exec task's exec, alloc-lifecycle for
// restart and signal.
func TestLifecycle_ACLMatrix(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withACL(time.Second), withUnreachableHTTP())
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	a := lifecycleJob(t, mgmt, "acl-life")

	ns := func(caps ...string) string {
		return fmt.Sprintf(`namespace "default" { capabilities = ["%s"] }`, strings.Join(caps, `","`))
	}
	tokens := []struct {
		name, secret          string
		exec, restart, signal bool
	}{
		{"none", "", false, false, false},
		{"bogus", structs.GenerateUUID(), false, false, false},
		{"alloc-exec", makeToken(t, mgmt, "alloc-exec", ns("alloc-exec")), false, false, false},
		{"alloc-node-exec", makeToken(t, mgmt, "alloc-node-exec", ns("alloc-node-exec")), false, false, false},
		{"both-exec", makeToken(t, mgmt, "both-exec", ns("alloc-exec", "alloc-node-exec")), true, false, false},
		{"alloc-lifecycle", makeToken(t, mgmt, "alloc-lifecycle", ns("alloc-lifecycle")), false, true, true},
		{"write", makeToken(t, mgmt, "write", `namespace "default" { policy = "write" }`), false, true, true},
		{"other-ns", makeToken(t, mgmt, "other-ns", `namespace "other" { policy = "write" capabilities = ["alloc-node-exec"] }`), false, false, false},
		{"management", mgmtSecret, true, true, true},
	}
	status := func(ok bool) int {
		if ok {
			return http.StatusSwitchingProtocols
		}
		return http.StatusForbidden
	}
	for _, at := range []struct {
		name  string
		agent *testAgent
	}{{"server", srv}, {"node", node}} {
		for _, tok := range tokens {
			var hdr http.Header
			var th []string
			if tok.secret != "" {
				hdr = http.Header{"X-Nomad-Token": {tok.secret}}
				th = []string{"X-Nomad-Token", tok.secret}
			}
			conn, code, body := dialExec(t, execURL(at.agent, a.ID, "a", `["true"]`), hdr)
			if conn != nil {
				// A refused token is a close frame after the upgrade, as
				// Nomad refuses it.
				if ce := readClose(t, conn); ce.Text == "Permission denied" || ce.Text == structs.ErrTokenNotFound.Message {
					code, body = http.StatusForbidden, ce.Text
				}
				conn.Close()
			}
			if want := status(tok.exec); code != want {
				t.Errorf("%s %s exec: %d %q; want %d", at.name, tok.name, code, body, want)
			}
			for _, call := range []struct {
				action, body string
				ok           bool
			}{
				{"signal", `{"Task":"a","Signal":"SIGUSR1"}`, tok.signal},
				{"restart", `{"TaskName":"b"}`, tok.restart},
			} {
				want := http.StatusOK
				if !call.ok {
					want = http.StatusForbidden
				}
				code, body, _ := do(t, "PUT", at.agent.URL()+"/v1/client/allocation/"+a.ID+"/"+call.action, strings.NewReader(call.body), th...)
				if code != want {
					t.Errorf("%s %s %s: %d %q; want %d", at.name, tok.name, call.action, code, body, want)
				}
			}
		}
	}
}

// TestCLI_ExecRestartSignal drives tether alloc exec, restart and signal
// (the built binary, through a server) against a running allocation.
func TestCLI_ExecRestartSignal(t *testing.T) {
	env := startExecEnv(t, false)
	api := env.api.API(t)
	a := lifecycleJob(t, api, "cli-life")
	nenv := map[string]string{"NOMAD_ADDR": env.api.URL()}
	cli := func(stdin string, args ...string) cliResult { t.Helper(); return runTether(t, nenv, stdin, args...) }

	if r := cli("", "alloc", "exec", "-task", "a", a.ID[:8], "sh", "-c", "echo out-$((2+2)); echo err >&2; exit 4"); r.code != 4 || r.stdout != "out-4\n" || r.stderr != "err\n" {
		t.Fatalf("alloc exec: exit %d, stdout %q, stderr %q; want 4, out-4, err", r.code, r.stdout, r.stderr)
	}
	if r := cli("piped\n", "alloc", "exec", "-task", "b", a.ID, "cat"); r.code != 0 || r.stdout != "piped\n" {
		t.Fatalf("alloc exec with stdin: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := cli("", "alloc", "exec", a.ID, "true"); r.code != 1 || !strings.Contains(r.stderr, "-task") {
		t.Fatalf("alloc exec without a task of two: exit %d, stderr %q", r.code, r.stderr)
	}
	cli("", "alloc", "signal", "-s", "SIGUSR1", a.ID, "a").ok(t, "alloc signal")
	waitFor(t, 20*time.Second, "a trapped SIGUSR1", func() (bool, error) {
		out, err := taskStdout(api, a, "a")
		return strings.Contains(out, "got-USR1"), err
	})
	if r := cli("", "alloc", "signal", "-s", "SIGBOGUS", a.ID, "a"); r.code != 1 || !strings.Contains(r.stderr, "invalid signal") {
		t.Fatalf("alloc signal -s SIGBOGUS: exit %d, stderr %q", r.code, r.stderr)
	}
	cli("", "alloc", "restart", "-task", "b", a.ID).ok(t, "alloc restart")
	waitPIDs(t, api, a, "b", 2)
	cli("", "alloc", "restart", "-all-tasks", a.ID).ok(t, "alloc restart -all-tasks")
	waitPIDs(t, api, a, "a", 2)
	waitPIDs(t, api, a, "b", 3)
}
