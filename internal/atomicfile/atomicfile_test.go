package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile_ReplacesAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "meta.json")
	for _, tc := range []struct {
		data string
		mode os.FileMode
	}{
		{`{"a":"1"}`, 0o600},
		{`{"a":"2","b":"3"}`, 0o644},
		{``, 0o600},
	} {
		if err := WriteFile(p, []byte(tc.data), tc.mode); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != tc.data {
			t.Fatalf("read %q, %v; want %q", b, err, tc.data)
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != tc.mode {
			t.Fatalf("mode %v, %v; want %v", fi.Mode().Perm(), err, tc.mode)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d entries, want only the target", len(ents))
	}
}

func TestWriteFile_ErrorLeavesTarget(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "missing", "x")
	if err := WriteFile(p, []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "node-id")
	keep := []string{"node-id", "secret-id", ".secret-id.tmp123", "node-id.tmp1"}
	drop := []string{".node-id.tmp123", ".node-id.tmp"}
	for _, n := range append(append([]string{}, keep...), drop...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTemps(p); err != nil {
		t.Fatal(err)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
	for _, n := range drop {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s kept", n)
		}
	}
	if err := RemoveTemps(filepath.Join(dir, "gone", "x")); err != nil {
		t.Errorf("missing dir: %v", err)
	}
}

func TestRemoveTempsIn(t *testing.T) {
	dir := t.TempDir()
	keep := []string{"a.json", ".a.json", ".a.json.tmpx", "a.json.tmp1", ".tmp1"}
	drop := []string{".a.json.tmp123", ".b.json.tmp", ".c.tmp9"}
	for _, n := range append(append([]string{}, keep...), drop...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTempsIn(dir); err != nil {
		t.Fatal(err)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
	for _, n := range drop {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s kept", n)
		}
	}
}
