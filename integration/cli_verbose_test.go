package integration

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"tether/agent"
)

// section is the block of out under the line title, up to the next
// blank line.
func section(out, title string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if l != title {
			continue
		}
		var b strings.Builder
		for _, l := range lines[i+1:] {
			if strings.TrimSpace(l) == "" {
				break
			}
			b.WriteString(l + "\n")
		}
		return b.String()
	}
	return ""
}

// checkTable checks the columns of the table under header in out and
// returns its rows, each with as many cells as columns.
func checkTable(t *testing.T, out string, cols ...string) [][]string {
	t.Helper()
	if got := tableColumns(out, cols[0]); strings.Join(got, "|") != strings.Join(cols, "|") {
		t.Fatalf("columns %q, want %q\n%s", got, cols, out)
	}
	rows := tableRows(out, cols[0])
	for _, r := range rows {
		if len(r) != len(cols) {
			t.Fatalf("row %q has %d cells, want %d\n%s", r, len(r), len(cols), out)
		}
	}
	return rows
}

func mustRFC3339(t *testing.T, what, s string) {
	t.Helper()
	if _, err := time.Parse(time.RFC3339, s); err != nil {
		t.Fatalf("%s %q is not RFC 3339: %v", what, s, err)
	}
}

var mhz = regexp.MustCompile(`^\d+/\d+ MHz$`)

