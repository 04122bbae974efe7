// Package client is Tether's node agent. It dials out to the servers (nodes
// sit behind NAT; servers never dial them), registers the node, heartbeats,
// and serves the client methods the servers call back down that session:
// host stats, dynamic node metadata, allocations and their files. The same
// methods answer the node's own HTTP API in process. A Fleet runs many
// nodes in one process on shared sources (tether fleet).
package client
