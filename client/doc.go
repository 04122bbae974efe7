// Package client is Tether's node agent. It dials out to the servers (nodes
// sit behind NAT; servers never dial them), registers the node, heartbeats,
// and serves the client methods the servers call back down that session:
// host stats, dynamic node metadata, and later allocations and their files.
// The same methods answer the node's own HTTP API in process.
package client
