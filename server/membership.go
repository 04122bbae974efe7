package server

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"tether/rpc"
	"tether/structs"
)

// Member statuses, as Nomad reports them in /v1/agent/members.
const (
	MemberAlive  = "alive"
	MemberFailed = "failed"
	MemberLeft   = "left"
	// MemberLeaving is an alive member an operator forced to leave (as
	// serf marks one): it keeps serving and stays a raft voter; it turns
	// left or failed when it goes, or alive again when it updates.
	MemberLeaving = "leaving"
)

// Member is one server as membership knows it.
type Member struct {
	// Name is the member name, "<name>.<region>".
	Name string
	// Addr and Port are the membership (serf) address.
	Addr string
	Port uint16
	// Tags carry role, region, dc, rpc_addr, port, id (raft ID), expect
	// (bootstrap_expect, when set), bootstrap ("1" on a server that
	// bootstraps itself), build, vsn and raft_vsn.
	Tags map[string]string
	// Status is MemberAlive, MemberLeaving, MemberFailed or MemberLeft.
	Status string

	since time.Time // when Status was last set
}

// Up reports whether the member is running (alive, or leaving).
func (m *Member) Up() bool { return m.Status == MemberAlive || m.Status == MemberLeaving }

// membership runs memberlist on the serf port: it finds the other servers
// (retry_join), gossips each server's tags and tells the server when
// members come and go.
type membership struct {
	s      *Server
	ml     *memberlist.Memberlist
	self   string
	tags   []byte
	logger hclog.Logger

	mu      sync.Mutex
	members map[string]*Member
	// forced holds the raft IDs of members forced out (ForceLeave) and
	// not seen alive since: the leader removes them from raft.
	forced map[string]bool

	// bcast gossips force-leave intents to the other servers.
	bcast *memberlist.TransmitLimitedQueue

	eventCh chan struct{} // membership changed; capacity 1
}

// memberTags returns this server's tags.
func (s *Server) memberTags() map[string]string {
	_, port, _ := net.SplitHostPort(s.cfg.RPCAdvertise)
	build := s.cfg.Build
	if build == "" {
		build = "0.0.0"
	}
	tags := map[string]string{
		"role":     "nomad",
		"region":   s.cfg.Region,
		"dc":       s.cfg.Datacenter,
		"rpc_addr": s.cfg.RPCAdvertise,
		"port":     port,
		"id":       s.id,
		"build":    build,
		"vsn":      "1",
		"raft_vsn": "3",
	}
	if s.cfg.BootstrapExpect != 0 {
		tags["expect"] = strconv.Itoa(s.cfg.BootstrapExpect)
	}
	if s.cfg.BootstrapExpect == 1 || s.cfg.InMemory {
		tags["bootstrap"] = "1" // it bootstraps itself (raft.go), as Nomad tags it
	}
	return tags
}

// setupMembership starts memberlist on cfg.SerfBind.
func (s *Server) setupMembership() error {
	host, portStr, err := net.SplitHostPort(s.cfg.SerfBind)
	if err != nil {
		return fmt.Errorf("serf bind address %q: %w", s.cfg.SerfBind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("serf bind port %q: %w", portStr, err)
	}
	logger := s.logger.Named("serf")
	stdLog := logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	trans, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host},
		BindPort:  port,
		Logger:    stdLog,
	})
	if err != nil {
		return fmt.Errorf("serf listener: %w", err)
	}
	advHost, advPort := host, trans.GetAutoBindPort()
	if s.cfg.SerfAdvertise != "" {
		if h, p, err := net.SplitHostPort(s.cfg.SerfAdvertise); err == nil {
			advHost = h
			if n, err := strconv.Atoi(p); err == nil && n != 0 {
				advPort = n
			}
		} else {
			advHost = s.cfg.SerfAdvertise
		}
	}
	if ip := net.ParseIP(advHost); ip == nil || ip.IsUnspecified() {
		if ips, err := net.LookupIP(advHost); err == nil && len(ips) > 0 && !ips[0].IsUnspecified() {
			advHost = ips[0].String()
		} else {
			advHost = "127.0.0.1"
		}
	}
	m := &membership{
		s:       s,
		logger:  logger,
		members: make(map[string]*Member),
		forced:  make(map[string]bool),
		eventCh: make(chan struct{}, 1),
	}
	m.bcast = &memberlist.TransmitLimitedQueue{NumNodes: m.numMembers, RetransmitMult: 3}
	name := s.cfg.Name
	if name == "" {
		name = s.id
	}
	m.self = name + "." + s.cfg.Region
	var tb []byte
	if err := codec.NewEncoderBytes(&tb, msgpackHandle).Encode(s.memberTags()); err != nil {
		trans.Shutdown()
		return fmt.Errorf("encoding member tags: %w", err)
	}
	m.tags = tb
	mc := memberlist.DefaultLANConfig()
	mc.Name = m.self
	mc.Transport = trans
	mc.BindAddr = host
	mc.BindPort = advPort
	mc.AdvertiseAddr = advHost
	mc.AdvertisePort = advPort
	mc.Delegate = m
	mc.Events = m
	mc.Logger = stdLog
	mc.DeadNodeReclaimTime = 10 * time.Second
	ml, err := memberlist.Create(mc)
	if err != nil {
		trans.Shutdown()
		return fmt.Errorf("starting membership: %w", err)
	}
	m.ml = ml
	s.members = m
	s.serfAddr = net.JoinHostPort(advHost, strconv.Itoa(advPort))
	return nil
}

