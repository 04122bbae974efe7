package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
)

// withMockDriver enables raw_exec and, by its bare plugin block, the
// mock_driver.
func withMockDriver() agentOpt {
	return func(c *agent.Config) {
		c.Plugins = map[string]*agent.PluginConfig{
			"raw_exec":    {Name: "raw_exec", Config: map[string]any{"enabled": true}},
			"mock_driver": {Name: "mock_driver"},
		}
	}
}

// mockTask returns a mock_driver task with config cfg.
func mockTask(name string, cfg map[string]any) *nomad.Task {
	return &nomad.Task{
		Name:      name,
		Driver:    "mock_driver",
		Config:    cfg,
		Resources: &nomad.Resources{CPU: ptr(100), MemoryMB: ptr(64)},
		LogConfig: &nomad.LogConfig{MaxFiles: ptr(2), MaxFileSizeMB: ptr(1)},
	}
}

// logsOnDisk is the total size of a task's files of one log type.
func logsOnDisk(allocDir, task, typ string) int64 {
	m, _ := filepath.Glob(filepath.Join(allocDir, "alloc", "logs", task+"."+typ+".*"))
	var n int64
	for _, p := range m {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestMockDriver_FSLikeRawExec runs a mock_driver task and a raw_exec task
// that write the same 2.5 MB to stdout (rotated across three 1 MiB files)
// and the same line to stderr, and checks that every fs and logs call,
// through the server and direct, answers the same bytes for both.
func TestMockDriver_FSLikeRawExec(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)

	chunk := strings.Repeat(logPattern, 2500) // 50,000 bytes: not a divisor of 1 MiB
	mock := mockTask("mock", map[string]any{
		"run_for": "1h", "stdout_string": chunk, "stdout_repeat": 49, "stdout_repeat_duration": "1ms",
		"stderr_string": "warn\n",
	})
	raw := shellTask("raw", `yes "0123456789abcdefghi" | head -c 2500000; printf 'warn\n' >&2; while :; do sleep 1; done`)
	for _, task := range []*nomad.Task{mock, raw} {
		task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(5), MaxFileSizeMB: ptr(1)}
	}
	job := &nomad.Job{ID: ptr("mockfs"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mock, raw}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, api, "mockfs", 1, "running")[0].ID
	allocDir := filepath.Join(node.cfg.DataDir, "alloc", allocID)
	waitFor(t, 30*time.Second, "both tasks' output written", func() (bool, error) {
		for _, task := range []string{"mock", "raw"} {
			if logsOnDisk(allocDir, task, "stdout") != 2500000 || logsOnDisk(allocDir, task, "stderr") != 5 {
				return false, nil
			}
		}
		return true, nil
	})
	want := strings.Repeat(logPattern, 2500000/len(logPattern))

	for _, tc := range []struct{ name, base string }{{"via-server", srv.URL()}, {"direct", node.URL()}} {
		t.Run(tc.name, func(t *testing.T) {
			get := func(op, query string) string {
				t.Helper()
				code, body, _ := do(t, "GET", tc.base+"/v1/client/fs/"+op+"/"+allocID+"?"+query, nil)
				if code != 200 {
					t.Fatalf("%s?%s = %d %q", op, query, code, body)
				}
				return body
			}

			// ls: the same files with the same sizes, the names aside.
			var files []struct {
				Name  string
				Size  int64
				IsDir bool
			}
			if err := json.Unmarshal([]byte(get("ls", "path=/alloc/logs")), &files); err != nil {
				t.Fatal(err)
			}
			sizes := map[string]int64{}
			for _, f := range files {
				sizes[f.Name] = f.Size
			}
			for _, name := range []string{"stdout.0", "stdout.1", "stdout.2", "stderr.0"} {
				m, ok1 := sizes["mock."+name]
				r, ok2 := sizes["raw."+name]
				if !ok1 || !ok2 || m != r {
					t.Fatalf("ls: mock.%s %d (%v), raw.%s %d (%v); want equal", name, m, ok1, name, r, ok2)
				}
			}
			if len(sizes) != 8 {
				t.Fatalf("ls lists %v; want 4 files per task", sizes)
			}

			// cat of a rotated file, byte for byte.
			for _, f := range []string{"stdout.1", "stdout.2", "stderr.0"} {
				m, r := get("cat", "path=alloc/logs/mock."+f), get("cat", "path=alloc/logs/raw."+f)
				if m != r {
					t.Fatalf("cat %s: mock %d bytes, raw %d bytes; want the same", f, len(m), len(r))
				}
			}
			if got := get("cat", "path=alloc/logs/mock.stdout.2"); got != want[2<<20:] {
				t.Fatalf("cat mock.stdout.2 = %d bytes; want %d", len(got), len(want)-2<<20)
			}

			// stat: the same size and kind.
			var ms, rs struct {
				Name  string
				Size  int64
				IsDir bool
			}
			if err := json.Unmarshal([]byte(get("stat", "path=alloc/logs/mock.stdout.1")), &ms); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(get("stat", "path=alloc/logs/raw.stdout.1")), &rs); err != nil {
				t.Fatal(err)
			}
			if ms.Name != "mock.stdout.1" || ms.Size != 1<<20 || ms.IsDir || ms.Size != rs.Size || ms.IsDir != rs.IsDir {
				t.Fatalf("stat: mock %+v, raw %+v", ms, rs)
			}

			// readat, small and bulk, inside one rotated file.
			for _, q := range []struct {
				off, limit int
			}{{7, 100}, {1000, 64 << 10}, {0, 1 << 20}} {
				query := "offset=" + strconv.Itoa(q.off) + "&limit=" + strconv.Itoa(q.limit)
				m, r := get("readat", "path=alloc/logs/mock.stdout.1&"+query), get("readat", "path=alloc/logs/raw.stdout.1&"+query)
				if m != r || m != want[1<<20+q.off:1<<20+q.off+q.limit] {
					t.Fatalf("readat %s: mock %d bytes, raw %d bytes; want %d", query, len(m), len(r), q.limit)
				}
			}

			// logs, plain: the whole stream across the rotated files.
			for _, q := range []struct{ query, want string }{
				{"type=stdout&plain=true", want},
				{"type=stdout&plain=true&origin=end&offset=1500000", want[len(want)-1500000:]},
				{"type=stdout&plain=true&offset=1048570", want[1048570:]},
				{"type=stderr&plain=true", "warn\n"},
			} {
				m, r := get("logs", "task=mock&"+q.query), get("logs", "task=raw&"+q.query)
				if m != q.want || r != q.want {
					t.Fatalf("logs %s: mock %d bytes, raw %d bytes; want %d", q.query, len(m), len(r), len(q.want))
				}
			}

			// logs, framed: the same frames (file, offset, data).
			type frame struct {
				File   string
				Offset int64
				Data   string
			}
			framesOf := func(task string) []frame {
				var out []frame
				for _, f := range decodeFrames(t, []byte(get("logs", "task="+task+"&type=stdout"))) {
					out = append(out, frame{strings.Replace(f.File, "/"+task+".", "/TASK.", 1), f.Offset, string(f.Data)})
				}
				return out
			}
			mf, rf := framesOf("mock"), framesOf("raw")
			var joined strings.Builder
			for _, f := range mf {
				if !strings.HasPrefix(f.File, "alloc/logs/TASK.stdout.") {
					t.Fatalf("frame of file %q", f.File)
				}
				joined.WriteString(f.Data)
			}
			if joined.String() != want {
				t.Fatalf("mock framed logs decoded to %d bytes; want %d", joined.Len(), len(want))
			}
			if !reflect.DeepEqual(mf, rf) {
				t.Fatalf("mock and raw framed logs differ: %d and %d frames", len(mf), len(rf))
			}
		})
	}

	// A mock task's stats are zeros that say nothing was measured.
	alloc, _, err := api.Allocations().Info(allocID, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "mock task stats", func() (bool, error) {
		st, err := api.Allocations().Stats(alloc, nil)
		if err != nil {
			return false, err
		}
		u := st.Tasks["mock"]
		return u != nil && u.Timestamp != 0 && u.ResourceUsage.MemoryStats.RSS == 0 &&
			len(u.ResourceUsage.MemoryStats.Measured) == 0 && len(u.ResourceUsage.CpuStats.Measured) == 0, nil
	})
}

