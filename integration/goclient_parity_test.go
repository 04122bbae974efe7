package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
	"tether/structs"
)

// The official Go client is the judge: every endpoint Tether serves,
// called through the client method an operator's tool calls, answers what
// Nomad v1.6.5 answers (decoded, fields filled as Nomad fills them, query
// meta as Nomad sets it, Nomad's 404 texts). The expectations are the
// client's own tests' and the facts of ../shared/spec.

// TestGoClientParity_FreshCluster: on a cluster that has written no job,
// allocation or evaluation, their lists are empty with LastIndex 0 (the
// client's TestAllocations_List asserts it), while the nodes table, which
// the node's registration wrote, has an index.
func TestGoClientParity_FreshCluster(t *testing.T) {
	srv := startServer(t, "server1")
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)

	cases := []struct {
		name     string
		call     func() (int, *nomad.QueryMeta, error)
		nonEmpty bool
	}{
		{"Allocations().List", func() (int, *nomad.QueryMeta, error) {
			l, qm, err := api.Allocations().List(nil)
			return len(l), qm, err
		}, false},
		{"Evaluations().List", func() (int, *nomad.QueryMeta, error) {
			l, qm, err := api.Evaluations().List(nil)
			return len(l), qm, err
		}, false},
		{"Jobs().List", func() (int, *nomad.QueryMeta, error) {
			l, qm, err := api.Jobs().List(nil)
			return len(l), qm, err
		}, false},
		{"Jobs().Allocations", func() (int, *nomad.QueryMeta, error) {
			l, qm, err := api.Jobs().Allocations("none", false, nil)
			return len(l), qm, err
		}, false},
		{"Nodes().List", func() (int, *nomad.QueryMeta, error) {
			l, qm, err := api.Nodes().List(nil)
			return len(l), qm, err
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, qm, err := tc.call()
			if err != nil {
				t.Fatal(err)
			}
			if !qm.KnownLeader {
				t.Errorf("KnownLeader false on the leader")
			}
			if tc.nonEmpty {
				if n == 0 || qm.LastIndex == 0 {
					t.Fatalf("%d entries, LastIndex %d; want the node and its registration's index", n, qm.LastIndex)
				}
				return
			}
			if n != 0 || qm.LastIndex != 0 {
				t.Fatalf("%d entries, LastIndex %d; want none and 0 (a table never written)", n, qm.LastIndex)
			}
		})
	}
}

