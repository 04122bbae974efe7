package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"tether/rpc"
	"tether/structs"
)

// Cluster operations an operator runs on the servers: regions, join and
// force-leave on membership, raft peer removal, and the system GC. A node
// agent forwards their HTTP requests to its server (HTTP.Forward).
const (
	// methodLeaderRaftRemovePeer runs a peer removal on the leader
	// (server-to-server).
	methodLeaderRaftRemovePeer = "Leader.RaftRemovePeer"
)

// RaftPeerRequest names a raft peer by ID or by address, exactly one.
type RaftPeerRequest struct {
	ID      string
	Address string
	structs.QueryOptions
}

func (s *Server) registerClusterOps() {
	rpc.HandleUnary(s.mux, methodLeaderRaftRemovePeer, leaderOnly(s, func(ctx context.Context, req *RaftPeerRequest, resp *structs.GenericResponse) error {
		return s.removeRaftPeerLeader(req)
	}))
}

// Regions returns the regions this server knows, sorted: its own and
// every server member's.
func (s *Server) Regions() []string {
	seen := map[string]bool{s.cfg.Region: true}
	for _, m := range s.Members() {
		if r := m.Tags["region"]; r != "" && m.Tags["role"] == "nomad" {
			seen[r] = true
		}
	}
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// errNoMembership answers join and force-leave on a server that runs no
// membership (an in-memory dev server).
var errNoMembership = structs.BadRequest("this server runs no membership (serf port)")

// Join contacts the servers at addrs (see ValidJoinAddr) and joins their
// membership. It
// returns how many it reached and, when some could not be, why.
func (s *Server) Join(addrs []string) (int, error) {
	if s.members == nil {
		return 0, errNoMembership
	}
	n, err := s.members.ml.Join(addrs)
	if n > 0 {
		s.logger.Info("joined servers", "contacted", n, "members", s.members.ml.NumMembers())
	}
	return n, err
}

// ForceLeave marks the failed server member name as left on every server,
// so that nobody tries to rejoin it and the leader removes it from raft;
// prune also forgets it at once. An alive member is not touched: it would
// refute the intent (as serf's force-leave does). An unknown name does
// nothing.
func (s *Server) ForceLeave(name string, prune bool) error {
	if s.members == nil {
		return errNoMembership
	}
	m := s.members
	var body []byte // the encoder writes from the start of its buffer
	if err := codec.NewEncoderBytes(&body, msgpackHandle).Encode(&forceLeaveIntent{Name: name, Prune: prune, At: time.Now().UnixNano()}); err != nil {
		return fmt.Errorf("encoding force-leave: %w", err)
	}
	b := append([]byte{intentForceLeave}, body...)
	if len(b) > maxIntentSize {
		return structs.BadRequest("node name too long")
	}
	m.forceLeave(name, prune, time.Now())
	m.bcast.QueueBroadcast(&intentBroadcast{name: name, msg: b})
	return nil
}

// Force-leave intents, gossiped through memberlist's user messages.
const (
	intentForceLeave byte = 'F'
	// maxIntentSize bounds one intent (a member name is at most a few
	// hundred bytes).
	maxIntentSize = 1024
)

type forceLeaveIntent struct {
	Name  string
	Prune bool
	// At is when the intent was made (Unix ns; 0 from servers that do not
	// say): an alive member whose status changed since is left alone, so
	// that a retransmission of the intent cannot mark a member that came
	// back as leaving.
	At int64 `codec:",omitempty"`
}

// intentBroadcast is a queued intent; a newer one for the same member
// replaces it.
type intentBroadcast struct {
	name string
	msg  []byte
}

func (b *intentBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*intentBroadcast)
	return ok && ob.name == b.name
}
func (b *intentBroadcast) Message() []byte { return b.msg }
func (b *intentBroadcast) Finished()       {}

// numMembers is the member count the broadcast queue scales its
// retransmissions by.
func (m *membership) numMembers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(len(m.members), 1)
}

// forceLeave applies a force-leave intent here.
func (m *membership) forceLeave(name string, prune bool, at time.Time) {
	m.mu.Lock()
	mem := m.members[name]
	switch {
	case mem == nil:
		m.mu.Unlock()
		return
	case (mem.Status == MemberAlive || mem.Status == MemberLeaving) && (name == m.self || !at.IsZero() && mem.since.After(at)):
		// As serf, a running member refutes an intent about itself; and
		// an intent older than the member's alive status is stale.
		m.mu.Unlock()
		return
	case mem.Status == MemberAlive || mem.Status == MemberLeaving:
		// As serf: an alive member is marked leaving (and with prune
		// forgotten until it is heard from again); it is not forced out.
		if prune {
			delete(m.members, name)
		} else {
			mem.Status, mem.since = MemberLeaving, time.Now()
		}
		m.mu.Unlock()
		m.logger.Info("alive member forced to leave: marked leaving", "member", name, "prune", prune)
		return
	}
	if id := mem.Tags["id"]; id != "" {
		m.forced[id] = true
	}
	if prune {
		delete(m.members, name)
	} else if mem.Status != MemberLeft {
		mem.Status, mem.since = MemberLeft, time.Now()
	}
	m.mu.Unlock()
	m.logger.Info("member forced to leave", "member", name, "prune", prune)
	select {
	case m.eventCh <- struct{}{}:
	default:
	}
}

