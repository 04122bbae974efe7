package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"tether/internal/atomicfile"
	"tether/rpc"
	"tether/structs"
)

// errNotLeader tells a forwarding server that the receiver is not (or no
// longer) the leader; the forwarder looks for the leader again. It never
// reaches an HTTP caller.
var errNotLeader = structs.NewError(503, "rpc: not the cluster leader")

// noLeader is the error a write gets when no leader could be reached
// before its deadline: Nomad's "No cluster leader", with the cause.
func noLeader(cause error) error {
	if cause == nil {
		return structs.NewError(500, "No cluster leader")
	}
	return structs.NewError(500, "No cluster leader (%v)", cause)
}

// setupRaft creates the FSM, the stores and the transport, and starts raft.
// A single expected server (or an in-memory one) bootstraps itself at once;
// larger clusters bootstrap from membership (membership.go).
func (s *Server) setupRaft() error {
	cfg := s.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.id)
	rc.Logger = s.logger.Named("raft")
	if cfg.RaftHeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.RaftHeartbeatTimeout
	}
	if cfg.RaftElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.RaftElectionTimeout
	}
	if cfg.RaftLeaderLease > 0 {
		rc.LeaderLeaseTimeout = cfg.RaftLeaderLease
	}
	if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	if cfg.RaftSnapshotThreshold > 0 {
		rc.SnapshotThreshold = uint64(cfg.RaftSnapshotThreshold)
	}
	if cfg.RaftSnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.RaftSnapshotInterval
	}
	if cfg.RaftTrailingLogs > 0 {
		rc.TrailingLogs = uint64(cfg.RaftTrailingLogs)
	}
	rc.NotifyCh = s.raftNotify
	s.fsm = &fsm{store: s.store, logger: s.logger.Named("fsm"), restored: s.allocsRestored}

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		trans  raft.Transport
	)
	if cfg.InMemory {
		store := raft.NewInmemStore()
		logs, stable, snaps = store, store, raft.NewInmemSnapshotStore()
		_, trans = raft.NewInmemTransport(raft.ServerAddress(cfg.RPCAdvertise))
	} else {
		dir := filepath.Join(cfg.DataDir, "raft")
		if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o700); err != nil {
			return fmt.Errorf("creating raft dir: %w", err)
		}
		// raft-wal's Close leaves its meta store open (and its file
		// locked), so the server owns the meta store and closes it.
		s.walMeta = &metadb.BoltMetaDB{}
		wal, err := raftwal.Open(filepath.Join(dir, "wal"), raftwal.WithMetaStore(s.walMeta))
		if err != nil {
			return fmt.Errorf("opening raft log: %w", err)
		}
		s.wal = wal
		removePartialSnapshots(filepath.Join(dir, "snapshots"), s.logger.Named("snapshot"))
		fss, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, s.logger.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("opening raft snapshots: %w", err)
		}
		logs, stable, snaps = wal, wal, fss
		s.raftLayer = newRaftLayer(cfg.RPCAdvertise, s.peerRPC.TLSConfig)
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  s.raftLayer,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  s.logger.Named("raft-net"),
		})
	}
	s.raftTrans = trans
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fmt.Errorf("reading raft state: %w", err)
	}
	s.hadRaftState = existing
	r, err := raft.NewRaft(rc, s.fsm, logs, stable, snaps, trans)
	if err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	s.raft = r
	if !existing && (cfg.InMemory || cfg.BootstrapExpect == 1) {
		conf := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(s.id), Address: trans.LocalAddr(),
		}}}
		if err := r.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrapping raft: %w", err)
		}
	}
	if existing || cfg.InMemory || cfg.BootstrapExpect <= 1 {
		s.bootstrapped.Store(true)
	}
	return nil
}

// loadServerID returns the server's raft ID, kept in the data dir so a
// restarted server is the same voter.
func loadServerID(dataDir string) (string, error) {
	if dataDir == "" {
		return structs.GenerateUUID(), nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating server data dir: %w", err)
	}
	p := filepath.Join(dataDir, "server-id")
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if structs.IsUUID(id) {
			return id, nil
		}
		return "", fmt.Errorf("server id file %s is corrupt", p)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading server id: %w", err)
	}
	id := structs.GenerateUUID()
	if err := atomicfile.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing server id: %w", err)
	}
	return id, nil
}