// TestMockDriver_FollowRotationLikeRawExec follows, through the server,
// the stdout of a mock_driver task and of a raw_exec task that both write
// 3,000,000 bytes in 60 pieces over about a second and a half, rotating
// 1 MiB files while they are followed: both follows read every byte, in
// order, across the rotations.
func TestMockDriver_FollowRotationLikeRawExec(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)

	const pieces, pieceLen = 60, 50000
	mock := mockTask("mock", map[string]any{
		"run_for": "1h", "stdout_string": strings.Repeat(logPattern, pieceLen/len(logPattern)),
		"stdout_repeat": pieces - 1, "stdout_repeat_duration": "25ms",
	})
	raw := shellTask("raw", `i=0; while [ $i -lt 60 ]; do yes "0123456789abcdefghi" | head -c 50000; sleep 0.025; i=$((i+1)); done; while :; do sleep 1; done`)
	for _, task := range []*nomad.Task{mock, raw} {
		task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(5), MaxFileSizeMB: ptr(1)}
	}
	job := &nomad.Job{ID: ptr("mockfollow"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mock, raw}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, api, "mockfollow", 1, "running")[0].ID
	// The allocation runs once one task does; the logs of a task that has
	// not started are a 404, as in Nomad.
	waitFor(t, 20*time.Second, "both tasks running", func() (bool, error) {
		a, _, err := api.Allocations().Info(allocID, nil)
		if err != nil {
			return false, err
		}
		for _, task := range []string{"mock", "raw"} {
			if ts := a.TaskStates[task]; ts == nil || ts.State != "running" {
				return false, fmt.Errorf("task %s: %+v", task, ts)
			}
		}
		return true, nil
	})
	want := strings.Repeat(logPattern, pieces*pieceLen/len(logPattern))

	results := make(chan error, 2)
	for _, task := range []string{"mock", "raw"} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			url := srv.URL() + "/v1/client/fs/logs/" + allocID + "?task=" + task + "&type=stdout&follow=true&plain=true"
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- fmt.Errorf("%s: %w", task, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				results <- fmt.Errorf("%s: status %d: %s", task, resp.StatusCode, b)
				return
			}
			got := make([]byte, len(want))
			if _, err := io.ReadFull(resp.Body, got); err != nil {
				results <- fmt.Errorf("%s: read: %w", task, err)
				return
			}
			if string(got) != want {
				results <- fmt.Errorf("%s: followed bytes differ from what the task wrote", task)
				return
			}
			results <- nil
		}()
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

