package agent

import (
	"strings"
	"testing"
)

func TestParseJobHCL(t *testing.T) {
	good := `
job "web" {
  datacenters = ["dc1", "dc2"]
  type        = "service"
  priority    = 70
  meta { owner = "ops" }
  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }
  group "g" {
    count = 3
    restart {
      attempts = 2
      interval = "5m"
      mode     = "fail"
    }
    ephemeral_disk { size = 300 }
    task "t" {
      driver       = "raw_exec"
      kill_timeout = "10s"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo ${NOMAD_ALLOC_ID} on ${node.unique.name}", "${meta.rack}"]
        port_map {
          http = 8080
        }
      }
      env { A = "1" }
      resources {
        cpu    = 100
        memory = 64
      }
      logs {
        max_files     = 2
        max_file_size = 5
      }
    }
  }
}`
	job, diags := parseJobHCL([]byte(good), "input.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	tg := job.TaskGroups[0]
	task := tg.Tasks[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"id", *job.ID, "web"},
		{"datacenters", strings.Join(job.Datacenters, ","), "dc1,dc2"},
		{"priority", *job.Priority, 70},
		{"meta", job.Meta["owner"], "ops"},
		{"constraint", job.Constraints[0].LTarget + " " + job.Constraints[0].Operand + " " + job.Constraints[0].RTarget, "${attr.kernel.name} = linux"},
		{"count", *tg.Count, 3},
		{"restart", tg.RestartPolicy.Interval.String() + " " + *tg.RestartPolicy.Mode, "5m0s fail"},
		{"disk", *tg.EphemeralDisk.SizeMB, 300},
		{"driver", task.Driver, "raw_exec"},
		{"kill timeout", task.KillTimeout.String(), "10s"},
		{"config command", task.Config["command"], "/bin/sh"},
		{"config args", len(task.Config["args"].([]any)), 3},
		{"runtime interpolation", task.Config["args"].([]any)[1], "echo ${NOMAD_ALLOC_ID} on ${node.unique.name}"},
		{"runtime meta", task.Config["args"].([]any)[2], "${meta.rack}"},
		{"config block", task.Config["port_map"].([]any)[0].(map[string]any)["http"], float64(8080)},
		{"env", task.Env["A"], "1"},
		{"resources", *task.Resources.CPU + *task.Resources.MemoryMB, 164},
		{"logs", *task.LogConfig.MaxFiles, 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	bad := []struct {
		name, src, want string
	}{
		{"syntax", "job \"x\" {\n  group \"g\" \n", "input.hcl:2,"},
		{"unknown attribute", "job \"x\" {\n  group \"g\" {\n    bogus = 1\n  }\n}\n", `input.hcl:3,5-10: Unsupported argument; An argument named "bogus"`},
		{"unknown block", "job \"x\" {\n  network {}\n}\n", `input.hcl:2,3-10: Unsupported block type`},
		{"wrong type", "job \"x\" {\n  priority = \"high\"\n}\n", "input.hcl:2,14-20"},
		{"fraction", "job \"x\" {\n  priority = 1.5\n}\n", "priority must be a whole number"},
		{"bad duration", "job \"x\" {\n  group \"g\" {\n    shutdown_delay = \"soon\"\n  }\n}\n", "input.hcl:3,22-28: Invalid duration"},
		{"no job", "x = 1\n", "Unsupported argument"},
		{"two jobs", "job \"a\" {}\njob \"b\" {}\n", "Exactly one job block is required"},
		{"variables", "job \"x\" {\n  type = var.t\n}\n", "input.hcl:2,10-13: Variables not allowed"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := parseJobHCL([]byte(tc.src), "input.hcl")
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			if got := diagText(diags); !strings.Contains(got, tc.want) {
				t.Fatalf("error %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

// TestDiagText: parse errors come in file order, at most maxDiagLines of
// them, however many a file that is not HCL gives.
func TestDiagText(t *testing.T) {
	binary := make([]byte, 200)
	for i := range binary {
		binary[i] = byte(i%7) + 1 // control bytes: one error each
	}
	cases := []struct {
		name  string
		src   string
		lines int
		first string
	}{
		{"binary", string(binary), maxDiagLines + 1, "input.hcl:1,1-2:"},
		{"two errors out of order in the schema walk", "job \"x\" {\n  group \"g\" {\n    bogus = 1\n  }\n  nope = 2\n}\n", 2, "input.hcl:3,5-10:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := parseJobHCL([]byte(tc.src), "input.hcl")
			if !diags.HasErrors() {
				t.Fatal("no errors")
			}
			text := diagText(diags)
			lines := strings.Split(text, "\n")
			if len(lines) != tc.lines || !strings.HasPrefix(lines[0], tc.first) {
				t.Fatalf("got %d lines starting %q; want %d starting %q:\n%s", len(lines), lines[0], tc.lines, tc.first, text)
			}
			if tc.lines > maxDiagLines && !strings.HasPrefix(lines[maxDiagLines], "... and ") {
				t.Fatalf("no cap line:\n%s", text)
			}
		})
	}
}
