package server

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"tether/rpc"
	"tether/structs"
)

// Rebalancing (DESIGN.md "Spread and rebalancing").
//
// Nodes pick a random first server, so a fleet that starts together is
// spread evenly; but after a server dies its nodes move to the others,
// and when it comes back nothing brings them back. Nomad's client
// re-picks a server now and then (an interval that grows with the
// cluster). That moves nodes whether or not the spread is even: with
// three servers, two thirds of the fleet change server on every round,
// each a new session and a registration, for nothing once the spread is
// even. Here the servers decide, because each knows its own count and
// can ask its peers theirs: every RebalanceInterval (plus jitter) a
// server asks its alive peers how many node sessions they hold; if it
// holds more than (1 + RebalanceTolerance) × the even share, it asks at
// most RebalanceMaxMoves of its nodes (and no more than its excess) to
// move to the servers below the share, in proportion to what they lack.
// Every server plans from the same counts, so together they move what
// the others lack; no server plans again while its own or a peer's moves
// are still under way (a node asked to move and not gone yet; at most
// two intervals), so counts in flux cause no overshoot. An even fleet
// moves nothing; a returned server gets its share within a
// few intervals, at the pace admission lets it take nodes.
//
// A move never fails a call: the node registers on the new server first
// (its binding there outranks the old, so peers that look the node up
// find the new server), then releases the old session. The old server
// unbinds it at once (new calls through it are forwarded to the new
// server; a peer with a cached route to it is told "no path" and looks
// again), waits until the calls in flight on it are done (at most
// SessionDrainTimeout), and closes it. A call that picked the old session
// just before it closed finds it closed and is re-routed (route.go).

// rebalancer is the state of the rebalancing loop; only its goroutine
// touches it.
type rebalancer struct {
	// asked holds the nodes asked to move and when: until they leave, they
	// are not counted as this server's, nor asked again.
	asked map[string]time.Time
}

// rebalanceLoop runs rebalanceOnce every RebalanceInterval plus jitter,
// until the server stops.
func (s *Server) rebalanceLoop() {
	defer s.wg.Done()
	iv := s.cfg.RebalanceInterval
	if iv <= 0 {
		return
	}
	r := &rebalancer{asked: make(map[string]time.Time)}
	for {
		t := time.NewTimer(iv + rand.N(iv/4+1))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.rebalanceOnce(s.ctx, r)
	}
}

// sessionCountResponse is a peer's answer to methodSessionCount.
type sessionCountResponse struct {
	Sessions int
	// Moving is how many of them the peer asked to move and still holds.
	Moving int
}

// sessionCountEndpoint answers a peer with this server's node sessions.
func (s *Server) sessionCountEndpoint(ctx context.Context, req *struct{}, resp *sessionCountResponse) error {
	if err := s.requirePeer(ctx); err != nil {
		return err
	}
	resp.Sessions = s.sessions.count()
	resp.Moving = int(s.movingOut.Load())
	return nil
}

// peerSessionCounts asks every alive peer for its session count, in
// parallel within PeerQueryTimeout; peers that do not answer are left
// out.
func (s *Server) peerSessionCounts(ctx context.Context) map[string]sessionCountResponse {
	peers := s.peerAddrs()
	qctx, cancel := context.WithTimeout(ctx, s.cfg.PeerQueryTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]sessionCountResponse, len(peers))
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp sessionCountResponse
			if err := s.pool.Call(qctx, p, methodSessionCount, &struct{}{}, &resp); err != nil {
				s.logger.Debug("peer session count failed", "server", p, "error", err)
				return
			}
			mu.Lock()
			out[p] = resp
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// moveTarget is a server below the even share and the nodes it is sent.
type moveTarget struct {
	addr string
	n    int
}

// planMoves decides how many of mine nodes go where: nothing unless mine
// is above (1+tol) × the even share of mine plus peers; then at most
// maxMoves and at most the excess over the share, spread over the peers
// below the share in proportion to what each lacks.
func planMoves(mine int, peers map[string]int, tol float64, maxMoves int) []moveTarget {
	if len(peers) == 0 || mine == 0 {
		return nil
	}
	total := mine
	for _, n := range peers {
		total += n
	}
	mean := float64(total) / float64(len(peers)+1)
	if float64(mine) <= mean*(1+tol) {
		return nil
	}
	moves := min(mine-int(math.Ceil(mean)), maxMoves)
	if moves <= 0 {
		return nil
	}
	var targets []moveTarget
	lack := 0
	for addr, n := range peers {
		if d := int(math.Floor(mean)) - n; d > 0 {
			targets = append(targets, moveTarget{addr: addr, n: d})
			lack += d
		}
	}
	if lack == 0 {
		return nil
	}
	sort.Slice(targets, func(i, j int) bool {
		if targets[i].n != targets[j].n {
			return targets[i].n > targets[j].n
		}
		return targets[i].addr < targets[j].addr
	})
	left := min(moves, lack)
	for i := range targets {
		k := int(math.Ceil(float64(moves) * float64(targets[i].n) / float64(lack)))
		k = min(k, targets[i].n, left)
		targets[i].n = k
		left -= k
	}
	out := targets[:0]
	for _, t := range targets {
		if t.n > 0 {
			out = append(out, t)
		}
	}
	return out
}

