// Package atomicfile writes small state files so that a crash at any
// moment leaves either the old contents or the new, never a torn file:
// the bytes go to a temp file beside the target, which is synced, renamed
// over the target, and the directory is synced so the rename itself
// survives a power loss.
//
// renameio (github.com/google/renameio/v2) does the first three steps but
// leaves the directory unsynced, which is the step that makes the rename
// durable; this package is the few lines that add it.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tempSuffix marks the temp files WriteFile makes: "."+base+tempSuffix+random.
const tempSuffix = ".tmp"

// WriteFile writes data to path atomically with the given mode. On error
// the target is unchanged and no temp file is left.
func WriteFile(path string, data []byte, mode os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempSuffix+"*")
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", base, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", base, err)
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", base, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", base, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", base, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s: %w", base, err)
	}
	if err = SyncDir(dir); err != nil {
		return fmt.Errorf("syncing the directory of %s: %w", base, err)
	}
	return nil
}

// SyncDir fsyncs the directory dir, making the entries created, renamed
// or removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// RemoveTemps removes the temp files a WriteFile of path left when the
// process died between creating and renaming them. Call it at start, before
// any WriteFile of path.
func RemoveTemps(path string) error {
	dir, base := filepath.Split(path)
	prefix := "." + base + tempSuffix
	return removeTemps(dir, func(name string) bool { return strings.HasPrefix(name, prefix) })
}

// RemoveTempsIn removes the temp files any WriteFile into dir left: for a
// directory of many state files written with WriteFile, such as one per
// allocation.
func RemoveTempsIn(dir string) error {
	return removeTemps(dir, isTemp)
}

// isTemp reports whether name is one WriteFile's temp files take:
// "."+base+".tmp"+digits.
func isTemp(name string) bool {
	i := strings.LastIndex(name, tempSuffix)
	return i > 1 && name[0] == '.' && strings.Trim(name[i+len(tempSuffix):], "0123456789") == ""
}

func removeTemps(dir string, match func(name string) bool) error {
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s for temp files: %w", filepath.Base(dir), err)
	}
	var errs []error
	for _, e := range ents {
		if e.Type().IsRegular() && match(e.Name()) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
