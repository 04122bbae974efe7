package client

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"tether/structs"
)

// identity is the node's ID and secret, created once and kept in the state
// dir so that a restarted agent is the same node.
type identity struct {
	NodeID   string
	SecretID string
}

const (
	nodeIDFile   = "node-id"
	secretIDFile = "secret-id"
)

// loadOrCreateIdentity reads the node ID and secret from dir, creating
// them on first start.
func loadOrCreateIdentity(dir string) (identity, error) {
	var id identity
	var err error
	if id.NodeID, err = loadOrCreateUUID(filepath.Join(dir, nodeIDFile), 0o644); err != nil {
		return id, err
	}
	if id.SecretID, err = loadOrCreateUUID(filepath.Join(dir, secretIDFile), 0o600); err != nil {
		return id, err
	}
	return id, nil
}

func loadOrCreateUUID(path string, mode os.FileMode) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		v := string(bytes.TrimSpace(b))
		if !structs.IsUUID(v) {
			return "", fmt.Errorf("%s does not hold a UUID", filepath.Base(path))
		}
		return v, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("reading %s: %w", filepath.Base(path), err)
	}
	v := structs.GenerateUUID()
	if err := writeFileAtomic(path, []byte(v+"\n"), mode); err != nil {
		return "", err
	}
	return v, nil
}

// writeFileAtomic writes data to path through a temp file and a rename, so
// a crash never leaves a half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("creating temp file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s: %w", filepath.Base(path), err)
	}
	return nil
}