// TestGoClientParity_Endpoints runs a job on a mock_driver node and calls
// every client method of the endpoints Tether serves.
func TestGoClientParity_Endpoints(t *testing.T) {
	srv := startServer(t, "server1")
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver())
	api := srv.API(t)
	nodeID := node.Client().NodeID()

	job := &nomad.Job{ID: ptr("parity"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{
			mockTask("t", map[string]any{"run_for": "1h", "stdout_string": "hello\n"}),
		}}}}
	reg, wm, err := api.Jobs().Register(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	if wm.LastIndex == 0 || reg.EvalID == "" {
		t.Fatalf("Register: %+v, LastIndex %d", reg, wm.LastIndex)
	}
	stub := waitAllocsStatus(t, api, "parity", 1, "running")[0]
	alloc, _, err := api.Allocations().Info(stub.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the task's output", func() (bool, error) {
		fi, _, err := api.AllocFS().Stat(alloc, "alloc/logs/t.stdout.0", nil)
		return err == nil && fi.Size > 0, err
	})

	cases := []struct {
		name string
		// check calls the method and judges its answer; a QueryMeta it
		// returns is held to Nomad's (a known leader, an index).
		check func(t *testing.T) *nomad.QueryMeta
	}{
		{"Jobs().List", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Jobs().List(nil)
			if err != nil || len(l) != 1 {
				t.Fatalf("%d jobs, %v", len(l), err)
			}
			s := l[0]
			if s.JobSummary == nil || s.JobSummary.Namespace != "default" || s.JobSummary.JobID != "parity" ||
				s.JobSummary.Summary["g"].Running != 1 {
				t.Fatalf("JobSummary = %+v; want one running in g (nomad job status reads it)", s.JobSummary)
			}
			if qm.LastIndex < s.ModifyIndex {
				t.Errorf("LastIndex %d below the job's ModifyIndex %d", qm.LastIndex, s.ModifyIndex)
			}
			return qm
		}},
		{"Jobs().PrefixList", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Jobs().PrefixList("par")
			if err != nil || len(l) != 1 || l[0].JobSummary == nil {
				t.Fatalf("%+v, %v", l, err)
			}
			if l2, _, _ := api.Jobs().PrefixList("zzz"); len(l2) != 0 {
				t.Errorf("prefix zzz matched %d", len(l2))
			}
			return qm
		}},
		{"Jobs().Info", func(t *testing.T) *nomad.QueryMeta {
			j, qm, err := api.Jobs().Info("parity", nil)
			if err != nil || *j.ID != "parity" || j.Version == nil || len(j.TaskGroups) != 1 {
				t.Fatalf("%+v, %v", j, err)
			}
			if qm.LastIndex != *j.ModifyIndex {
				t.Errorf("LastIndex %d; want the job's ModifyIndex %d", qm.LastIndex, *j.ModifyIndex)
			}
			return qm
		}},
		{"Jobs().Allocations", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Jobs().Allocations("parity", false, nil)
			if err != nil || len(l) != 1 || l[0].ID != alloc.ID {
				t.Fatalf("%+v, %v", l, err)
			}
			return qm
		}},
		{"Jobs().Evaluations", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Jobs().Evaluations("parity", nil)
			if err != nil || len(l) != 1 || l[0].ID != reg.EvalID {
				t.Fatalf("%+v, %v", l, err)
			}
			if qm.LastIndex != l[0].ModifyIndex {
				t.Errorf("LastIndex %d; want the evals table's %d", qm.LastIndex, l[0].ModifyIndex)
			}
			return qm
		}},
		{"Jobs().Summary", func(t *testing.T) *nomad.QueryMeta {
			s, qm, err := api.Jobs().Summary("parity", nil)
			if err != nil || s.Summary["g"].Running != 1 || s.Children == nil {
				t.Fatalf("%+v, %v", s, err)
			}
			if qm.LastIndex != s.ModifyIndex {
				t.Errorf("LastIndex %d; want the summary's ModifyIndex %d", qm.LastIndex, s.ModifyIndex)
			}
			return qm
		}},
		{"Allocations().List", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Allocations().List(nil)
			if err != nil || len(l) != 1 {
				t.Fatalf("%+v, %v", l, err)
			}
			if l[0].AllocatedResources != nil {
				t.Errorf("AllocatedResources set without ?resources=true")
			}
			if qm.LastIndex != l[0].ModifyIndex {
				t.Errorf("LastIndex %d; want the allocs table's %d", qm.LastIndex, l[0].ModifyIndex)
			}
			return qm
		}},
		{"Allocations().List resources", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Allocations().List(&nomad.QueryOptions{Params: map[string]string{"resources": "true"}})
			if err != nil || len(l) != 1 {
				t.Fatalf("%+v, %v", l, err)
			}
			ar := l[0].AllocatedResources
			if ar == nil || ar.Tasks["t"] == nil || ar.Tasks["t"].Cpu.CpuShares != 100 || ar.Tasks["t"].Memory.MemoryMB != 64 {
				t.Fatalf("AllocatedResources = %+v; want task t with 100 MHz and 64 MB", ar)
			}
			return qm
		}},
		{"Allocations().Info", func(t *testing.T) *nomad.QueryMeta {
			a, qm, err := api.Allocations().Info(alloc.ID, nil)
			if err != nil || a.Job == nil || a.Job.Version == nil || a.NodeID != nodeID {
				t.Fatalf("%+v, %v", a, err)
			}
			if ar := a.AllocatedResources; ar == nil || ar.Tasks["t"] == nil || ar.Tasks["t"].Cpu.CpuShares != 100 {
				t.Fatalf("AllocatedResources = %+v; want task t's", ar)
			}
			if qm.LastIndex != a.ModifyIndex {
				t.Errorf("LastIndex %d; want the allocation's ModifyIndex %d", qm.LastIndex, a.ModifyIndex)
			}
			return qm
		}},
		{"Allocations().Stats", func(t *testing.T) *nomad.QueryMeta {
			st, err := api.Allocations().Stats(alloc, nil)
			if err != nil || st.Tasks["t"] == nil {
				t.Fatalf("%+v, %v", st, err)
			}
			return nil
		}},
		{"Allocations().Checks", func(t *testing.T) *nomad.QueryMeta {
			if _, err := api.Allocations().Checks(alloc.ID, nil); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{"Evaluations().List", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Evaluations().List(nil)
			if err != nil || len(l) != 1 || l[0].Status != "complete" {
				t.Fatalf("%+v, %v", l, err)
			}
			if qm.LastIndex != l[0].ModifyIndex {
				t.Errorf("LastIndex %d; want the evals table's %d", qm.LastIndex, l[0].ModifyIndex)
			}
			return qm
		}},
		{"Evaluations().Info", func(t *testing.T) *nomad.QueryMeta {
			e, qm, err := api.Evaluations().Info(reg.EvalID, nil)
			if err != nil || e.JobID != "parity" {
				t.Fatalf("%+v, %v", e, err)
			}
			if qm.LastIndex != e.ModifyIndex {
				t.Errorf("LastIndex %d; want the eval's ModifyIndex %d", qm.LastIndex, e.ModifyIndex)
			}
			return qm
		}},
		{"Evaluations().Allocations", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Evaluations().Allocations(reg.EvalID, nil)
			if err != nil || len(l) != 1 {
				t.Fatalf("%+v, %v", l, err)
			}
			return qm
		}},
		{"Nodes().List", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Nodes().List(nil)
			if err != nil || len(l) != 1 || l[0].ID != nodeID {
				t.Fatalf("%+v, %v", l, err)
			}
			if l[0].NodeResources != nil || l[0].ReservedResources != nil {
				t.Errorf("resources set without ?resources=true")
			}
			if qm.LastIndex != l[0].ModifyIndex {
				t.Errorf("LastIndex %d; want the nodes table's %d", qm.LastIndex, l[0].ModifyIndex)
			}
			return qm
		}},
		{"Nodes().List resources", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Nodes().List(&nomad.QueryOptions{Params: map[string]string{"resources": "true"}})
			if err != nil || len(l) != 1 {
				t.Fatalf("%+v, %v", l, err)
			}
			if l[0].NodeResources == nil || l[0].ReservedResources == nil || l[0].NodeResources.Cpu.CpuShares == 0 {
				t.Fatalf("NodeResources %+v ReservedResources %+v; want both", l[0].NodeResources, l[0].ReservedResources)
			}
			return qm
		}},
		{"Nodes().PrefixList", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Nodes().PrefixList(nodeID[:4])
			if err != nil || len(l) != 1 {
				t.Fatalf("%+v, %v", l, err)
			}
			return qm
		}},
		{"Nodes().Info", func(t *testing.T) *nomad.QueryMeta {
			n, qm, err := api.Nodes().Info(nodeID, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := n.NodeResources
			if r == nil || r.MinDynamicPort != 20000 || r.MaxDynamicPort != 32000 || r.Cpu.CpuShares == 0 ||
				r.Cpu.TotalCpuCores == 0 || len(r.Cpu.ReservableCpuCores) != int(r.Cpu.TotalCpuCores) ||
				r.Memory.MemoryMB == 0 || r.Disk.DiskMB == 0 || len(r.Networks) == 0 || r.Networks[0].IP == "" {
				t.Fatalf("NodeResources = %+v; want Nomad's complete block", r)
			}
			if n.ReservedResources == nil || n.Resources == nil || n.Resources.CPU == nil {
				t.Fatalf("ReservedResources %+v Resources %+v", n.ReservedResources, n.Resources)
			}
			if len(n.Events) == 0 || n.NodePool != "default" {
				t.Fatalf("%d events, pool %q", len(n.Events), n.NodePool)
			}
			if qm.LastIndex != n.ModifyIndex {
				t.Errorf("LastIndex %d; want the node's ModifyIndex %d", qm.LastIndex, n.ModifyIndex)
			}
			return qm
		}},
		{"Nodes().Allocations", func(t *testing.T) *nomad.QueryMeta {
			l, qm, err := api.Nodes().Allocations(nodeID, nil)
			if err != nil || len(l) != 1 || l[0].Job == nil || l[0].AllocatedResources == nil {
				t.Fatalf("%+v, %v", l, err)
			}
			if qm.LastIndex != l[0].ModifyIndex {
				t.Errorf("LastIndex %d; want the allocation's ModifyIndex %d", qm.LastIndex, l[0].ModifyIndex)
			}
			return qm
		}},
		{"Nodes().Stats", func(t *testing.T) *nomad.QueryMeta {
			st, err := api.Nodes().Stats(nodeID, nil)
			if err != nil || st.Memory == nil || st.Memory.Total == 0 || st.AllocDirStats == nil {
				t.Fatalf("%+v, %v", st, err)
			}
			return nil
		}},
		{"Nodes().Meta().Read", func(t *testing.T) *nomad.QueryMeta {
			m, err := api.Nodes().Meta().Read(nodeID, nil)
			if err != nil || m.Meta == nil {
				t.Fatalf("%+v, %v", m, err)
			}
			return nil
		}},
		{"Nodes().Meta().Apply", func(t *testing.T) *nomad.QueryMeta {
			m, err := api.Nodes().Meta().Apply(&nomad.NodeMetaApplyRequest{NodeID: nodeID, Meta: map[string]*string{"parity": sp("yes")}}, nil)
			if err != nil || m.Meta["parity"] != "yes" || m.Dynamic["parity"] == nil {
				t.Fatalf("%+v, %v", m, err)
			}
			return nil
		}},
		{"Jobs().LatestDeployment", func(t *testing.T) *nomad.QueryMeta {
			d, qm, err := api.Jobs().LatestDeployment("parity", nil)
			if err != nil || d != nil || qm.LastIndex != 0 {
				t.Fatalf("%+v, %+v, %v; want none at the index of a table never written", d, qm, err)
			}
			return nil
		}},
		{"AllocFS().Stat", func(t *testing.T) *nomad.QueryMeta {
			fi, _, err := api.AllocFS().Stat(alloc, "alloc/logs/t.stdout.0", nil)
			if err != nil || fi.IsDir || fi.Size == 0 || fi.Name != "t.stdout.0" {
				t.Fatalf("%+v, %v", fi, err)
			}
			return nil
		}},
		{"AllocFS().Logs", func(t *testing.T) *nomad.QueryMeta {
			cancel := make(chan struct{})
			defer close(cancel)
			frames, errs := api.AllocFS().Logs(alloc, false, "t", "stdout", "start", 0, cancel, nil)
			var got []byte
			for f := range frames {
				got = append(got, f.Data...)
			}
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			if !strings.HasPrefix(string(got), "hello\n") {
				t.Fatalf("logs %q", got)
			}
			return nil
		}},
		{"AllocFS().List", func(t *testing.T) *nomad.QueryMeta {
			l, _, err := api.AllocFS().List(alloc, "alloc/logs", nil)
			if err != nil || len(l) == 0 {
				t.Fatalf("%+v, %v", l, err)
			}
			return nil
		}},
		{"AllocFS().Cat", func(t *testing.T) *nomad.QueryMeta {
			rc, err := api.AllocFS().Cat(alloc, "alloc/logs/t.stdout.0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil || !strings.HasPrefix(string(b), "hello\n") {
				t.Fatalf("%q, %v", b, err)
			}
			return nil
		}},
		{"AllocFS().ReadAt", func(t *testing.T) *nomad.QueryMeta {
			rc, err := api.AllocFS().ReadAt(alloc, "alloc/logs/t.stdout.0", 1, 4, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if b, err := io.ReadAll(rc); err != nil || string(b) != "ello" {
				t.Fatalf("%q, %v", b, err)
			}
			return nil
		}},
		{"Status().Leader", func(t *testing.T) *nomad.QueryMeta {
			if l, err := api.Status().Leader(); err != nil || l != srv.RPCAddr() {
				t.Fatalf("%q, %v; want %q", l, err, srv.RPCAddr())
			}
			return nil
		}},
		{"Status().Peers", func(t *testing.T) *nomad.QueryMeta {
			if p, err := api.Status().Peers(); err != nil || len(p) != 1 {
				t.Fatalf("%v, %v", p, err)
			}
			return nil
		}},
		{"Agent().Self", func(t *testing.T) *nomad.QueryMeta {
			s, err := api.Agent().Self()
			if err != nil || s.Member.Name == "" || s.Config["Region"] != "global" {
				t.Fatalf("%+v, %v", s, err)
			}
			return nil
		}},
		{"Agent().Members", func(t *testing.T) *nomad.QueryMeta {
			if m, err := api.Agent().Members(); err != nil || len(m.Members) != 1 {
				t.Fatalf("%+v, %v", m, err)
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qm := tc.check(t)
			if qm == nil {
				return
			}
			if qm.LastIndex == 0 || !qm.KnownLeader || qm.LastContact != 0 {
				t.Errorf("QueryMeta %+v; want an index, a known leader and LastContact 0 on the leader", qm)
			}
		})
	}

	// Nomad's 404s, as the client reports them.
	unknown := "2b6a7ae6-4c7a-4f1e-9f0a-123456789abc"
	notFound := []struct {
		name string
		call func() error
		text string
	}{
		{"Jobs().Info", func() error { _, _, err := api.Jobs().Info("nope", nil); return err }, "job not found"},
		{"Jobs().Summary", func() error { _, _, err := api.Jobs().Summary("nope", nil); return err }, "job not found"},
		{"Allocations().Info", func() error { _, _, err := api.Allocations().Info(unknown, nil); return err }, "alloc not found"},
		{"Evaluations().Info", func() error { _, _, err := api.Evaluations().Info(unknown, nil); return err }, "eval not found"},
		{"Nodes().Info", func() error { _, _, err := api.Nodes().Info(unknown, nil); return err }, "node not found"},
	}
	for _, tc := range notFound {
		t.Run(tc.name+" 404", func(t *testing.T) {
			want := "Unexpected response code: 404 (" + tc.text + ")"
			if err := tc.call(); err == nil || err.Error() != want {
				t.Fatalf("err = %v; want %q", err, want)
			}
		})
	}

	// The GC calls last: they collect the allocation once it is stopped.
	if _, err := api.Allocations().Stop(alloc, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the allocation stopped", func() (bool, error) {
		a, _, err := api.Allocations().Info(alloc.ID, nil)
		return err == nil && a.ClientStatus == "complete", err
	})
	if err := api.Allocations().GC(alloc, nil); err != nil {
		t.Fatalf("Allocations().GC: %v", err)
	}
	if err := api.Nodes().GC(nodeID, nil); err != nil {
		t.Fatalf("Nodes().GC: %v", err)
	}
}