// TestCLI_VerboseAndStats checks what -verbose and -stats add to node,
// alloc and job output (full IDs, absolute times, Nomad's extra columns
// and sections), job files that are neither JSON nor HCL, and shell
// completion of commands, flags and IDs in bash and zsh.
func TestCLI_VerboseAndStats(t *testing.T) {
	srv := startServerNode(t, "server1", withMockDriver())
	nodeID := srv.Client().NodeID()
	env := map[string]string{"NOMAD_ADDR": srv.URL()}
	cli := func(args ...string) cliResult { t.Helper(); return runTether(t, env, "", args...).ok(t, args...) }
	dir := t.TempDir()
	cli("job", "run", "-detach", writeFile(t, dir, "web.json", cliJobJSON))
	alloc := waitAllocsStatus(t, srv.API(t), "web", 1, "running")[0]

	// node status: the list, one node, -verbose, -stats.
	rows := checkTable(t, cli("node", "status", "-verbose").stdout,
		"ID", "Node Pool", "DC", "Name", "Class", "Address", "Version", "Drain", "Eligibility", "Status")
	if len(rows) != 1 || rows[0][0] != nodeID || rows[0][5] != "127.0.0.1" || rows[0][6] != agent.NomadVersion {
		t.Fatalf("node status -verbose: %q", rows)
	}
	short := cli("node", "status", nodeID[:8]).stdout
	for _, title := range []string{"Allocated Resources", "Allocation Resource Utilization", "Host Resource Utilization"} {
		cols := []string{"CPU", "Memory", "Disk"}
		if title == "Allocation Resource Utilization" {
			cols = cols[:2]
		}
		rows := checkTable(t, section(short, title), cols...)
		if len(rows) != 1 || !mhz.MatchString(rows[0][0]) {
			t.Fatalf("%s: %q\n%s", title, rows, short)
		}
	}
	if rows := checkTable(t, section(short, "Allocations"), "ID", "Node ID", "Task Group", "Version", "Desired", "Status", "Created", "Modified"); len(rows) != 1 || rows[0][0] != alloc.ID[:8] {
		t.Fatalf("node allocations: %q", rows)
	}
	for _, gone := range []string{"\nDrivers\n", "\nAttributes\n", "\nCPU Stats\n"} {
		if strings.Contains(short, gone) {
			t.Fatalf("node status without -verbose or -stats has %q:\n%s", gone, short)
		}
	}

	verbose := cli("node", "status", "-verbose", nodeID[:8]).stdout
	if rows := checkTable(t, section(verbose, "Drivers"), "Driver", "Detected", "Healthy", "Message", "Time"); len(rows) == 0 {
		t.Fatalf("no drivers:\n%s", verbose)
	}
	checkTable(t, section(verbose, "Node Events"), "Time", "Subsystem", "Message", "Details")
	rows = checkTable(t, section(verbose, "Allocations"),
		"ID", "Eval ID", "Node ID", "Task Group", "Version", "Desired", "Status", "Created", "Modified")
	if len(rows) != 1 || rows[0][0] != alloc.ID || rows[0][1] != alloc.EvalID || rows[0][2] != nodeID {
		t.Fatalf("node status -verbose allocations: %q", rows)
	}
	mustRFC3339(t, "Created", rows[0][7])
	if got := kvValue(section(verbose, "Attributes"), "nomad.version"); got != agent.NomadVersion {
		t.Fatalf("attribute nomad.version = %q\n%s", got, verbose)
	}
	if strings.Contains(verbose, "Driver Status") {
		t.Fatalf("-verbose keeps the Driver Status line:\n%s", verbose)
	}

	stats := cli("node", "status", "-stats", nodeID).stdout
	cpu := section(stats, "CPU Stats")
	if kvValue(cpu, "CPU") == "" || !strings.HasSuffix(kvValue(cpu, "Idle"), "%") {
		t.Fatalf("CPU Stats:\n%s", stats)
	}
	for title, keys := range map[string][]string{
		"Memory Stats": {"Total", "Available", "Used", "Free"},
		"Disk Stats":   {"Device", "MountPoint", "Size", "Used", "Available", "Used Percent", "Inodes Percent"},
	} {
		s := section(stats, title)
		for _, k := range keys {
			if kvValue(s, k) == "" {
				t.Fatalf("%s has no %s:\n%s", title, k, stats)
			}
		}
	}

	// alloc status -verbose: full IDs, absolute times.
	as := cli("alloc", "status", "-verbose", alloc.ID[:8]).stdout
	for key, want := range map[string]string{"ID": alloc.ID, "Eval ID": alloc.EvalID, "Node ID": nodeID} {
		if got := kvValue(as, key); got != want {
			t.Fatalf("alloc status -verbose %s = %q, want %q\n%s", key, got, want, as)
		}
	}
	mustRFC3339(t, "Created", kvValue(as, "Created"))
	if got := kvValue(cli("alloc", "status", alloc.ID[:8]).stdout, "Created"); !strings.HasSuffix(got, " ago") {
		t.Fatalf("alloc status Created = %q, want a relative time", got)
	}

	// job status and job allocs -verbose.
	for _, args := range [][]string{{"job", "status", "-verbose", "web"}, {"job", "allocs", "-verbose", "web"}} {
		out := cli(args...).stdout
		if args[1] == "status" {
			out = section(out, "Allocations")
		}
		rows := checkTable(t, out, "ID", "Eval ID", "Node ID", "Node Name", "Task Group", "Version", "Desired", "Status", "Created", "Modified")
		if len(rows) != 1 || rows[0][0] != alloc.ID || rows[0][2] != nodeID {
			t.Fatalf("%v: %q", args, rows)
		}
		mustRFC3339(t, "Created", rows[0][8])
	}
	var node nomad.Node
	decodeJSON(t, cli("node", "status", "-verbose", "-json", nodeID[:8]).stdout, &node)
	if node.ID != nodeID {
		t.Fatalf("node status -json: %s", node.ID)
	}

	// Job files that are neither JSON nor HCL: one error with a position.
	for name, body := range map[string]string{
		"bin.hcl":   "job \"x\" {\x00\x01\x02}",
		"empty.hcl": "\n  \n",
		"yaml.hcl":  "job:\n  name: x\n",
	} {
		r := runTether(t, env, "", "job", "run", writeFile(t, dir, name, body))
		want := map[string]string{
			"bin.hcl":   name + ": line 1, column 10: not JSON or HCL: binary data",
			"empty.hcl": name + ": the file is empty",
			"yaml.hcl":  name + ":1,",
		}[name]
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Fatalf("job run %s: exit %d, want 1 and %q\n%s", name, r.code, want, r.stderr)
		}
	}

	// Completion: commands, flags and IDs from the API.
	complete := func(line string) []string {
		t.Helper()
		r := runTether(t, map[string]string{"NOMAD_ADDR": srv.URL(), "COMP_LINE": line,
			"COMP_POINT": strconv.Itoa(len(line))}, "").ok(t)
		return strings.Fields(r.stdout)
	}
	for _, tc := range []struct{ line, want string }{
		{"tether mon", "monitor"},
		{"tether monitor -log-", "-log-level"},
		{"tether monitor -log-level ", "DEBUG"},
		{"tether monitor -node-id " + nodeID[:4], nodeID},
		{"tether alloc logs -std", "-stderr"},
		{"tether alloc status " + alloc.ID[:4], alloc.ID},
		{"tether alloc fs -stat " + alloc.ID[:2], alloc.ID},
		{"tether job status w", "web"},
		{"tether status -ver", "-verbose"},
		{"tether node meta read -node-id " + nodeID[:2], nodeID},
	} {
		if got := complete(tc.line); !contains(got, tc.want) {
			t.Errorf("completing %q: %q, want %q", tc.line, got, tc.want)
		}
	}
	loadCompletion(t, cli("completion", "bash").stdout, cli("completion", "zsh").stdout)
}

// loadCompletion checks that the scripts parse and, sourced in a shell
// with no configuration, register tether's completion. zsh is checked
// where it is installed.
func loadCompletion(t *testing.T, bash, zsh string) {
	t.Helper()
	dir := t.TempDir()
	bashFile := writeFile(t, dir, "tether.bash", bash)
	zshFile := writeFile(t, dir, "tether.zsh", zsh)
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = []string{"HOME=" + dir, "ZDOTDIR=" + dir, "PATH=" + os.Getenv("PATH")}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, b)
		}
		return string(b)
	}
	run("bash", "-n", bashFile)
	if got := run("bash", "--norc", "--noprofile", "-c", "source "+bashFile+" && complete -p tether"); !strings.Contains(got, "-C ") {
		t.Fatalf("bash: tether's completion not registered: %q", got)
	}
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Log("zsh not installed: its script is not loaded")
		return
	}
	run("zsh", "-n", zshFile)
	got := run("zsh", "-f", "-c", "source "+zshFile+" && print -r -- ${_comps[tether]}")
	if !strings.HasPrefix(got, "_bash_complete") || !strings.Contains(got, "-C") {
		t.Fatalf("zsh: tether's completion not registered: %q", got)
	}
}
