// Package server is Tether's server agent: it registers node agents that
// dialed in, keeps the session each node opened, marks silent nodes down,
// and forwards client calls (stats, metadata, ...) down the node's own
// session. Servers never dial nodes.
package server