// forcedOut reports whether the raft ID belongs to a member forced out
// and not alive since.
func (s *Server) forcedOut(id string) bool {
	if s.members == nil {
		return false
	}
	s.members.mu.Lock()
	defer s.members.mu.Unlock()
	return s.members.forced[id]
}

// RemoveRaftPeer removes a server from the raft configuration by ID or by
// address (operator:write). It runs on the leader. A server that is still
// alive is added back by the leader's reconciliation, as in Nomad:
// removal is for servers that are gone.
func (s *Server) RemoveRaftPeer(ctx context.Context, req *RaftPeerRequest) error {
	aclObj, err := s.ResolveToken(req.AuthToken)
	if err != nil {
		return err
	}
	if !aclObj.AllowOperatorWrite() {
		s.aclDenials.Add(1)
		return structs.ErrPermissionDenied
	}
	switch {
	case req.ID == "" && req.Address == "":
		return structs.BadRequest("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
	case req.ID != "" && req.Address != "":
		return structs.BadRequest("Must specify only one of ?id or ?address")
	}
	fwd := &RaftPeerRequest{ID: req.ID, Address: req.Address}
	return s.leaderCall(ctx, methodLeaderRaftRemovePeer, fwd, &structs.GenericResponse{}, func(context.Context) error {
		return s.removeRaftPeerLeader(fwd)
	})
}

func (s *Server) removeRaftPeerLeader(req *RaftPeerRequest) error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("reading raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		if req.ID != "" && string(srv.ID) == req.ID || req.Address != "" && string(srv.Address) == req.Address {
			s.logger.Info("removing raft peer on request", "id", srv.ID, "address", srv.Address)
			if err := s.raft.RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
				if errors.Is(err, raft.ErrNotLeader) {
					return errNotLeader
				}
				return fmt.Errorf("removing raft peer: %w", err)
			}
			return nil
		}
	}
	if req.ID != "" {
		return structs.BadRequest("id %q was not found in the Raft configuration", req.ID)
	}
	return structs.BadRequest("address %q was not found in the Raft configuration", req.Address)
}

// systemGCConcurrency bounds the nodes the system GC asks at once.
const systemGCConcurrency = 16

// SystemGC collects garbage cluster-wide (a management token): every node
// that is not down collects its terminal allocations, and expired
// one-time tokens are removed. A node that cannot be reached is logged and
// skipped, as its own GC runs anyway; the call fails only when the caller
// may not make it or the context ends.
func (s *Server) SystemGC(ctx context.Context, secret string) error {
	aclObj, err := s.ResolveToken(secret)
	if err != nil {
		return err
	}
	if !aclObj.IsManagement() {
		s.aclDenials.Add(1)
		return structs.ErrPermissionDenied
	}
	nodes, err := s.store.Nodes("")
	if err != nil {
		return err
	}
	sem := make(chan struct{}, systemGCConcurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for _, n := range nodes {
		if n.Status == structs.NodeStatusDown {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func(nodeID string) {
			defer wg.Done()
			defer func() { <-sem }()
			req := &structs.NodeSpecificRequest{NodeID: nodeID, QueryOptions: structs.QueryOptions{AuthToken: secret}}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			rt, err := s.Route(cctx, Target{NodeID: nodeID}, structs.MethodClientGCAll, req)
			if err == nil {
				err = rt.Call(cctx, structs.MethodClientGCAll, req, &structs.GenericResponse{})
			}
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
				s.logger.Warn("system gc: node did not collect", "node_id", nodeID, "error", err)
			}
		}(n.ID)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.expireOneTimeTokens(ctx); err != nil {
		return err
	}
	s.logger.Info("system gc done", "nodes", len(nodes), "failed", failed)
	return nil
}

// ValidJoinAddr reports why a join address does not parse, or nil: it is
// "host:port" of a serf port, or "host" for this server's own serf port
// number.
func ValidJoinAddr(a string) error {
	if a == "" || len(a) > 256 {
		return errors.New("empty or too long")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			host, port = a, ""
		} else {
			return err
		}
	}
	if host == "" {
		return errors.New("missing host")
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("invalid port %q", port)
		}
	}
	return nil
}
