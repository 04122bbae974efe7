package client

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestAllocDirBuildLayout(t *testing.T) {
	root := t.TempDir()
	d := NewAllocDir(root, "8a1c2b3d")
	if got, want := d.Dir, filepath.Join(root, "8a1c2b3d"); got != want {
		t.Fatalf("Dir = %q; want %q", got, want)
	}
	if err := d.Build([]string{"web", "db"}); err != nil {
		t.Fatalf("Build: %v", err)
	}

	paths := []struct {
		name string
		got  string
		want string
	}{
		{"SharedDir", d.SharedDir(), filepath.Join(d.Dir, "alloc")},
		{"LogDir", d.LogDir(), filepath.Join(d.Dir, "alloc", "logs")},
		{"TaskDir", d.TaskDir("web"), filepath.Join(d.Dir, "web")},
	}
	for _, p := range paths {
		if p.got != p.want {
			t.Errorf("%s = %q; want %q", p.name, p.got, p.want)
		}
	}

	dirs := []struct {
		rel  string
		perm os.FileMode
	}{
		{".", 0o755},
		{"alloc", 0o755},
		{"alloc/data", 0o755},
		{"alloc/logs", 0o755},
		{"alloc/tmp", 0o777 | os.ModeSticky},
		{"web", 0o755},
		{"web/local", 0o755},
		{"web/secrets", 0o711},
		{"web/tmp", 0o777 | os.ModeSticky},
		{"db", 0o755},
		{"db/local", 0o755},
		{"db/secrets", 0o711},
		{"db/tmp", 0o777 | os.ModeSticky},
	}
	check := func() {
		t.Helper()
		for _, dir := range dirs {
			fi, err := os.Stat(filepath.Join(d.Dir, dir.rel))
			if err != nil {
				t.Errorf("stat %s: %v", dir.rel, err)
				continue
			}
			if !fi.IsDir() {
				t.Errorf("%s is not a directory", dir.rel)
			}
			if got, want := fi.Mode()&(os.ModePerm|os.ModeSticky), dir.perm; got != want {
				t.Errorf("mode of %s = %v; want %v", dir.rel, got, want)
			}
		}
	}
	check()

	// Build is idempotent: contents survive and permissions are reset.
	marker := filepath.Join(d.TaskDir("web"), "local", "keep")
	if err := os.WriteFile(marker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.LogDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.Build([]string{"web", "db"}); err != nil {
		t.Fatalf("second Build: %v", err)
	}
	check()
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("file in task dir lost by second Build: %v", err)
	}
}

func TestAllocDirInvalidNames(t *testing.T) {
	cases := []struct {
		name    string
		allocID string
		tasks   []string
	}{
		{"empty task", "a1", []string{""}},
		{"dot task", "a1", []string{"."}},
		{"dotdot task", "a1", []string{".."}},
		{"slash task", "a1", []string{"a/b"}},
		{"traversal task", "a1", []string{"../../etc"}},
		{"backslash task", "a1", []string{`a\b`}},
		{"nul task", "a1", []string{"a\x00b"}},
		{"reserved task", "a1", []string{"alloc"}},
		{"one bad among good", "a1", []string{"web", "../x"}},
		{"empty alloc ID", "", []string{"web"}},
		{"dotdot alloc ID", "..", []string{"web"}},
		{"slash alloc ID", "a/b", []string{"web"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			d := NewAllocDir(root, tc.allocID)
			err := d.Build(tc.tasks)
			if !errors.Is(err, errInvalidName) {
				t.Fatalf("Build(%q) error = %v; want errInvalidName", tc.tasks, err)
			}
			entries, err := os.ReadDir(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("Build created %d entries under root; want 0", len(entries))
			}
		})
	}
}

func TestAllocDirDestroy(t *testing.T) {
	root := t.TempDir()
	d := NewAllocDir(root, "a1")
	if err := d.Build([]string{"web"}); err != nil {
		t.Fatal(err)
	}
	// Files the agent or task made, including in secrets, go too.
	if err := os.WriteFile(filepath.Join(d.TaskDir("web"), "secrets", "token"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := os.Stat(d.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat after Destroy: err = %v; want ErrNotExist", err)
	}
	if err := d.Destroy(); err != nil {
		t.Errorf("second Destroy: %v; want nil", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("root gone after Destroy: %v", err)
	}
}

func TestAllocDirDestroyRefusesBadDir(t *testing.T) {
	root := t.TempDir()
	cases := []struct {
		name string
		d    *AllocDir
	}{
		{"empty ID", &AllocDir{AllocID: "", Dir: root}},
		{"dotdot ID", NewAllocDir(root, "..")},
		{"Dir not ending in ID", &AllocDir{AllocID: "a1", Dir: root}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.d.Destroy(); !errors.Is(err, errInvalidName) {
				t.Errorf("Destroy error = %v; want errInvalidName", err)
			}
			if _, err := os.Stat(root); err != nil {
				t.Errorf("root removed: %v", err)
			}
		})
	}
}
