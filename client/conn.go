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
// servers in turn with backoff and jitter, registers, heartbeats, pushes
// metadata changes, and starts over on another server when the session
// dies.
type connManager struct {
	c *Client

	mu       sync.Mutex
	sess     *rpc.Session
	servers  []string
	next     int
	syncDue  bool
	syncTmr  *time.Timer
	lastErrs map[string]string // addr → last error logged, to log a repeat once

	syncCh     chan struct{}
	registered chan struct{}
	regOnce    sync.Once
}

func newConnManager(c *Client) *connManager {
	return &connManager{
		c:          c,
		servers:    append([]string(nil), c.cfg.Servers...),
		syncCh:     make(chan struct{}, 1),
		registered: make(chan struct{}),
		lastErrs:   make(map[string]string),
	}
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
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sess
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

func (m *connManager) nextServer() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	addr := m.servers[m.next%len(m.servers)]
	m.next++
	return addr
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
	}()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = m.c.cfg.ReconnectMin
	bo.MaxInterval = m.c.cfg.ReconnectMax
	bo.RandomizationFactor = 0.5
	bo.MaxElapsedTime = 0
	bo.Reset()
	for ctx.Err() == nil {
		addr := m.nextServer()
		err := m.session(ctx, addr, bo)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.logDialError(addr, err)
		}
		wait := bo.NextBackOff()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session dials addr, registers and heartbeats until the session ends. It
// resets bo once registered.
func (m *connManager) session(ctx context.Context, addr string, bo backoff.BackOff) error {
	c := m.c
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	sess, err := rpc.Dial(dctx, addr, c.rpcCfg)
	cancel()
	if err != nil {
		return err
	}
	sctx, scancel := context.WithCancel(ctx)
	var serveWG sync.WaitGroup
	serveWG.Add(1)
	go func() {
		defer serveWG.Done()
		_ = sess.Serve(sctx, c.mux)
	}()
	defer func() {
		m.mu.Lock()
		if m.sess == sess {
			m.sess = nil
		}
		m.mu.Unlock()
		scancel()
		sess.Close()
		serveWG.Wait()
	}()

	ttl, err := m.register(ctx, sess)
	for err != nil && serverUnavailable(err) {
		// The server is up but cannot write (no cluster leader). It has
		// bound the session already when it knows us, so keep it: calls
		// for this node work through the servers meanwhile.
		c.logger.Warn("registration not accepted yet; retrying on the same server", "server", addr, "error", err)
		t := time.NewTimer(time.Second + rand.N(time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-sess.CloseChan():
			t.Stop()
			return err
		case <-t.C:
		}
		ttl, err = m.register(ctx, sess)
	}
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.sess = sess
	delete(m.lastErrs, addr)
	m.mu.Unlock()
	bo.Reset()
	c.allocs.pullNow() // now that calls go through sess
	m.regOnce.Do(func() { close(m.registered) })
	c.logger.Info("registered with server", "server", addr, "node_id", c.id.NodeID)

	for {
		t := time.NewTimer(heartbeatInterval(ttl))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-sess.CloseChan():
			t.Stop()
			c.logger.Warn("server session lost", "server", addr)
			return nil
		case <-m.syncCh:
			t.Stop()
			if ttl, err = m.register(ctx, sess); err != nil {
				return err
			}
		case <-t.C:
			if ttl, err = m.heartbeat(ctx, sess); err != nil {
				var se *rpc.RemoteError
				if errors.As(err, &se) && se.Code == 404 {
					// The server forgot us (e.g. it restarted with empty
					// state): register again on the same session.
					if ttl, err = m.register(ctx, sess); err == nil {
						continue
					}
				}
				if serverUnavailable(err) {
					// No cluster leader right now: the session still
					// routes calls to us; try again soon.
					c.logger.Warn("heartbeat not accepted; keeping the session", "server", addr, "error", err)
					ttl = 2 * time.Second
					continue
				}
				return err
			}
		}
	}
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
