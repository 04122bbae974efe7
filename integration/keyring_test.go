package integration

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestKeyring_GoClient drives the keyring as the official client's own
// test does (TestKeyring_CRUD), then checks what the client and Nomad's
// test harness read besides: the JWKS, public, through a server and a
// node-only agent, and the keyring itself refused without a management
// token.
func TestKeyring_GoClient(t *testing.T) {
	srv := startACLServer(t, "server1", time.Second)
	mgmt := apiWithToken(t, srv, bootstrap(t, srv))
	node := startNode(t, "node1", withServers(srv.RPCAddr()))
	kr := mgmt.Keyring()

	keys, qm, err := kr.List(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].State != nomad.RootKeyStateActive || keys[0].Algorithm != nomad.EncryptionAlgorithmAES256GCM || qm.LastIndex == 0 {
		t.Fatalf("bootstrap keyring = %+v (index %d); want one active aes256-gcm key", keys, qm.LastIndex)
	}
	oldID := keys[0].KeyID
	key, wm, err := kr.Rotate(nil, nil)
	if err != nil || key == nil || wm.LastIndex == 0 || key.CreateIndex != 0 || key.State != nomad.RootKeyStateActive {
		t.Fatalf("rotate = %+v, %+v, %v; want an active key without indexes, as Nomad answers", key, wm, err)
	}
	keys, _, err = kr.List(&nomad.QueryOptions{WaitIndex: key.CreateIndex})
	if err != nil || len(keys) != 2 {
		t.Fatalf("after rotation: %+v, %v; want 2 keys", keys, err)
	}
	_, err = kr.Delete(&nomad.KeyringDeleteOptions{KeyID: key.KeyID}, nil)
	wantStatus(t, "deleting the active key", err, 400, "active root key cannot be deleted")
	if _, err := kr.Delete(&nomad.KeyringDeleteOptions{KeyID: oldID, Force: true}, nil); err != nil {
		t.Fatal(err)
	}
	keys, _, err = kr.List(&nomad.QueryOptions{WaitIndex: key.CreateIndex})
	if err != nil || len(keys) != 1 || keys[0].KeyID != key.KeyID || keys[0].State != nomad.RootKeyStateActive {
		t.Fatalf("after delete: %+v, %v; want the rotated key, active", keys, err)
	}

	anon := srv.API(t)
	_, _, err = anon.Keyring().List(nil)
	wantStatus(t, "keyring without a token", err, 403, "Permission denied")
	_, _, err = anon.Keyring().Rotate(nil, nil)
	wantStatus(t, "rotate without a token", err, 403, "Permission denied")
	_, _, err = mgmt.Keyring().Rotate(&nomad.KeyringRotateOptions{Algorithm: "aes128"}, nil)
	wantStatus(t, "rotate with an unknown algorithm", err, 400, `Invalid algorithm "aes128"`)

	for _, a := range []*testAgent{srv, node} {
		code, body, _ := do(t, http.MethodGet, a.URL()+"/.well-known/jwks.json", nil)
		var jwks struct {
			Keys []struct{ Kid, Kty, Crv, X, Use, Alg string }
		}
		if err := json.Unmarshal([]byte(body), &jwks); code != http.StatusOK || err != nil {
			t.Fatalf("%s: jwks = %d %q (%v)", a.cfg.Name, code, body, err)
		}
		if len(jwks.Keys) != 1 || jwks.Keys[0].Kid != key.KeyID || jwks.Keys[0].Kty != "OKP" || jwks.Keys[0].X == "" {
			t.Fatalf("%s: jwks = %s; want the one key %s", a.cfg.Name, body, key.KeyID)
		}
	}
}
