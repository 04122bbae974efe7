package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Directory names inside an allocation directory. They match Nomad's so log
// shippers, templates and scripts written for Nomad find the same paths.
const (
	sharedAllocName = "alloc"   // <alloc>/alloc, shared by all tasks
	sharedDataName  = "data"    // <alloc>/alloc/data
	sharedLogsName  = "logs"    // <alloc>/alloc/logs
	tmpDirName      = "tmp"     // <alloc>/alloc/tmp and <alloc>/<task>/tmp
	taskLocalName   = "local"   // <alloc>/<task>/local
	taskSecretsName = "secrets" // <alloc>/<task>/secrets
)

// Permissions of the directories Build makes. They are applied with chmod
// after creation so the agent's umask does not change them.
const (
	allocDirPerm   os.FileMode = 0o755
	tmpDirPerm     os.FileMode = 0o777 | os.ModeSticky
	secretsDirPerm os.FileMode = 0o711
)

// errInvalidName is wrapped by every "bad allocation ID or task name" error.
var errInvalidName = errors.New("invalid name")

// AllocDir is one allocation's directory, laid out like Nomad's:
//
//	<root>/<allocID>/alloc/{data,logs,tmp}
//	<root>/<allocID>/<task>/{local,secrets,tmp}
type AllocDir struct {
	// AllocID is the allocation's ID, the last element of Dir.
	AllocID string
	// Dir is <root>/<AllocID>.
	Dir string
}

// NewAllocDir returns the directory of allocation allocID under root. Nothing
// is created until Build.
func NewAllocDir(root, allocID string) *AllocDir {
	return &AllocDir{AllocID: allocID, Dir: filepath.Join(root, allocID)}
}

// SharedDir returns <Dir>/alloc, the directory shared by all tasks.
func (d *AllocDir) SharedDir() string { return filepath.Join(d.Dir, sharedAllocName) }

// LogDir returns <Dir>/alloc/logs, where task stdout and stderr files go.
func (d *AllocDir) LogDir() string { return filepath.Join(d.Dir, sharedAllocName, sharedLogsName) }

// TaskDir returns <Dir>/<task>. The name is not checked; Build refuses
// invalid ones.
func (d *AllocDir) TaskDir(task string) string { return filepath.Join(d.Dir, task) }

// Build creates the allocation directory, the shared alloc directory and one
// directory per task. It is idempotent: existing directories are kept (with
// their contents) and their permissions reset. Every name is checked before
// anything is created.
func (d *AllocDir) Build(tasks []string) error {
	if err := validatePathName(d.AllocID); err != nil {
		return fmt.Errorf("invalid allocation ID: %w", err)
	}
	for _, t := range tasks {
		if err := validateTaskName(t); err != nil {
			return err
		}
	}

	dirs := []dirSpec{
		{d.Dir, allocDirPerm},
		{d.SharedDir(), allocDirPerm},
		{filepath.Join(d.SharedDir(), sharedDataName), allocDirPerm},
		{d.LogDir(), allocDirPerm},
		{filepath.Join(d.SharedDir(), tmpDirName), tmpDirPerm},
	}
	for _, t := range tasks {
		td := d.TaskDir(t)
		dirs = append(dirs,
			dirSpec{td, allocDirPerm},
			dirSpec{filepath.Join(td, taskLocalName), allocDirPerm},
			dirSpec{filepath.Join(td, taskSecretsName), secretsDirPerm},
			dirSpec{filepath.Join(td, tmpDirName), tmpDirPerm},
		)
	}
	for _, dir := range dirs {
		if err := makeDir(dir.path, dir.perm); err != nil {
			return err
		}
	}
	return nil
}

// Destroy removes the allocation directory and everything in it. Removing a
// directory that does not exist is not an error, so it is safe to call
// twice.
func (d *AllocDir) Destroy() error {
	// Refuse to RemoveAll anything but <root>/<allocID>: an empty or ".."
	// ID would otherwise remove root or its parent.
	if err := validatePathName(d.AllocID); err != nil {
		return fmt.Errorf("invalid allocation ID: %w", err)
	}
	if filepath.Base(d.Dir) != d.AllocID {
		return fmt.Errorf("allocation dir %q does not end in allocation ID %q: %w", d.Dir, d.AllocID, errInvalidName)
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		return fmt.Errorf("failed to remove allocation dir: %w", err)
	}
	return nil
}

// dirSpec is one directory Build makes and its permissions.
type dirSpec struct {
	path string
	perm os.FileMode
}

// makeDir creates dir (and missing parents) and sets its permissions to
// exactly perm. An existing non-directory is an error.
func makeDir(dir string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm.Perm()); err != nil {
		return fmt.Errorf("failed to create dir %q: %w", dir, err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("failed to chmod dir %q: %w", dir, err)
	}
	return nil
}

// validateTaskName checks that a task name is usable as one path element of
// the allocation directory and does not collide with the shared alloc dir.
func validateTaskName(name string) error {
	if err := validatePathName(name); err != nil {
		return fmt.Errorf("invalid task name: %w", err)
	}
	if name == sharedAllocName {
		return fmt.Errorf("invalid task name %q: reserved for the shared alloc dir: %w", name, errInvalidName)
	}
	return nil
}

// validatePathName checks that name is exactly one non-special path element.
func validatePathName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name: %w", errInvalidName)
	case name == "." || name == "..":
		return fmt.Errorf("%q: %w", name, errInvalidName)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%q contains a path separator or NUL: %w", name, errInvalidName)
	}
	return nil
}
