package server

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"testing"
	"time"

	"tether/structs"
)

// waitRootKeys polls s until its keyring holds n keys.
func waitRootKeys(t *testing.T, s *Server, n int) []*structs.RootKey {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, _, err := s.store.RootKeys(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == n {
			return keys
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d root keys; want %d", s.cfg.Name, len(keys), n)
		}
		<-time.After(10 * time.Millisecond) // polling interval; the condition decides
	}
}

// TestKeyring_Lifecycle: a new leader makes the first key; rotation makes
// a new active key and the old one inactive; the active key and unknown
// or malformed IDs cannot be deleted; the JWKS publishes each key's
// public signing key.
func TestKeyring_Lifecycle(t *testing.T) {
	s := newACLServer(t)
	ctx := context.Background()
	first := waitRootKeys(t, s, 1)[0]
	if first.State != structs.RootKeyStateActive || first.Algorithm != structs.RootKeyAlgorithm ||
		len(first.Key) != 32 || len(first.SigningKey) != ed25519.SeedSize || !structs.IsUUID(first.KeyID) {
		t.Fatalf("first key = %+v", first.Meta())
	}
	// A second leader's first key is not made when one exists.
	if err := s.ensureRootKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.RotateRootKey(&structs.RootKey{KeyID: structs.GenerateUUID(), SigningKey: make([]byte, 32)}, true); err != nil {
		t.Fatal(err)
	}
	waitRootKeys(t, s, 1)

	meta, idx, err := s.KeyringRotate(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if meta.State != structs.RootKeyStateActive || meta.CreateIndex != 0 || idx == 0 || meta.KeyID == first.KeyID {
		t.Fatalf("rotated key = %+v (index %d)", meta, idx)
	}
	keys := waitRootKeys(t, s, 2)
	if keys[0].KeyID != first.KeyID || keys[0].State != structs.RootKeyStateInactive || keys[0].ModifyIndex != idx ||
		keys[1].KeyID != meta.KeyID || keys[1].State != structs.RootKeyStateActive {
		t.Fatalf("keys after rotation: %+v, %+v", keys[0].Meta(), keys[1].Meta())
	}

	jwks := JWKS(keys)
	if len(jwks.Keys) != 2 {
		t.Fatalf("JWKS has %d keys; want 2", len(jwks.Keys))
	}
	for i, k := range jwks.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte("signed by the keyring")
		sig := ed25519.Sign(ed25519.NewKeyFromSeed(keys[i].SigningKey), msg)
		if k.KeyID != keys[i].KeyID || k.KeyType != "OKP" || k.Curve != "Ed25519" || k.Algorithm != "EdDSA" ||
			!ed25519.Verify(ed25519.PublicKey(x), msg, sig) {
			t.Fatalf("JWK %d = %+v does not verify key %s", i, k, keys[i].KeyID)
		}
	}

	cases := []struct {
		name, id string
		code     int
		text     string
	}{
		{"active", meta.KeyID, 400, "active root key cannot be deleted"},
		{"unknown", structs.GenerateUUID(), 404, "root key not found"},
		{"malformed", "../x", 400, `Invalid key ID "../x"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.KeyringDelete(ctx, tc.id)
			wantCode(t, "delete "+tc.name, err, tc.code, tc.text)
		})
	}
	_, _, err = s.KeyringRotate(ctx, "aes128")
	wantCode(t, "rotate with an unknown algorithm", err, 400, `Invalid algorithm "aes128": the keyring supports aes256-gcm`)

	if _, err := s.KeyringDelete(ctx, first.KeyID); err != nil {
		t.Fatal(err)
	}
	if keys := waitRootKeys(t, s, 1); keys[0].KeyID != meta.KeyID {
		t.Fatalf("left %s; want %s", keys[0].KeyID, meta.KeyID)
	}
}

// TestKeyring_Replicated: a rotation asked of a follower holds the same
// key material on every server.
func TestKeyring_Replicated(t *testing.T) {
	servers := startTestCluster(t, 3, nil)
	var follower *Server
	for _, s := range servers {
		if !s.IsLeader() {
			follower = s
		}
	}
	meta, _, err := follower.KeyringRotate(context.Background(), structs.RootKeyAlgorithm)
	if err != nil {
		t.Fatal(err)
	}
	want := waitRootKeys(t, follower, 2)[1]
	if want.KeyID != meta.KeyID {
		t.Fatalf("newest key %s; want %s", want.KeyID, meta.KeyID)
	}
	for _, s := range servers {
		got := waitRootKeys(t, s, 2)[1]
		if got.KeyID != want.KeyID || string(got.SigningKey) != string(want.SigningKey) || string(got.Key) != string(want.Key) {
			t.Fatalf("%s holds another key material for %s", s.cfg.Name, want.KeyID)
		}
	}
}
