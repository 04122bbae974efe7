package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"tether/rpc"
	"tether/structs"
)

// connManager keeps the node's one session to a server: it dials the known
// servers in a random order with backoff and jitter, registers (honouring
// a server's "come back later"), heartbeats, pushes metadata changes, and
// starts over on another server when the session dies. A server may ask
// the node to move to another server (rebalancing): the node registers
// there first, then releases the old session, which the old server closes
// once the calls in flight on it are done.
type connManager struct {
	c *Client

	mu       sync.Mutex
	cur      *link // the registered session, or nil
	servers  []string
	order    []string // this pass over servers, shuffled
	pos      int      // next in order
	last     string   // the server tried last
	syncDue  bool
	syncTmr  *time.Timer
	lastErrs map[string]string // addr → last error logged, to log a repeat once

	syncCh     chan struct{}
	moveCh     chan string
	registered chan struct{}
	regOnce    sync.Once

	// drains counts old sessions being released after a move; run waits
	// for them.
	drains sync.WaitGroup
}

// link is one session to a server and the goroutine serving it.
type link struct {
	addr string
	sess *rpc.Session
	stop context.CancelFunc // ends Serve and the handlers' contexts
	// own bounds the node's long calls of its own on this session (the
	// allocation watch): they end when the node leaves the session, and
	// go on on the next one.
	own       context.Context
	ownCancel context.CancelFunc
	serveWG   sync.WaitGroup
}

// close ends the link: calls, the session and its serving goroutine.
func (l *link) close() {
	l.ownCancel()
	l.stop()
	l.sess.Close()
	l.serveWG.Wait()
}

// Timing of moves and 429 answers.
const (
	// moveRegisterTimeout bounds the registration on the server a node
	// was asked to move to; past it the node stays where it is.
	moveRegisterTimeout = 30 * time.Second
	// releaseWait bounds how long a released session is left for its
	// server to drain and close, longer than the server's own bound
	// (SessionDrainTimeout, 1m by default).
	releaseWait = 2 * time.Minute
)

func newConnManager(c *Client) *connManager {
	m := &connManager{
		c:          c,
		servers:    append([]string(nil), c.cfg.Servers...),
		syncCh:     make(chan struct{}, 1),
		moveCh:     make(chan string, 1),
		registered: make(chan struct{}),
		lastErrs:   make(map[string]string),
	}
	rpc.HandleUnary(c.mux, structs.MethodClientMove, m.moveEndpoint)
	return m
}

// serverAddr returns the address of the server the node is registered
// with now, or "".
func (m *connManager) serverAddr() string {
	if sess := m.current(); sess != nil {
		return sess.RemoteAddr().String()
	}
	return ""
}

// knownServers returns the servers the node may fail over to.
func (m *connManager) knownServers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.servers...)
}

func (m *connManager) current() *rpc.Session {
	if l := m.currentLink(); l != nil {
		return l.sess
	}
	return nil
}

func (m *connManager) currentLink() *link {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// callOwn makes one of the node's own long calls (the allocation watch) on
// the current session, ended early when the node leaves that session: the
// error then matches context.Canceled while ctx is still live.
func (m *connManager) callOwn(ctx context.Context, method string, args, reply any) error {
	l := m.currentLink()
	if l == nil {
		return structs.NewError(503, "No cluster leader: node agent has no server connection")
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.own, cancel)
	defer stop()
	return l.sess.Call(cctx, method, args, reply)
}

// learnServers adds servers a server told us about, keeping configured
// ones first.
func (m *connManager) learnServers(addrs []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range addrs {
		if a == "" {
			continue
		}
		known := false
		for _, s := range m.servers {
			if s == a {
				known = true
				break
			}
		}
		if !known {
			m.servers = append(m.servers, a)
		}
	}
}

// nextServer returns the server to dial next. Each pass over the known
// servers is a fresh random order, and a pass does not start with the
// server tried last: a fleet does not all pick the first server of the
// same list, and the nodes of a server that died spread over the others
// instead of all failing over to the one after it (Nomad's client
// shuffles its list too).
func (m *connManager) nextServer() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pos >= len(m.order) {
		m.order = append(m.order[:0], m.servers...)
		rand.Shuffle(len(m.order), func(i, j int) { m.order[i], m.order[j] = m.order[j], m.order[i] })
		if len(m.order) > 1 && m.order[0] == m.last {
			j := 1 + rand.N(len(m.order)-1)
			m.order[0], m.order[j] = m.order[j], m.order[0]
		}
		m.pos = 0
	}
	addr := m.order[m.pos]
	m.pos++
	m.last = addr
	return addr
}

// newPass makes the next nextServer start a new random pass (after a
// registration: the next server is picked afresh when this one is lost).
func (m *connManager) newPass() {
	m.mu.Lock()
	m.pos = len(m.order)
	m.mu.Unlock()
}