// TestMockDriver_TaskStates runs mock_driver batch tasks and checks their
// task states and events, against raw_exec twins where there is one.
func TestMockDriver_TaskStates(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)

	noRestart := &nomad.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail"), Interval: ptr(time.Hour), Delay: ptr(time.Duration(0))}
	oneRestart := &nomad.RestartPolicy{Attempts: ptr(1), Mode: ptr("fail"), Interval: ptr(time.Hour), Delay: ptr(10 * time.Millisecond)}
	cases := []struct {
		id         string
		task       *nomad.Task
		policy     *nomad.RestartPolicy
		status     string
		failed     bool
		restarts   uint64
		events     []string
		terminated *nomad.TaskEvent // checked fields of the Terminated event
		failure    string           // DriverError of the Driver Failure events
	}{
		{id: "mock-ok", task: mockTask("t", map[string]any{"run_for": "20ms", "stdout_string": "done\n"}), policy: noRestart,
			status: "complete", events: []string{"Received", "Task Setup", "Started", "Terminated"},
			terminated: &nomad.TaskEvent{ExitCode: 0, DisplayMessage: "Exit Code: 0"}},
		{id: "raw-ok", task: shellTask("t", "echo done"), policy: noRestart,
			status: "complete", events: []string{"Received", "Task Setup", "Started", "Terminated"},
			terminated: &nomad.TaskEvent{ExitCode: 0, DisplayMessage: "Exit Code: 0"}},
		{id: "mock-exit", task: mockTask("t", map[string]any{"run_for": "10ms", "exit_code": 3}), policy: noRestart,
			status: "failed", failed: true, events: []string{"Received", "Task Setup", "Started", "Terminated", "Not Restarting"},
			terminated: &nomad.TaskEvent{ExitCode: 3, DisplayMessage: "Exit Code: 3"}},
		{id: "raw-exit", task: shellTask("t", "exit 3"), policy: noRestart,
			status: "failed", failed: true, events: []string{"Received", "Task Setup", "Started", "Terminated", "Not Restarting"},
			terminated: &nomad.TaskEvent{ExitCode: 3, DisplayMessage: "Exit Code: 3"}},
		{id: "mock-signal", task: mockTask("t", map[string]any{"exit_signal": 9, "exit_err_msg": "error on exit"}), policy: noRestart,
			status: "failed", failed: true, events: []string{"Received", "Task Setup", "Started", "Terminated", "Not Restarting"},
			terminated: &nomad.TaskEvent{ExitCode: 0, Signal: 9, DisplayMessage: `Exit Code: 0, Signal: 9, Exit Message: "error on exit"`}},
		{id: "mock-start-error", task: mockTask("t", map[string]any{"start_error": "no such image"}), policy: oneRestart,
			status: "failed", failed: true, events: []string{"Received", "Task Setup", "Driver Failure", "Not Restarting"},
			failure: "no such image"},
		{id: "mock-start-error-recoverable", task: mockTask("t", map[string]any{"start_error": "try again", "start_error_recoverable": true}), policy: oneRestart,
			status: "failed", failed: true, restarts: 1,
			events:  []string{"Received", "Task Setup", "Driver Failure", "Restarting", "Task Setup", "Driver Failure", "Not Restarting"},
			failure: "try again"},
		{id: "mock-start-block", task: mockTask("t", map[string]any{"start_block_for": "50ms", "run_for": "10ms"}), policy: noRestart,
			status: "complete", events: []string{"Received", "Task Setup", "Started", "Terminated"},
			terminated: &nomad.TaskEvent{DisplayMessage: "Exit Code: 0"}},
	}
	for _, tc := range cases {
		job := &nomad.Job{ID: ptr(tc.id), Type: ptr("batch"), Datacenters: []string{"dc1"},
			TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), RestartPolicy: tc.policy, Tasks: []*nomad.Task{tc.task}}}}
		if _, _, err := api.Jobs().Register(job, nil); err != nil {
			t.Fatalf("register %s: %v", tc.id, err)
		}
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			stub := waitAllocsStatus(t, api, tc.id, 1, tc.status)[0]
			a, _, err := api.Allocations().Info(stub.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := a.TaskStates["t"]
			if st.State != "dead" || st.Failed != tc.failed || st.Restarts != tc.restarts {
				t.Fatalf("state %s failed=%v restarts=%d; want dead failed=%v restarts=%d", st.State, st.Failed, st.Restarts, tc.failed, tc.restarts)
			}
			var types []string
			for _, ev := range st.Events {
				types = append(types, ev.Type)
				switch ev.Type {
				case "Terminated":
					want := tc.terminated
					if ev.ExitCode != want.ExitCode || ev.Signal != want.Signal || ev.DisplayMessage != want.DisplayMessage {
						t.Errorf("Terminated = code %d signal %d %q; want %d %d %q", ev.ExitCode, ev.Signal, ev.DisplayMessage,
							want.ExitCode, want.Signal, want.DisplayMessage)
					}
				case "Driver Failure":
					if ev.DriverError != tc.failure || !ev.FailsTask {
						t.Errorf("Driver Failure = %q fails=%v; want %q", ev.DriverError, ev.FailsTask, tc.failure)
					}
				}
			}
			if !reflect.DeepEqual(types, tc.events) {
				t.Errorf("events %v; want %v", types, tc.events)
			}
			if !st.StartedAt.IsZero() != (tc.terminated != nil) {
				t.Errorf("StartedAt = %v; want set only for a task that started", st.StartedAt)
			}
		})
	}

	// A stopped mock task is killed as a real one: Killing, then Killed
	// once kill_after passed; it is not a failure.
	job := &nomad.Job{ID: ptr("mock-stop"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{
			mockTask("t", map[string]any{"run_for": "1h", "kill_after": "100ms"})}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	stub := waitAllocsStatus(t, api, "mock-stop", 1, "running")[0]
	if _, _, err := api.Jobs().Deregister("mock-stop", false, nil); err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "mock-stop", 1, "complete")
	a, _, err := api.Allocations().Info(stub.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := a.TaskStates["t"]
	n := len(st.Events)
	if st.Failed || n < 2 || st.Events[n-2].Type != "Killing" || st.Events[n-1].Type != "Killed" {
		t.Fatalf("stopped task: failed=%v events %+v; want Killing, Killed", st.Failed, st.Events)
	}
	if d := time.Duration(st.Events[n-1].Time - st.Events[n-2].Time); d < 100*time.Millisecond {
		t.Fatalf("Killed %v after Killing; want at least kill_after 100ms", d)
	}
}

// TestMockDriver_Placement: mock_driver tasks go only to nodes that offer
// the driver, which they advertise as Nomad nodes do.
func TestMockDriver_Placement(t *testing.T) {
	srv := startServer(t, "server1")
	plain := startNode(t, "plain", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)

	job := &nomad.Job{ID: ptr("mock"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{mockTask("t", map[string]any{"run_for": "1h"})}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	j, _, err := api.Jobs().Info("mock", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *j.Status != "pending" || !strings.Contains(*j.StatusDescription, `missing driver "mock_driver"`) {
		t.Fatalf("job status = %q %q; want pending for the missing driver", *j.Status, *j.StatusDescription)
	}
	info, _, err := api.Nodes().Info(plain.Client().NodeID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.Drivers["mock_driver"]; ok || info.Attributes["driver.mock_driver"] != "" {
		t.Fatalf("node without the plugin block advertises mock_driver: %+v", info.Drivers)
	}

	mock := startNode(t, "mock", withServers(srv.RPCAddr()), withMockDriver())
	info, _, err = api.Nodes().Info(mock.Client().NodeID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := info.Drivers["mock_driver"]; d == nil || !d.Detected || !d.Healthy || info.Attributes["driver.mock_driver"] != "1" {
		t.Fatalf("Drivers[mock_driver] = %+v, attribute %q; want detected, healthy and \"1\"", d, info.Attributes["driver.mock_driver"])
	}
	allocs := waitAllocsStatus(t, api, "mock", 1, "running")
	if allocs[0].NodeID != mock.Client().NodeID() {
		t.Fatalf("placed on %s; want the mock_driver node %s", allocs[0].NodeID, mock.Client().NodeID())
	}
}