// rebalanceOnce compares this server's sessions with its peers' and asks
// nodes to move when it holds more than its share.
func (s *Server) rebalanceOnce(ctx context.Context, r *rebalancer) {
	now := time.Now()
	for id, at := range r.asked {
		if s.sessions.get(id) == nil || now.Sub(at) > 2*s.cfg.RebalanceInterval {
			delete(r.asked, id)
		}
	}
	s.movingOut.Store(int64(len(r.asked)))
	if len(r.asked) > 0 {
		return // the last round's moves are not done: counts are in flux
	}
	mine := s.sessions.count()
	counts := s.peerSessionCounts(ctx)
	peers := make(map[string]int, len(counts))
	for addr, c := range counts {
		if c.Moving > 0 {
			return // a peer's moves are not done
		}
		peers[addr] = c.Sessions
	}
	plan := planMoves(mine, peers, s.cfg.RebalanceTolerance, s.cfg.RebalanceMaxMoves)
	if len(plan) == 0 {
		return
	}
	want := 0
	for _, t := range plan {
		want += t.n
	}
	nodes := s.sessions.sampleNodes(want, r.asked)
	s.logger.Info("rebalancing node sessions", "sessions", mine, "peers", peers, "moving", len(nodes))

	type move struct {
		nodeID string
		sess   *rpc.Session
		to     string
	}
	var moves []move
	i := 0
	for _, t := range plan {
		for k := 0; k < t.n && i < len(nodes); k++ {
			moves = append(moves, move{nodes[i].nodeID, nodes[i].sess, t.addr})
			i++
		}
	}
	// Ask with bounded concurrency; a node answers at once and moves in
	// its own time.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, mv := range moves {
		r.asked[mv.nodeID] = now
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err := mv.sess.Call(cctx, structs.MethodClientMove, &structs.ClientMoveRequest{Server: mv.to}, &structs.GenericResponse{})
			if err != nil {
				s.logger.Debug("asking a node to move failed", "node_id", mv.nodeID, "error", err)
				return
			}
			s.rebalanceMoves.Add(1)
		}()
	}
	wg.Wait()
	s.movingOut.Store(int64(len(r.asked)))
}

// boundNode is a node and its session here.
type boundNode struct {
	nodeID string
	sess   *rpc.Session
}

// sampleNodes returns up to k nodes with a live session here, not in
// skip, starting at a random shard (nodes hash over the shards, so any
// run of shards is a fair sample).
func (r *sessionRegistry) sampleNodes(k int, skip map[string]time.Time) []boundNode {
	out := make([]boundNode, 0, k)
	first := rand.N(sessionShards)
	for i := 0; i < sessionShards && len(out) < k; i++ {
		sh := &r.shards[(first+i)%sessionShards]
		sh.mu.Lock()
		for id, b := range sh.byNode {
			if len(out) >= k {
				break
			}
			if _, asked := skip[id]; asked || b.sess == nil || b.sess.IsClosed() {
				continue
			}
			out = append(out, boundNode{id, b.sess})
		}
		sh.mu.Unlock()
	}
	return out
}

// nodeRelease is structs.MethodNodeRelease: a node that registered on
// another server gives up the session it calls on. The session is
// unbound at once (calls through this server now go to the node's new
// server) and closed once the calls in flight on it are done.
func (s *Server) nodeRelease(ctx context.Context, req *structs.NodeReleaseRequest, resp *structs.GenericResponse) error {
	if err := s.authenticateNode(req.NodeID, req.SecretID); err != nil {
		return err
	}
	sess := rpc.SessionFromContext(ctx)
	if sess == nil || s.sessions.nodeOf(sess) != req.NodeID {
		return structs.BadRequest("session is not bound to node %s", req.NodeID)
	}
	s.sessions.unbind(sess)
	s.routes.drop(req.NodeID)
	s.sessionsReleased.Add(1)
	s.wg.Add(1)
	go s.drainSession(sess, req.NodeID)
	return nil
}

// drainTick is how often a draining session's streams are looked at.
const drainTick = 20 * time.Millisecond

// drainSession closes a released session once no stream is in use on it
// (the calls in flight are done), or after SessionDrainTimeout.
func (s *Server) drainSession(sess *rpc.Session, nodeID string) {
	defer s.wg.Done()
	deadline := time.NewTimer(s.cfg.SessionDrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for sess.StreamsInUse() > 0 {
		select {
		case <-sess.CloseChan():
			return
		case <-s.ctx.Done():
			sess.Close()
			return
		case <-deadline.C:
			s.drainTimeouts.Add(1)
			s.logger.Warn("released node session still busy; closing it", "node_id", nodeID, "streams", sess.StreamsInUse())
			sess.Close()
			return
		case <-tick.C:
		}
	}
	sess.Close()
	if s.sessions.get(nodeID) == nil {
		s.DropData(nodeID) // its data connections were to this server
	}
}