// triggerSync schedules a re-registration carrying fresh metadata after
// MetaSyncDelay plus jitter; triggers while one is pending are coalesced.
func (m *connManager) triggerSync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.syncDue {
		return
	}
	m.syncDue = true
	d := m.c.cfg.MetaSyncDelay
	if d > 0 {
		d += rand.N(d)
	}
	m.syncTmr = time.AfterFunc(d, func() {
		m.mu.Lock()
		m.syncDue = false
		m.mu.Unlock()
		select {
		case m.syncCh <- struct{}{}:
		default:
		}
	})
}

func (m *connManager) logDialError(addr string, err error) {
	m.mu.Lock()
	prev := m.lastErrs[addr]
	m.lastErrs[addr] = err.Error()
	m.mu.Unlock()
	if prev == err.Error() {
		m.c.logger.Debug("server still unreachable", "server", addr, "error", err)
		return
	}
	m.c.logger.Warn("cannot reach server", "server", addr, "error", err)
}

// run owns the session until ctx is done.
func (m *connManager) run(ctx context.Context) {
	defer func() {
		m.mu.Lock()
		if m.syncTmr != nil {
			m.syncTmr.Stop()
		}
		m.mu.Unlock()
		m.drains.Wait()
	}()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = m.c.cfg.ReconnectMin
	bo.MaxInterval = m.c.cfg.ReconnectMax
	bo.RandomizationFactor = 0.5
	bo.MaxElapsedTime = 0
	bo.Reset()
	for ctx.Err() == nil {
		addr := m.nextServer()
		registered, err := m.session(ctx, addr, bo)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.logDialError(addr, err)
		}
		wait := bo.NextBackOff()
		if registered {
			// A session that worked was lost: the server died, say, and
			// its other nodes lost theirs in the same instant. The first
			// retry is spread uniformly over [0, 4·ReconnectMin) (full
			// jitter) so that they do not all reach a survivor in the same
			// millisecond; backoff (itself ±50 %) takes over from there.
			wait = rand.N(4*m.c.cfg.ReconnectMin) + time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// dial opens a session to addr and serves the node's endpoints on it.
func (m *connManager) dial(ctx context.Context, addr string) (*link, error) {
	c := m.c
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	sess, err := rpc.Dial(dctx, addr, c.rpcCfg)
	cancel()
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	own, ownCancel := context.WithCancel(ctx)
	l := &link{addr: addr, sess: sess, stop: stop, own: own, ownCancel: ownCancel}
	l.serveWG.Add(1)
	go func() {
		defer l.serveWG.Done()
		_ = sess.Serve(sctx, c.mux)
	}()
	return l, nil
}

// session dials addr, registers and heartbeats until the session ends,
// moving to another server when asked to. It resets bo once registered
// and reports whether it was.
func (m *connManager) session(ctx context.Context, addr string, bo backoff.BackOff) (registered bool, err error) {
	c := m.c
	l, err := m.dial(ctx, addr)
	if err != nil {
		return false, err
	}
	defer func() {
		m.mu.Lock()
		if m.cur == l {
			m.cur = nil
		}
		m.mu.Unlock()
		l.close() // l is the current link, after any move
	}()

	ttl, err := m.registerAdmitted(ctx, l)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	m.cur = l
	delete(m.lastErrs, addr)
	m.mu.Unlock()
	m.newPass()
	select {
	case <-m.moveCh: // asked by a session that is gone: not this one's
	default:
	}
	bo.Reset()
	c.allocs.pullNow() // now that calls go through sess
	m.regOnce.Do(func() { close(m.registered) })
	c.logger.Info("registered with server", "server", addr, "node_id", c.id.NodeID)

	// refusedSince is when this server began refusing heartbeats as
	// unable to write (zero while it takes them).
	var refusedSince time.Time
	for {
		t := time.NewTimer(heartbeatInterval(ttl))
		select {
		case <-ctx.Done():
			t.Stop()
			return true, nil
		case <-l.sess.CloseChan():
			t.Stop()
			c.logger.Warn("server session lost", "server", l.addr)
			return true, nil
		case <-m.syncCh:
			t.Stop()
			if ttl, err = m.registerAdmitted(ctx, l); err != nil {
				return true, err
			}
		case target := <-m.moveCh:
			t.Stop()
			if nl, nttl, ok := m.move(ctx, l, target); ok {
				l, ttl = nl, nttl
			}
		case <-t.C:
			if ttl, err = m.heartbeat(ctx, l.sess); err == nil {
				refusedSince = time.Time{}
			} else {
				var se *rpc.RemoteError
				if errors.As(err, &se) && se.Code == 404 {
					// The server forgot us (e.g. it restarted with empty
					// state): register again on the same session.
					if ttl, err = m.registerAdmitted(ctx, l); err == nil {
						continue
					}
				}
				if serverUnavailable(err) {
					// No cluster leader here right now: the session still
					// routes calls to us; try again soon. Past
					// HeartbeatFailover the server is on the wrong side
					// of a partition rather than in an election: another
					// server that can write takes the node.
					if refusedSince.IsZero() {
						refusedSince = time.Now()
					}
					if time.Since(refusedSince) >= m.failoverAfter() {
						if nl, nttl, ok := m.failover(ctx, l); ok {
							l, ttl, refusedSince = nl, nttl, time.Time{}
							continue
						}
					}
					c.logger.Warn("heartbeat not accepted; keeping the session", "server", l.addr, "error", err)
					ttl = 2 * time.Second
					continue
				}
				return true, err
			}
		}
	}
}

// registerAdmitted registers on l's session until the server takes it:
// a server that says "come back later" (429) is asked again after its
// hint plus jitter; one that cannot write now (no cluster leader) after a
// second or two. Meanwhile a server that knows the node has bound the
// session already, so calls for it work. It gives up when the session
// closes or ctx ends.
func (m *connManager) registerAdmitted(ctx context.Context, l *link) (time.Duration, error) {
	for {
		ttl, err := m.register(ctx, l.sess)
		if err == nil {
			return ttl, nil
		}
		var wait time.Duration
		if hint, ok := structs.RetryAfter(err); ok {
			// Never early (the server may have kept a slot for us at
			// the hint), spread a little past it.
			wait = hint + rand.N(hint/8+20*time.Millisecond)
			m.c.logger.Debug("server admits no session now; coming back later", "server", l.addr, "retry_after", wait)
		} else if serverUnavailable(err) {
			m.c.logger.Warn("registration not accepted yet; retrying on the same server", "server", l.addr, "error", err)
			wait = time.Second + rand.N(time.Second)
		} else {
			return 0, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-l.sess.CloseChan():
			t.Stop()
			return 0, err
		case <-t.C:
		}
	}
}

// moveEndpoint is structs.MethodClientMove: the server the node is
// registered with asks it to move to another server. The node answers at
// once and moves in its own time; only the current session may ask.
func (m *connManager) moveEndpoint(ctx context.Context, req *structs.ClientMoveRequest, resp *structs.GenericResponse) error {
	sess := rpc.SessionFromContext(ctx)
	if sess == nil || sess != m.current() {
		return structs.NewError(403, "only the node's current server may move it")
	}
	if req.Server == "" {
		return structs.BadRequest("missing server")
	}
	if l := m.currentLink(); l != nil && l.addr == req.Server {
		return structs.NewError(409, "node is on that server already")
	}
	// A refusal is not counted as a move asked (the server waits for the
	// moves it counts before it plans again).
	select {
	case m.moveCh <- req.Server:
		return nil
	default:
		return structs.NewError(409, "a move of this node is under way")
	}
}

// move registers on target and makes it the node's session, then
// releases old in the background. It reports false, and the node stays
// on old, when target cannot be dialed or does not take the node within
// moveRegisterTimeout.
func (m *connManager) move(ctx context.Context, old *link, target string) (*link, time.Duration, bool) {
	c := m.c
	if target == old.addr {
		return nil, 0, false
	}
	nl, err := m.dial(ctx, target)
	if err != nil {
		c.logger.Warn("cannot move to server; staying", "server", old.addr, "target", target, "error", err)
		return nil, 0, false
	}
	mctx, cancel := context.WithTimeout(ctx, moveRegisterTimeout)
	ttl, err := m.registerAdmitted(mctx, nl)
	cancel()
	if err != nil {
		nl.close()
		c.logger.Warn("server to move to did not take the node; staying", "server", old.addr, "target", target, "error", err)
		return nil, 0, false
	}
	c.logger.Info("moved to server", "from", old.addr, "server", target, "node_id", c.id.NodeID)
	m.adopt(ctx, old, nl, target)
	return nl, ttl, true
}

// failoverAfter is Config.HeartbeatFailover, zero meaning its default.
func (m *connManager) failoverAfter() time.Duration {
	if d := m.c.cfg.HeartbeatFailover; d > 0 {
		return d
	}
	return 5 * time.Second
}

// failover registers the node with the first other known server that
// takes it, in a fresh random order, and makes that the node's session;
// each is asked once (a server that cannot write either answers "No
// cluster leader" within its hold). It reports false, and the node stays
// on old, when none does.
func (m *connManager) failover(ctx context.Context, old *link) (*link, time.Duration, bool) {
	c := m.c
	cands := m.knownServers()
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	for _, target := range cands {
		if target == old.addr || ctx.Err() != nil {
			continue
		}
		nl, err := m.dial(ctx, target)
		if err != nil {
			c.logger.Debug("failover: cannot reach server", "server", target, "error", err)
			continue
		}
		ttl, err := m.register(ctx, nl.sess)
		if err != nil {
			nl.close()
			c.logger.Debug("failover: server did not take the node", "server", target, "error", err)
			continue
		}
		c.logger.Warn("server refuses heartbeats; failed over", "from", old.addr, "server", target, "refusing_for", m.failoverAfter())
		m.adopt(ctx, old, nl, target)
		return nl, ttl, true
	}
	return nil, 0, false
}

// adopt makes nl, registered on target, the node's session and releases
// old in the background.
func (m *connManager) adopt(ctx context.Context, old, nl *link, target string) {
	m.learnServers([]string{target})
	m.mu.Lock()
	m.cur = nl
	m.last = target
	m.mu.Unlock()
	m.drains.Add(1)
	go func() {
		defer m.drains.Done()
		m.release(ctx, old)
	}()
}

// release gives up old once the node is registered elsewhere: the node's
// own long calls on it end (they go on on the new session), the server is
// told, and once its calls in flight are done it closes the session.
func (m *connManager) release(ctx context.Context, old *link) {
	old.ownCancel()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	req := &structs.NodeReleaseRequest{NodeID: m.c.id.NodeID, SecretID: m.c.id.SecretID}
	err := old.sess.Call(rctx, structs.MethodNodeRelease, req, &structs.GenericResponse{})
	cancel()
	// Idle streams this end keeps would look in use to the draining
	// server.
	old.sess.CloseIdle()
	if err != nil {
		m.c.logger.Debug("releasing old session failed; closing it", "server", old.addr, "error", err)
		old.close()
		return
	}
	t := time.NewTimer(releaseWait)
	select {
	case <-old.sess.CloseChan():
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	old.close()
}

// serverUnavailable reports whether a server answered that it cannot
// take writes now (a 5xx such as "No cluster leader"), as opposed to a
// dead session or a refusal.
func serverUnavailable(err error) bool {
	var se *rpc.RemoteError
	return errors.As(err, &se) && (se.Code == 0 || se.Code >= 500)
}

// heartbeatInterval is when the next heartbeat is due for a TTL the server
// handed out: in [3/4·TTL, TTL]. The server already staggers the TTL (up to
// twice its base) and sizes it so that the fleet heartbeats at about
// max_heartbeats_per_second; heartbeating well before the TTL would
// multiply that rate (half the TTL would double it), and the server's
// grace covers a slow call. Zero or less means 10s, the least a server
// hands out by default.
func heartbeatInterval(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	quarter := ttl / 4
	return ttl - quarter + rand.N(quarter+1)
}

func (m *connManager) register(ctx context.Context, sess *rpc.Session) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var resp structs.NodeRegisterResponse
	if err := sess.Call(cctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: m.c.Node()}, &resp); err != nil {
		return 0, err
	}
	m.learnServers(resp.Servers)
	m.c.allocs.announce(resp.AllocIndex)
	if m.current() == sess {
		// A registration again on the session in use (the node changed,
		// or the server forgot it): pull once, the server's state may be
		// new. The first registration of a session pulls once the
		// session is current (session).
		m.c.allocs.pullNow()
	}
	return resp.HeartbeatTTL, nil
}

func (m *connManager) heartbeat(ctx context.Context, sess *rpc.Session) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var resp structs.NodeHeartbeatResponse
	req := &structs.NodeHeartbeatRequest{NodeID: m.c.id.NodeID, SecretID: m.c.id.SecretID, Status: structs.NodeStatusReady}
	if err := sess.Call(cctx, structs.MethodNodeHeartbeat, req, &resp); err != nil {
		return 0, err
	}
	m.learnServers(resp.Servers)
	m.c.allocs.announce(resp.AllocIndex) // the backstop for a lost push
	return resp.HeartbeatTTL, nil
}

// SetServers replaces the servers the node fails over to (PUT
// /v1/agent/servers). When the node's current server is not among them,
// it moves to one of them as it would when a server asks it to (it
// registers there first and stays put if none takes it). Servers the
// cluster reports later are added again, as after any registration.
func (c *Client) SetServers(addrs []string) {
	m := c.conn
	m.mu.Lock()
	m.servers = append(m.servers[:0:0], addrs...)
	m.pos = len(m.order) // the next dial starts a pass over the new list
	cur := m.cur
	m.mu.Unlock()
	c.logger.Info("server list replaced", "servers", addrs)
	if cur == nil || len(addrs) == 0 {
		return
	}
	for _, a := range addrs {
		if a == cur.addr {
			return
		}
	}
	select {
	case m.moveCh <- addrs[rand.N(len(addrs))]:
	default: // a move is under way already
	}
}
