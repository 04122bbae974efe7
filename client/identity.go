package client

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"tether/internal/atomicfile"
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
	for _, f := range []string{nodeIDFile, secretIDFile} {
		if err := atomicfile.RemoveTemps(filepath.Join(dir, f)); err != nil {
			return id, err
		}
	}
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
	if err := atomicfile.WriteFile(path, []byte(v+"\n"), mode); err != nil {
		return "", err
	}
	return v, nil
}
