package server

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"tether/structs"
)

// reconcileInterval is how often the leader checks the raft voters against
// membership even without a membership event, and retries the scheduling
// passes that failed.
const reconcileInterval = 5 * time.Second

// monitorLeadership starts the leader's duties when this server becomes
// leader and stops them when it steps down.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	var stopLeader func() // non-nil while leading
	stop := func() {
		if stopLeader == nil {
			return
		}
		stopLeader()
		stopLeader = nil
		s.hb.clear()
		s.logger.Info("cluster leadership lost")
	}
	defer stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case isLeader := <-s.raftNotify:
			switch {
			case isLeader && stopLeader == nil:
				ctx, cancel := context.WithCancel(s.ctx)
				done := make(chan struct{})
				go func() {
					defer close(done)
					s.leaderLoop(ctx)
				}()
				stopLeader = func() {
					cancel()
					<-done
				}
			case !isLeader:
				stop()
			}
		}
	}
}

// leaderLoop runs while this server leads: it waits until the FSM holds
// every committed entry, arms the heartbeat TTLs of all nodes, reschedules
// every job (the scheduler's memory of blocked work is the leader's), and
// keeps the raft voters in line with membership, retrying failed
// scheduling passes on the same tick.
func (s *Server) leaderLoop(ctx context.Context) {
	s.logger.Info("cluster leadership acquired")
	for {
		if err := s.raft.Barrier(10 * time.Second).Error(); err == nil {
			break
		} else if ctx.Err() != nil {
			return
		} else {
			s.logger.Warn("leader barrier failed; retrying", "error", err)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	s.establishLeadership(ctx)
	tick := time.NewTicker(reconcileInterval)
	defer tick.Stop()
	for {
		s.reconcileVoters()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.retryFailedSchedules(ctx)
		case <-s.reconcileCh:
		}
	}
}

// establishLeadership arms the heartbeat timer of every node that is not
// down with the failover TTL, so that none is marked down before it had
// time to find this leader, makes the first root key of a new cluster,
// and reschedules the jobs. It runs after the
// barrier: the state then holds every committed write.
func (s *Server) establishLeadership(ctx context.Context) {
	nodes, _ := s.store.Nodes("")
	ids := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if n.Status != structs.NodeStatusDown {
			ids = append(ids, n.ID)
		}
	}
	ttl := s.hb.armAll(ids)
	s.logger.Info("heartbeat timers armed for failover", "nodes", len(ids), "ttl", ttl)
	if err := s.ensureRootKey(ctx); err != nil {
		s.logger.Error("making the first root key", "error", err)
	}
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	jobs, _ := s.store.Jobs("*", "")
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		if j.Stop {
			continue
		}
		if err := s.scheduleLocked(ctx, j.Namespace, j.ID); err != nil {
			s.logger.Warn("rescheduling job on leadership", "job", j.ID, "error", err)
		}
	}
}

// reconcileVoters adds alive servers of the region that raft does not know
// (or knows at another address) as voters, and removes voters that were
// replaced (another raft ID now serves their address) or that have been
// failed for DeadServerCleanup while more than BootstrapExpect voters
// remain.
func (s *Server) reconcileVoters() {
	if s.members == nil || !s.IsLeader() {
		return
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return
	}
	conf := f.Configuration()
	inRaft := map[raft.ServerID]raft.ServerAddress{}
	voters := 0
	for _, srv := range conf.Servers {
		inRaft[srv.ID] = srv.Address
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	members := s.serverMembers(false)
	aliveAddr := map[string]string{} // rpc addr → raft ID of the alive member
	known := map[string]Member{}
	for _, m := range members {
		known[m.Tags["id"]] = m
		if m.Up() {
			aliveAddr[m.Tags["rpc_addr"]] = m.Tags["id"]
		}
	}
	for _, m := range members {
		if !m.Up() {
			continue
		}
		id, addr := raft.ServerID(m.Tags["id"]), raft.ServerAddress(m.Tags["rpc_addr"])
		if cur, ok := inRaft[id]; ok && cur == addr {
			continue
		}
		s.logger.Info("adding server as voter", "member", m.Name, "id", id, "addr", addr)
		if err := s.raft.AddVoter(id, addr, 0, 10*time.Second).Error(); err != nil {
			s.logger.Warn("adding voter failed", "member", m.Name, "error", err)
		}
	}
	for _, srv := range conf.Servers {
		if srv.ID == raft.ServerID(s.id) {
			continue
		}
		m, isMember := known[string(srv.ID)]
		replacedBy, addrTaken := aliveAddr[string(srv.Address)]
		switch {
		case addrTaken && replacedBy != string(srv.ID) && (!isMember || !m.Up()):
			s.logger.Info("removing replaced server", "id", srv.ID, "addr", srv.Address, "replaced_by", replacedBy)
		case s.forcedOut(string(srv.ID)) && (!isMember || !m.Up()):
			s.logger.Info("removing server forced to leave", "id", srv.ID, "addr", srv.Address)
		case isMember && !m.Up() && time.Since(m.since) > s.cfg.DeadServerCleanup && voters > s.cfg.BootstrapExpect:
			s.logger.Info("removing dead server", "member", m.Name, "id", srv.ID, "failed_for", time.Since(m.since).Round(time.Second))
		default:
			continue
		}
		if err := s.raft.RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
			s.logger.Warn("removing server failed", "id", srv.ID, "error", err)
			continue
		}
		voters--
	}
}
