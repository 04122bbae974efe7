// Package agent wires a Tether process together: it loads the agent
// configuration, starts a server and/or a node agent, and serves the
// /v1/... HTTP API with the same handlers on both, over one backend that
// either answers from the local node or forwards through the servers.
package agent