// watchLeader broadcasts every leader change (closing leaderCh) so that
// writes waiting for a leader retry at once.
func (s *Server) watchLeader() {
	defer s.wg.Done()
	obsCh := make(chan raft.Observation, 16)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-obsCh:
			s.leaderMu.Lock()
			close(s.leaderCh)
			s.leaderCh = make(chan struct{})
			s.leaderMu.Unlock()
		}
	}
}

func (s *Server) leaderChanged() <-chan struct{} {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.leaderCh
}

// IsLeader reports whether this server is the raft leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// leaderAddr returns the leader's RPC address, or "" when none is known.
func (s *Server) leaderAddr() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// Leader returns the RPC address of the cluster leader, or "" while there
// is none.
func (s *Server) Leader() string { return s.leaderAddr() }

// Peers returns the RPC addresses of the voting servers, sorted.
func (s *Server) Peers() []string {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, string(srv.Address))
		}
	}
	sort.Strings(out)
	return out
}

// RaftConfiguration returns the raft configuration in Nomad's shape.
func (s *Server) RaftConfiguration() (*RaftConfigurationResponse, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("reading raft configuration: %w", err)
	}
	_, leaderID := s.raft.LeaderWithID()
	names := s.memberNamesByID()
	resp := &RaftConfigurationResponse{Index: f.Index(), Servers: []*RaftServer{}}
	for _, srv := range f.Configuration().Servers {
		name := names[string(srv.ID)]
		if name == "" {
			name = "(unknown)"
		}
		resp.Servers = append(resp.Servers, &RaftServer{
			ID:           string(srv.ID),
			Node:         name,
			Address:      string(srv.Address),
			Leader:       srv.ID == leaderID,
			Voter:        srv.Suffrage == raft.Voter,
			RaftProtocol: "3",
		})
	}
	return resp, nil
}

// raftApply writes one command through raft and returns the index it was
// applied at. On a follower the command goes to the leader; the follower
// then waits (briefly) until it has applied the entry itself, so its own
// readers see the write.
func (s *Server) raftApply(ctx context.Context, t msgType, c any) (uint64, error) {
	buf, err := encodeCommand(t, c)
	if err != nil {
		return 0, err
	}
	var resp raftApplyResponse
	err = s.leaderCall(ctx, methodRaftApply, &raftApplyRequest{Data: buf}, &resp, func(ctx context.Context) error {
		idx, err := s.applyLocal(ctx, buf)
		resp.Index = idx
		return err
	})
	if err != nil {
		return 0, err
	}
	s.waitApplied(ctx, resp.Index)
	return resp.Index, nil
}

// waitApplied waits until the local store reached idx, for at most a
// second: a lagging follower still answers the write.
func (s *Server) waitApplied(ctx context.Context, idx uint64) {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.store.WaitForIndex(wctx, idx); err != nil {
		s.logger.Debug("local state behind a forwarded write", "error", err)
	}
}

// applyLocal applies an encoded command on this server, which must be the
// leader.
func (s *Server) applyLocal(ctx context.Context, buf []byte) (uint64, error) {
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return 0, ctx.Err()
		}
	}
	start := time.Now()
	f := s.raft.Apply(buf, timeout)
	err := f.Error()
	s.metrics.measureSince(keyRaftCommitTime, start)
	s.metrics.incr(keyRaftApply)
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return 0, errNotLeader
		}
		return 0, fmt.Errorf("raft apply: %w", err)
	}
	r, ok := f.Response().(fsmResponse)
	if !ok {
		return 0, errors.New("raft apply: unexpected FSM response")
	}
	return r.Index, r.Err
}

// raftApplyEndpoint is methodRaftApply: a follower's write, on the leader.
func (s *Server) raftApplyEndpoint(ctx context.Context, req *raftApplyRequest, resp *raftApplyResponse) error {
	if err := s.requirePeer(ctx); err != nil {
		return err
	}
	if !s.IsLeader() {
		return errNotLeader
	}
	idx, err := s.applyLocal(ctx, req.Data)
	resp.Index = idx
	if err == nil {
		s.pushCommitIndex()
	}
	return err
}

