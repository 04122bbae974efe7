// Package server is Tether's server agent: it registers node agents that
// dialed in, keeps the session each node opened, marks silent nodes down,
// and forwards client calls (stats, metadata, ...) down the node's own
// session. Servers never dial nodes.
//
// Servers form a cluster. State lives in go-memdb and every change is a
// raft log entry (fsm.go) replicated with hashicorp/raft over the RPC port
// (raft_transport.go), stored with raft-wal and file snapshots in the data
// dir (raft.go). Servers find each other with memberlist on the serf port
// and bootstrap once bootstrap_expect of them are known (membership.go);
// the leader schedules, keeps heartbeat TTLs and adds voters (leader.go).
// A call for a node whose session another server holds is forwarded there
// with one extra hop at most (routing.go).
package server