// TestGoClientParity_TestutilConfig: the official client's test server
// (api/internal/testutil/server.go) runs `agent -config <file> [-dev]`
// with a JSON file of these keys; Tether accepts each file as written, and
// the agent it configures answers the test server's readiness polls
// (/v1/status/leader, then /v1/nodes for a ready node in dev mode).
func TestGoClientParity_TestutilConfig(t *testing.T) {
	cases := []struct {
		name string
		dev  bool
		json string
	}{
		{"default server", false, `{"name":"node-%d","data_dir":%q,"disable_update_check":true,"log_level":"ERROR",` +
			`"ports":{"http":%d,"rpc":%d,"serf":%d},"server":{"enabled":true,"bootstrap_expect":1},` +
			`"client":{"enabled":false},"vault":{"enabled":false},"acl":{"enabled":false}}`},
		{"dev with every key", true, `{"name":"node-%d","data_dir":%q,"region":"global","disable_update_check":true,` +
			`"log_level":"ERROR","consul":{"address":"127.0.0.1:8500","auth":"","token":""},` +
			`"advertise":{"http":"127.0.0.1","rpc":"127.0.0.1","serf":"127.0.0.1"},` +
			`"ports":{"http":%d,"rpc":%d,"serf":%d},"server":{"enabled":true,"bootstrap_expect":1,"raft_protocol":3},` +
			`"client":{"enabled":true,"options":{"test.tighten_network_timeouts":"true","driver.raw_exec.enable":"1"}},` +
			`"vault":{"enabled":false},"acl":{"enabled":true},"telemetry":{"prometheus_metrics":true}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "nomad.json")
			body := fmt.Sprintf(tc.json, 24646, filepath.Join(dir, "data"), 24646, 24647, 24648)
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := agent.DefaultConfig()
			if tc.dev {
				cfg = agent.DevConfig()
			}
			fc, warnings, err := agent.LoadConfig(path)
			if err != nil {
				t.Fatalf("LoadConfig refused the test server's file: %v", err)
			}
			t.Logf("ignored, with a warning: %q", warnings)
			cfg = cfg.Merge(fc)
			if cfg.Name != "node-24646" || cfg.Ports.HTTP != 24646 || cfg.Ports.RPC != 24647 || cfg.Ports.Serf != 24648 ||
				!cfg.Server.Enabled || cfg.Server.BootstrapExpect != 1 || cfg.Client.Enabled != tc.dev ||
				cfg.ACL.Enabled != tc.dev || cfg.LogLevel != "ERROR" || cfg.DataDir != filepath.Join(dir, "data") {
				t.Fatalf("the file was not applied: %+v", cfg)
			}
			if err := cfg.NormalizeAddrs(); err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			// Free ports instead of the file's, so parallel runs do not
			// collide; everything else as the file says.
			cfg.BindAddr = "127.0.0.1"
			cfg.Ports.HTTP, cfg.Ports.RPC, cfg.Ports.Serf = 0, 0, 0
			cfg.Advertise.HTTP, cfg.Advertise.RPC, cfg.Advertise.Serf = "127.0.0.1", "127.0.0.1", "127.0.0.1"
			cfg.ServerTuning = fastServer
			a := startAgent(t, cfg)
			waitFor(t, 15*time.Second, "a leader", func() (bool, error) {
				code, body, err := tryGet(a.URL() + "/v1/status/leader")
				return code == http.StatusOK && body != `""`, err
			})
			// Newer test servers wait for the keyring instead: a key in
			// the JWKS.
			waitFor(t, 15*time.Second, "a key in the JWKS", func() (bool, error) {
				code, body, err := tryGet(a.URL() + "/.well-known/jwks.json")
				return code == http.StatusOK && strings.Contains(body, `"kid":`), err
			})
			if !tc.dev {
				return
			}
			api := a.API(t)
			api.SetSecretID(bootstrap(t, a))
			waitFor(t, 15*time.Second, "a ready node", func() (bool, error) {
				l, _, err := api.Nodes().List(nil)
				return err == nil && len(l) == 1 && l[0].Status == "ready", err
			})
		})
	}
}

// TestGoClientParity_SuiteFindings holds what running the official
// client's own test suite against Tether found different from Nomad, each
// as that suite asserts it: a job ID with "/" and other characters, an
// unknown evaluation's allocations, the ACL policy list's index, the
// allocation's NetworkStatus, a blocked evaluation when nothing fits, and
// a mock_driver task writing half a megabyte.
func TestGoClientParity_SuiteFindings(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	api := apiWithToken(t, srv, bootstrap(t, srv))

	pols, qm, err := api.ACLPolicies().List(nil)
	if err != nil || len(pols) != 0 || qm.LastIndex != 1 {
		t.Fatalf("ACLPolicies().List on no policy = %d, index %d, %v; want none at index 1", len(pols), qm.LastIndex, err)
	}
	allocs, qm, err := api.Evaluations().Allocations(structs.GenerateUUID(), nil)
	if err != nil || len(allocs) != 0 || qm.LastIndex != 0 {
		t.Fatalf("Evaluations().Allocations of an unknown eval = %d, index %d, %v; want none at index 0", len(allocs), qm.LastIndex, err)
	}

	// Nothing fits yet (no node): the registration's evaluation is
	// complete and hands over to a blocked one.
	id := "job-id/with\\troublesome:characters\n?&字"
	_, _, err = api.Jobs().Info(id, nil)
	wantStatus(t, "Jobs().Info before the job exists", err, 404, "job not found")
	if evalID, _, err := api.Jobs().Deregister(id, false, nil); err != nil || evalID != "" {
		t.Fatalf("Jobs().Deregister of no job = %q, %v; want no error and no evaluation", evalID, err)
	}
	var input strings.Builder
	for i := range 80_000 {
		fmt.Fprintf(&input, "%d\n", i)
	}
	job := &nomad.Job{ID: &id, Type: ptr("batch"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{
			mockTask("logger", map[string]any{"stdout_string": input.String()}),
		}}}}
	reg, _, err := api.Jobs().Register(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := api.Jobs().Info(id, nil); err != nil || *got.ID != id {
		t.Fatalf("Jobs().Info(%q) = %v; want the job", id, err)
	}
	ev, _, err := api.Evaluations().Info(reg.EvalID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Status != "complete" || ev.BlockedEval == "" || len(ev.FailedTGAllocs) != 1 {
		t.Fatalf("registration eval = %+v; want complete, failed to place g, with a blocked eval", ev)
	}
	evals, _, err := api.Evaluations().List(nil)
	if err != nil || len(evals) != 2 || evals[0].ID != ev.BlockedEval || evals[0].Status != "blocked" ||
		evals[0].PreviousEval != reg.EvalID || evals[1].ID != reg.EvalID {
		t.Fatalf("Evaluations().List = %+v, %v; want the blocked eval, then the registration's", evals, err)
	}
	// Paged, by prefix, and with the related evaluations, as the client's
	// TestEvaluations_List, _PrefixList and _Info ask.
	first, qm, err := api.Evaluations().List(&nomad.QueryOptions{PerPage: 1})
	if err != nil || len(first) != 1 || first[0].ID != ev.BlockedEval || qm.NextToken == "" {
		t.Fatalf("first page = %+v, token %q, %v; want the blocked eval and a token", first, qm.NextToken, err)
	}
	second, qm, err := api.Evaluations().List(&nomad.QueryOptions{PerPage: 1, NextToken: qm.NextToken})
	if err != nil || len(second) != 1 || second[0].ID != reg.EvalID || qm.NextToken != "" {
		t.Fatalf("second page = %+v, token %q, %v; want the registration's eval and no token", second, qm.NextToken, err)
	}
	if byPrefix, _, err := api.Evaluations().PrefixList(reg.EvalID[:4]); err != nil || len(byPrefix) != 1 || byPrefix[0].ID != reg.EvalID {
		t.Fatalf("PrefixList = %+v, %v; want the registration's eval", byPrefix, err)
	}
	withRel, _, err := api.Evaluations().Info(reg.EvalID, &nomad.QueryOptions{Params: map[string]string{"related": "true"}})
	if err != nil || len(withRel.RelatedEvals) != 1 || withRel.RelatedEvals[0].ID != ev.BlockedEval {
		t.Fatalf("Info related = %+v, %v; want the blocked eval", withRel, err)
	}

	// A node that fits arrives: the job is placed, the blocked eval gives
	// way, and the task's half megabyte of output is all there.
	startNode(t, "node1", withServers(srv.RPCAddr()), withMockDriver(), withACL(time.Second))
	stub := waitAllocsStatus(t, api, id, 1, "complete")[0]
	waitFor(t, 10*time.Second, "the blocked eval to give way", func() (bool, error) {
		b, _, err := api.Evaluations().Info(ev.BlockedEval, nil)
		return err == nil && b.Status == "complete", err
	})
	if sum, _, err := api.Jobs().Summary(id, nil); err != nil || sum.Summary["g"].Queued != 0 {
		t.Fatalf("Jobs().Summary after placement = %+v, %v; want nothing queued", sum, err)
	}
	alloc, _, err := api.Allocations().Info(stub.ID, nil)
	if err != nil || alloc.NetworkStatus == nil {
		t.Fatalf("Allocations().Info NetworkStatus = %v, %v; want one (empty in host mode)", alloc.NetworkStatus, err)
	}
	fi, _, err := api.AllocFS().Stat(alloc, "alloc/logs/logger.stdout.0", nil)
	if err != nil || fi.Size != int64(input.Len()) {
		t.Fatalf("stdout is %v bytes (%v); want %d", fi, err, input.Len())
	}

	// A stopped allocation is marked for rescheduling, and for no
	// shutdown delay when asked (the client's TestAllocations_Stop).
	if _, err := api.Allocations().Stop(alloc, &nomad.QueryOptions{Params: map[string]string{"no_shutdown_delay": "true"}}); err != nil {
		t.Fatal(err)
	}
	// Not blocking on the stop's index: the allocation had finished, so
	// no later write (a replacement, the node's update) moves it on.
	stopped, _, err := api.Allocations().Info(alloc.ID, nil)
	if err != nil || !stopped.DesiredTransition.ShouldReschedule() || !stopped.DesiredTransition.ShouldIgnoreShutdownDelay() {
		t.Fatalf("DesiredTransition after stop = %+v, %v; want Reschedule and NoShutdownDelay", stopped.DesiredTransition, err)
	}
}