// pushCommitIndex makes the followers learn the leader's commit index now.
// A follower that forwarded a write waits until it has applied the entry
// itself (raftApply), and followers learn that an entry is committed only
// from the leader's next AppendEntries: with no other write, that comes
// after raft's CommitTimeout, 50 to 100 ms. A barrier is a log entry that
// is never applied to the state: appending one sends that AppendEntries
// at once. It is not waited for.
func (s *Server) pushCommitIndex() {
	s.raft.Barrier(0)
}

// leaderCall runs a write on the leader: local(ctx) when this server is
// the leader, else method on the leader with args and reply. While there
// is no leader, or the leader cannot be reached or has just stepped down,
// it waits for a leader change and tries again, for at most RPCHoldTimeout
// (or ctx's deadline, when sooner); then it fails with "No cluster
// leader". Forwarded calls are never forwarded again by the receiver, so
// there is one hop at most.
//
// A transport error after the request went out is retried too: the write
// may then apply twice, which the writes forwarded this way (upserts,
// status changes) tolerate.
func (s *Server) leaderCall(ctx context.Context, method string, args, reply any, local func(context.Context) error) error {
	hctx, cancel := context.WithTimeout(ctx, s.cfg.RPCHoldTimeout)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		changed := s.leaderChanged()
		if s.IsLeader() {
			err := local(ctx)
			if !errors.Is(err, errNotLeader) {
				return err
			}
			lastErr = errors.New("leadership lost")
		} else if leader := s.leaderAddr(); leader != "" && leader != s.cfg.RPCAdvertise {
			err := s.callLeader(ctx, changed, leader, method, args, reply)
			if err == nil {
				return nil
			}
			if !leaderRetryable(err) || ctx.Err() != nil {
				return err
			}
			lastErr = fmt.Errorf("leader %s: %w", leader, err)
			s.forwardRetries.Add(1)
		} else {
			lastErr = errors.New("no leader elected")
		}
		// Wait for a leader change, or retry soon with jitter (a leader
		// that is known but unreachable may be dead and not yet replaced).
		wait := 50*time.Millisecond + rand.N(50*time.Millisecond)
		if attempt > 5 {
			wait *= 4
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-hctx.Done():
			t.Stop()
			if ctx.Err() != nil && hctx.Err() == nil {
				return ctx.Err()
			}
			s.logger.Warn("write failed: no cluster leader", "method", method, "cause", lastErr)
			return noLeader(lastErr)
		}
		t.Stop()
	}
}

// removePartialSnapshots removes the snapshots that a process killed
// while writing them left in dir: raft writes a snapshot into NAME.tmp
// and renames it when whole, never reads a .tmp and never reaps one, so
// each crash during a snapshot would leave one for good. It runs before
// raft starts, when no snapshot is being written.
func removePartialSnapshots(dir string, logger hclog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // no snapshot yet
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			logger.Warn("cannot remove a partial snapshot", "snapshot", e.Name(), "error", err)
			continue
		}
		logger.Info("removed a snapshot left partial by a crash", "snapshot", e.Name())
	}
}

// errLeaderChanged is a forwarded write abandoned because raft's leader
// changed while it was out: retried on the new leader.
var errLeaderChanged = fmt.Errorf("leader changed during the call: %w", errNotLeader)

// callLeader calls method on leader, and abandons the call when raft's
// leader changes before it answers (changed is closed): a leader cut off
// by a partition, or frozen, is replaced within an election while the
// call to it would wait out a dial or the session's keepalive.
func (s *Server) callLeader(ctx context.Context, changed <-chan struct{}, leader, method string, args, reply any) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var moved atomic.Bool
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-changed:
			moved.Store(true)
			cancel()
		case <-done:
		}
	}()
	err := s.pool.Call(cctx, leader, method, args, reply)
	if err != nil && moved.Load() && ctx.Err() == nil {
		return errLeaderChanged
	}
	return err
}

// leaderRetryable reports whether a forwarded write may be retried on the
// (possibly new) leader: the receiver was not the leader, or the call
// failed in the transport (dial refused, session lost).
func leaderRetryable(err error) bool {
	if errors.Is(err, errNotLeader) {
		return true
	}
	var re *rpc.RemoteError
	if errors.As(err, &re) {
		return false // the leader answered: that is the result
	}
	return !errors.Is(err, context.Canceled)
}
