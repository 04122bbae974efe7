package structs

// Root key states, as Nomad names them (api.RootKeyState).
const (
	RootKeyStateActive   = "active"
	RootKeyStateInactive = "inactive"
)

// RootKeyAlgorithm is the encryption algorithm of every root key, as
// Nomad's keyring reports it (api.EncryptionAlgorithmAES256GCM).
const RootKeyAlgorithm = "aes256-gcm"

// RootKey is one key of the cluster's keyring, as Nomad's: an AES-256 key
// and, beside it, the Ed25519 key pair whose public half the servers
// publish at /.well-known/jwks.json. Exactly one key is active at a time;
// rotation makes a new one active and the old one inactive (still
// published, so that what it signed can be checked) until it is deleted.
// The key material never leaves the servers: the API serves RootKeyMeta.
type RootKey struct {
	KeyID       string // UUID
	Algorithm   string
	CreateTime  int64 // unix nanoseconds
	CreateIndex uint64
	ModifyIndex uint64
	State       string

	Key        []byte // 32 bytes, AES-256
	SigningKey []byte // 32 bytes, the Ed25519 seed
}

// Meta is what the API shows of k (api.RootKeyMeta).
func (k *RootKey) Meta() *RootKeyMeta {
	return &RootKeyMeta{
		KeyID: k.KeyID, Algorithm: k.Algorithm, CreateTime: k.CreateTime,
		CreateIndex: k.CreateIndex, ModifyIndex: k.ModifyIndex, State: k.State,
	}
}

// Copy returns a copy of k that shares no memory with it.
func (k *RootKey) Copy() *RootKey {
	if k == nil {
		return nil
	}
	c := *k
	c.Key = append([]byte(nil), k.Key...)
	c.SigningKey = append([]byte(nil), k.SigningKey...)
	return &c
}

// RootKeyMeta is a root key as GET /v1/operator/keyring/keys lists it.
type RootKeyMeta struct {
	KeyID       string
	Algorithm   string
	CreateTime  int64
	CreateIndex uint64
	ModifyIndex uint64
	State       string
	PublishTime int64
}

// KeyringRotateResponse is the answer of PUT /v1/operator/keyring/rotate.
type KeyringRotateResponse struct {
	Key *RootKeyMeta
}

// JWKS is the JSON Web Key Set served at /.well-known/jwks.json (RFC
// 7517): the public signing key of every root key.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one public key of a JWKS, an Ed25519 key (RFC 8037).
type JWK struct {
	KeyType   string `json:"kty"`
	Curve     string `json:"crv"`
	X         string `json:"x"`
	KeyID     string `json:"kid"`
	Use       string `json:"use"`
	Algorithm string `json:"alg"`
}
