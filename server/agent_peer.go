package server

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

	"tether/rpc"
	"tether/structs"
)

// Agent calls aimed at a server (GET /v1/agent/monitor?server_id=,
// /v1/agent/pprof/...?server_id=) name it as Nomad lets them: "leader",
// the member name ("<name>.<region>"), the name alone, the raft ID, or
// its RPC or membership address.

// ResolveServer returns the RPC address of the server serverID names, and
// whether it is this one. An ID that names no alive server of the region
// is a 500 "unknown Nomad server <id>", as Nomad answers it.
func (s *Server) ResolveServer(serverID string) (addr string, self bool, err error) {
	if serverID == "leader" {
		addr = s.Leader()
		if addr == "" {
			return "", false, noLeader(nil)
		}
		return addr, addr == s.cfg.RPCAdvertise, nil
	}
	for _, m := range s.serverMembers(true) {
		if !namesMember(m, serverID, s.cfg.Region) {
			continue
		}
		return m.Tags["rpc_addr"], m.Tags["id"] == s.id, nil
	}
	if serverID == s.cfg.RPCAdvertise || serverID == s.cfg.Name || serverID == s.id {
		return s.cfg.RPCAdvertise, true, nil
	}
	return "", false, structs.NewError(http.StatusInternalServerError, "unknown Nomad server %s", serverID)
}

// namesMember reports whether id names member m of region.
func namesMember(m Member, id, region string) bool {
	switch id {
	case m.Name, m.Tags["id"], m.Tags["rpc_addr"]:
		return true
	}
	if name, ok := strings.CutSuffix(m.Name, "."+region); ok && id == name {
		return true
	}
	return m.Addr != "" && id == net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
}

// OpenPeerStream opens a streaming method on the server at addr (an RPC
// address ResolveServer returned), through the pool of server sessions.
// The peer's handler checks the caller's token itself.
func (s *Server) OpenPeerStream(ctx context.Context, addr, method string, args any) (*rpc.Stream, error) {
	return s.pool.OpenStream(ctx, addr, method, args)
}
