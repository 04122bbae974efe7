// Package structs holds the wire types shared by the HTTP API, the RPC
// transport and the server state: nodes, host and allocation statistics,
// node metadata, request and response envelopes, and typed errors that
// carry an HTTP status code across RPC hops.
//
// Field names follow Nomad's JSON so that the official Go client
// (github.com/hashicorp/nomad/api) decodes them unchanged. The messages of
// a forwarded small call encode themselves by hand (codec_fast.go). This
// package imports no other package of this module but
// tether/internal/msgpack, the primitives of those encodings.
package structs
