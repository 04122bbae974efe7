package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestAllocations_KillSignalAndTimeout: stop sends the kill signal (SIGINT
// by default) and a task that ignores it is killed after kill_timeout.
func TestAllocations_KillSignalAndTimeout(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)
	polite := shellTask("polite", `trap 'echo got-int; exit 0' INT; echo ready; while :; do sleep 0.1; done`)
	stubborn := shellTask("stubborn", `trap '' INT TERM; echo ready; while :; do sleep 0.1; done`)
	stubborn.KillTimeout = ptr(500 * time.Millisecond)
	job := &nomad.Job{ID: ptr("kill"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{polite, stubborn}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	id := waitAllocsStatus(t, api, "kill", 1, "running")[0].ID
	logs := filepath.Join(node.cfg.DataDir, "alloc", id, "alloc", "logs")
	waitFor(t, 10*time.Second, "tasks ready", func() (bool, error) {
		a, _ := os.ReadFile(filepath.Join(logs, "polite.stdout.0"))
		b, _ := os.ReadFile(filepath.Join(logs, "stubborn.stdout.0"))
		return strings.Contains(string(a), "ready") && strings.Contains(string(b), "ready"), nil
	})
	if _, _, err := api.Jobs().Deregister("kill", false, nil); err != nil {
		t.Fatal(err)
	}
	waitAllocsStatus(t, api, "kill", 1, "complete")
	b, _ := os.ReadFile(filepath.Join(logs, "polite.stdout.0"))
	if !strings.Contains(string(b), "got-int") {
		t.Fatalf("polite task output %q; want got-int from its SIGINT trap", b)
	}
	a, _, err := api.Allocations().Info(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	var killed bool
	for _, ev := range a.TaskStates["stubborn"].Events {
		if ev.Type == "Killed" || (ev.Type == "Terminated" && ev.Signal == 9) {
			killed = true
		}
	}
	if !killed {
		t.Fatalf("stubborn task events %+v; want it killed", a.TaskStates["stubborn"].Events)
	}
}

// TestAllocations_LogRotationAndRestarts: logs never exceed max_files ×
// max_file_size; a failing batch task is restarted as its policy allows,
// then marked failed.
func TestAllocations_LogRotationAndRestarts(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec())
	api := srv.API(t)

	chatty := shellTask("chatty", `head -c 3670016 /dev/zero | tr '\0' x; while :; do sleep 1; done`) // 3.5 MiB
	chatty.LogConfig = &nomad.LogConfig{MaxFiles: ptr(2), MaxFileSizeMB: ptr(1)}
	job := &nomad.Job{ID: ptr("rot"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{chatty}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	id := waitAllocsStatus(t, api, "rot", 1, "running")[0].ID
	logs := filepath.Join(node.cfg.DataDir, "alloc", id, "alloc", "logs")
	waitFor(t, 15*time.Second, "rotation to .3", func() (bool, error) {
		fi, err := os.Stat(filepath.Join(logs, "chatty.stdout.3"))
		return err == nil && fi.Size() == 512<<10, err
	})
	ents, _ := os.ReadDir(logs)
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "chatty.stdout.") {
			names = append(names, e.Name())
		}
	}
	if strings.Join(names, ",") != "chatty.stdout.2,chatty.stdout.3" {
		t.Fatalf("stdout files = %v; want only .2 and .3 (max_files 2)", names)
	}
	if fi, _ := os.Stat(filepath.Join(logs, "chatty.stdout.2")); fi.Size() != 1<<20 {
		t.Fatalf("chatty.stdout.2 is %d bytes; want 1 MiB", fi.Size())
	}

	failing := shellTask("f", `exit 3`)
	fjob := &nomad.Job{ID: ptr("flaky"), Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"),
			RestartPolicy: &nomad.RestartPolicy{Attempts: ptr(2), Delay: ptr(50 * time.Millisecond), Interval: ptr(time.Hour), Mode: ptr("fail")},
			Tasks:         []*nomad.Task{failing}}}}
	if _, _, err := api.Jobs().Register(fjob, nil); err != nil {
		t.Fatal(err)
	}
	fid := waitAllocsStatus(t, api, "flaky", 1, "failed")[0].ID
	a, _, err := api.Allocations().Info(fid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := a.TaskStates["f"]; st.Restarts != 2 || !st.Failed {
		t.Fatalf("task state restarts=%d failed=%v; want 2 restarts then failed", st.Restarts, st.Failed)
	}
}

// TestAllocations_AgentRestartKeepsAllocDirs: a node agent restarted on the
// same data dir is the same node, its allocation dirs stay readable
// through the API, and its running allocation runs again.
func TestAllocations_AgentRestartKeepsAllocDirs(t *testing.T) {
	srv := startServer(t, "server1")
	dataDir := t.TempDir()
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec(), withDataDir(dataDir))
	nodeID := node.Client().NodeID()
	api := srv.API(t)
	job := &nomad.Job{ID: ptr("keep"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{
			shellTask("t", `echo started >> "$NOMAD_ALLOC_DIR/data/runs"; while :; do sleep 1; done`)}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	id := waitAllocsStatus(t, api, "keep", 1, "running")[0].ID
	runs := filepath.Join(dataDir, "alloc", id, "alloc", "data", "runs")
	waitFor(t, 10*time.Second, "first run", func() (bool, error) {
		b, _ := os.ReadFile(runs)
		return strings.Count(string(b), "started") == 1, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	node2 := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec(), withDataDir(dataDir))
	if node2.Client().NodeID() != nodeID {
		t.Fatalf("restarted node ID %s; want %s", node2.Client().NodeID(), nodeID)
	}
	code, body, _ := do(t, "GET", srv.URL()+"/v1/client/fs/cat/"+id+"?path=alloc/data/runs", nil)
	if code != 200 || !strings.Contains(body, "started") {
		t.Fatalf("cat after restart = %d %q", code, body)
	}
	waitFor(t, 15*time.Second, "allocation runs again", func() (bool, error) {
		b, _ := os.ReadFile(runs)
		return strings.Count(string(b), "started") == 2, nil
	})
	waitAllocsStatus(t, api, "keep", 1, "running")
}