// NodeMeta implements memberlist.Delegate: this server's tags.
func (m *membership) NodeMeta(limit int) []byte {
	if len(m.tags) > limit {
		m.logger.Error("member tags too large; not gossiped", "size", len(m.tags), "limit", limit)
		return nil
	}
	return m.tags
}

// NotifyMsg implements memberlist.Delegate: a force-leave intent gossiped
// by another server.
func (m *membership) NotifyMsg(b []byte) {
	if len(b) < 2 || len(b) > maxIntentSize || b[0] != intentForceLeave {
		return
	}
	var in forceLeaveIntent
	if err := codec.NewDecoderBytes(b[1:], msgpackHandle).Decode(&in); err != nil {
		m.logger.Warn("undecodable force-leave intent", "error", err)
		return
	}
	var at time.Time
	if in.At != 0 {
		at = time.Unix(0, in.At)
	}
	m.forceLeave(in.Name, in.Prune, at)
}

// GetBroadcasts implements memberlist.Delegate: the queued force-leave
// intents.
func (m *membership) GetBroadcasts(overhead, limit int) [][]byte {
	return m.bcast.GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate; no extra state.
func (m *membership) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate; no extra state.
func (m *membership) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin implements memberlist.EventDelegate.
func (m *membership) NotifyJoin(n *memberlist.Node) { m.update(n, MemberAlive) }

// NotifyUpdate implements memberlist.EventDelegate.
func (m *membership) NotifyUpdate(n *memberlist.Node) { m.update(n, MemberAlive) }

// NotifyLeave implements memberlist.EventDelegate: a dead node failed, a
// node that said goodbye left.
func (m *membership) NotifyLeave(n *memberlist.Node) {
	status := MemberFailed
	if n.State == memberlist.StateLeft {
		status = MemberLeft
	}
	m.update(n, status)
}

func (m *membership) update(n *memberlist.Node, status string) {
	tags := map[string]string{}
	if len(n.Meta) > 0 {
		if err := codec.NewDecoderBytes(n.Meta, msgpackHandle).Decode(&tags); err != nil {
			m.logger.Warn("undecodable member tags", "member", n.Name, "error", err)
		}
	}
	m.mu.Lock()
	old := m.members[n.Name]
	if status == MemberAlive {
		delete(m.forced, tags["id"])
	}
	if old != nil && old.Status == MemberLeft && status == MemberFailed {
		status = MemberLeft // forced out: memberlist still reports it dead
	}
	if old == nil || old.Status != status {
		m.logger.Info("member changed", "member", n.Name, "status", status, "rpc_addr", tags["rpc_addr"])
	}
	since := time.Now()
	if old != nil && old.Status == status {
		since = old.since
	}
	m.members[n.Name] = &Member{Name: n.Name, Addr: n.Addr.String(), Port: n.Port, Tags: tags, Status: status, since: since}
	m.mu.Unlock()
	if old != nil && old.Status == MemberAlive && status != MemberAlive && m.s.routes != nil {
		if dropped := m.s.routes.dropVia(tags["rpc_addr"]); dropped > 0 {
			m.logger.Info("dropped node routes through a server that is gone", "member", n.Name, "routes", dropped)
		}
	}
	select {
	case m.eventCh <- struct{}{}:
	default:
	}
}

// list returns copies of the members, sorted by name.
func (m *membership) list() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		c := *mem
		c.Tags = make(map[string]string, len(mem.Tags))
		for k, v := range mem.Tags {
			c.Tags[k] = v
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Members returns the servers membership knows (this one included), in
// Nomad's shape. A server without membership reports only itself.
func (s *Server) Members() []Member {
	if s.members == nil {
		name := s.cfg.Name
		if name == "" {
			name = s.id
		}
		// No serf port: the address is the RPC host (what `nomad server
		// members` joins with the "port" tag to find the leader), the
		// port 0.
		host, port := s.serfAddr, 0
		if h, p, err := net.SplitHostPort(s.serfAddr); err == nil {
			host = h
			port, _ = strconv.Atoi(p)
		} else if h, _, err := net.SplitHostPort(s.cfg.RPCAdvertise); err == nil {
			host = h
		}
		return []Member{{Name: name + "." + s.cfg.Region, Addr: host, Port: uint16(port), Tags: s.memberTags(), Status: MemberAlive}}
	}
	return s.members.list()
}

// SerfAddr returns the membership address peers join ("host:port"), or
// "" when membership is off.
func (s *Server) SerfAddr() string { return s.serfAddr }

// MemberName returns this server's member name ("<name>.<region>").
func (s *Server) MemberName() string {
	if s.members != nil {
		return s.members.self
	}
	return s.Members()[0].Name
}

// serverMembers returns the servers of this region with a raft ID and an
// RPC address, alive ones only when alive is set.
func (s *Server) serverMembers(alive bool) []Member {
	var out []Member
	for _, m := range s.Members() {
		if m.Tags["role"] != "nomad" || m.Tags["region"] != s.cfg.Region || m.Tags["id"] == "" || m.Tags["rpc_addr"] == "" {
			continue
		}
		if alive && !m.Up() {
			continue
		}
		out = append(out, m)
	}
	return out
}

// rpcServers returns the RPC addresses of the alive servers of the region,
// this one included: what nodes learn to fail over to.
func (s *Server) rpcServers() []string {
	var out []string
	for _, m := range s.serverMembers(true) {
		out = append(out, m.Tags["rpc_addr"])
	}
	if len(out) == 0 {
		out = []string{s.cfg.RPCAdvertise}
	}
	return out
}

// peerAddrs returns the RPC addresses of the other alive servers.
func (s *Server) peerAddrs() []string {
	var out []string
	for _, m := range s.serverMembers(true) {
		if m.Tags["id"] != s.id {
			out = append(out, m.Tags["rpc_addr"])
		}
	}
	return out
}

// memberNamesByID maps raft IDs to member names.
func (s *Server) memberNamesByID() map[string]string {
	out := map[string]string{}
	for _, m := range s.serverMembers(false) {
		out[m.Tags["id"]] = m.Name
	}
	return out
}

// requirePeer refuses server-to-server methods on sessions bound to a
// node (a node never forwards, applies raft entries or relays for a
// peer) and, under mutual TLS with verify_server_hostname, on sessions
// whose certificate is not a server's of this region: a node's
// certificate, good for a session, must not let a process that holds one
// apply raft entries or relay calls before it ever registers. (Without
// TLS a peer cannot be told from a node that has not registered; an
// address check would only break multi-homed servers.)
func (s *Server) requirePeer(ctx context.Context) error {
	sess := rpc.SessionFromContext(ctx)
	if sess == nil {
		return nil
	}
	if s.sessions.nodeOf(sess) != "" {
		s.peerRefused.Add(1)
		return structs.ErrPermissionDenied
	}
	if s.verifyPeer != nil {
		if cs, ok := sess.ConnectionState(); ok {
			if err := s.verifyPeer(cs); err != nil {
				s.peerRefused.Add(1)
				s.logger.Debug("peer method refused", "remote", sess.RemoteAddr(), "error", err)
				return structs.ErrPermissionDenied
			}
		}
	}
	return nil
}

// runMembership joins the configured servers, bootstraps raft once enough
// servers are known, and rejoins failed members now and then. It owns
// nothing but its loop.
func (s *Server) runMembership() {
	defer s.wg.Done()
	m := s.members
	// A join list usually names every server, this one included: joining
	// ourselves proves nothing, so skip our own address and count a join
	// only once another member is known.
	var addrs []string
	for _, a := range s.cfg.RetryJoin {
		if a != s.serfAddr && a != s.cfg.SerfBind {
			addrs = append(addrs, a)
		}
	}
	joined := len(addrs) == 0
	tick := time.NewTicker(s.cfg.RetryJoinInterval)
	defer tick.Stop()
	rejoinEvery := 5
	for n := 0; ; n++ {
		if !joined {
			cnt, err := m.ml.Join(addrs)
			if cnt > 0 && m.ml.NumMembers() > 1 {
				joined = true
				s.logger.Info("joined cluster", "contacted", cnt, "members", m.ml.NumMembers())
			} else {
				s.logger.Debug("join failed; retrying", "addrs", addrs, "error", err)
			}
		} else if n%rejoinEvery == 0 {
			// Heal after a partition: try the failed members again.
			for _, mem := range m.list() {
				if mem.Status == MemberFailed {
					_, _ = m.ml.Join([]string{net.JoinHostPort(mem.Addr, strconv.Itoa(int(mem.Port)))})
				}
			}
		}
		s.maybeBootstrap()
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		case <-m.eventCh:
			s.maybeBootstrap()
			select {
			case s.reconcileCh <- struct{}{}:
			default:
			}
			// Drain to the next tick so a burst of events costs one pass.
			continue
		}
	}
}

// maybeBootstrap bootstraps raft once BootstrapExpect servers of the
// region are alive members, none of them already in a cluster, and this
// server has no raft state. Every server computes the same configuration
// (all alive servers, sorted by raft ID).
func (s *Server) maybeBootstrap() {
	if s.bootstrapped.Load() || s.cfg.BootstrapExpect < 2 {
		return
	}
	servers := s.serverMembers(true)
	for _, m := range servers {
		if m.Tags["expect"] != strconv.Itoa(s.cfg.BootstrapExpect) {
			s.logger.Error("member has a different bootstrap_expect; not bootstrapping", "member", m.Name, "expect", m.Tags["expect"])
			return
		}
	}
	if len(servers) < s.cfg.BootstrapExpect {
		return
	}
	// A peer that already has voters means a cluster exists: it will add
	// us as a voter.
	for _, m := range servers {
		if m.Tags["id"] == s.id {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
		var resp structs.StatusResponse
		err := s.pool.Call(ctx, m.Tags["rpc_addr"], structs.MethodStatusPeers, &structs.QueryOptions{}, &resp)
		cancel()
		if err != nil {
			s.logger.Debug("bootstrap: peer not answering yet", "peer", m.Name, "error", err)
			return
		}
		if len(resp.Peers) > 0 {
			s.logger.Info("bootstrap: a cluster exists; waiting to be added", "peer", m.Name)
			s.bootstrapped.Store(true)
			return
		}
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].Tags["id"] < servers[j].Tags["id"] })
	var conf raft.Configuration
	for _, m := range servers {
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(m.Tags["id"]),
			Address:  raft.ServerAddress(m.Tags["rpc_addr"]),
		})
	}
	if err := s.raft.BootstrapCluster(conf).Error(); err != nil && err != raft.ErrCantBootstrap {
		s.logger.Error("bootstrapping raft failed", "error", err)
		return
	}
	s.logger.Info("cluster bootstrapped", "servers", len(conf.Servers))
	s.bootstrapped.Store(true)
}

// shutdownMembership leaves the cluster politely (so peers stop routing
// here at once) and stops memberlist.
func (s *Server) shutdownMembership() {
	if s.members == nil {
		return
	}
	if !s.cfg.NoLeaveOnShutdown {
		if err := s.members.ml.Leave(time.Second); err != nil {
			s.logger.Debug("leaving membership", "error", err)
		}
	}
	if err := s.members.ml.Shutdown(); err != nil {
		s.logger.Debug("stopping membership", "error", err)
	}
}
