package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// defaultIdleTimeout is how long a pooled session may carry no stream
// before it is closed (Nomad's serverRPCCache).
const defaultIdleTimeout = 2 * time.Minute

// Pool keeps one session per remote address, for server-to-server
// forwarding. Only one dial per address runs at a time; concurrent callers
// wait for it. Dead sessions are evicted and redialled on next use, and
// sessions that carried no stream for IdleTimeout are closed by a goroutine
// the pool owns.
type Pool struct {
	// IdleTimeout is how long a session may stay without streams before
	// it is closed. Zero means 2 minutes. Set it before first use.
	IdleTimeout time.Duration

	// Mux, if set before first use, is served on every session the pool
	// dials, so the remote end can call back. nil serves no methods: a
	// stream the remote opens is still accepted (yamux would otherwise
	// close the whole session once the stream's open times out) and gets
	// ErrUnknownMethod.
	Mux *Mux

	// DialWait, if positive, is the longest a caller waits for a dial of
	// an address with no live session (the dial goes on, bounded by
	// Config.DialTimeout, for the callers after it). A peer that went
	// silent then costs a caller DialWait rather than the whole
	// DialTimeout. Zero waits for the dial (or ctx). Set it before first
	// use.
	DialWait time.Duration

	cfg    *Config
	cfgErr error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[string]*poolEntry
	dialing  map[string]*poolDial
	reaper   bool // the reaper goroutine runs

	// now is the clock; tests may replace it.
	now func() time.Time
}

// poolEntry is a pooled session and when it was last used.
type poolEntry struct {
	sess     *Session
	lastUsed atomic.Int64 // unix nanoseconds
}

// poolDial is a dial in progress; done is closed when sess/err are set.
type poolDial struct {
	done chan struct{}
	sess *Session
	err  error
}

// NewPool returns an empty pool dialing with cfg (nil means
// DefaultConfig()). An invalid cfg makes every dial fail.
func NewPool(cfg *Config) *Pool {
	n, err := cfg.normalize()
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{
		cfg:      n,
		cfgErr:   err,
		ctx:      ctx,
		cancel:   cancel,
		sessions: make(map[string]*poolEntry),
		dialing:  make(map[string]*poolDial),
		now:      time.Now,
	}
}

// Session returns a live session to addr, dialing one if needed. The dial
// runs on the pool's behalf (bounded by Config.DialTimeout), so a caller
// whose ctx ends stops waiting without failing the other waiters.
func (p *Pool) Session(ctx context.Context, addr string) (*Session, error) {
	if p.cfgErr != nil {
		return nil, fmt.Errorf("rpc: invalid config: %w", p.cfgErr)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrPoolClosed
	}
	if e := p.sessions[addr]; e != nil {
		if !e.sess.IsClosed() {
			e.lastUsed.Store(p.now().UnixNano())
			p.mu.Unlock()
			return e.sess, nil
		}
		delete(p.sessions, addr)
	}
	d := p.dialing[addr]
	if d == nil {
		d = &poolDial{done: make(chan struct{})}
		p.dialing[addr] = d
		p.wg.Add(1)
		go p.dial(addr, d)
	}
	p.mu.Unlock()

	var waited <-chan time.Time
	if p.DialWait > 0 {
		t := time.NewTimer(p.DialWait)
		defer t.Stop()
		waited = t.C
	}
	select {
	case <-d.done:
		return d.sess, d.err
	case <-ctx.Done():
		return nil, fmt.Errorf("rpc: dial %s: %w", addr, ctxError(ctx))
	case <-waited:
		return nil, fmt.Errorf("rpc: dial %s: no session after %v: %w", addr, p.DialWait, ErrTimeout)
	}
}

// dial is the one dial of addr in progress.
func (p *Pool) dial(addr string, d *poolDial) {
	defer p.wg.Done()
	sess, err := Dial(p.ctx, addr, p.cfg)

	p.mu.Lock()
	delete(p.dialing, addr)
	if err == nil && p.closed {
		sess.Close()
		sess, err = nil, ErrPoolClosed
	}
	if err == nil {
		e := &poolEntry{sess: sess}
		e.lastUsed.Store(p.now().UnixNano())
		p.sessions[addr] = e
		mux := p.Mux
		if mux == nil {
			mux = NewMux()
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			sess.Serve(p.ctx, mux)
		}()
		if !p.reaper {
			p.reaper = true
			p.wg.Add(1)
			go p.reap()
		}
	}
	d.sess, d.err = sess, err
	p.mu.Unlock()
	close(d.done)
}

// evict drops sess from the pool, if it is still the entry for addr, and
// closes it.
func (p *Pool) evict(addr string, sess *Session) {
	p.mu.Lock()
	if e := p.sessions[addr]; e != nil && e.sess == sess {
		delete(p.sessions, addr)
	}
	p.mu.Unlock()
	sess.Close()
}

// touch marks the session to addr as used now.
func (p *Pool) touch(addr string, sess *Session) {
	p.mu.Lock()
	if e := p.sessions[addr]; e != nil && e.sess == sess {
		e.lastUsed.Store(p.now().UnixNano())
	}
	p.mu.Unlock()
}

// Call calls method on the server at addr. If no stream could be opened
// because the pooled session had died, it evicts the session, redials once
// and retries; a session that dies mid-call is evicted and the error
// returned (the call may have run).
func (p *Pool) Call(ctx context.Context, addr, method string, args, reply any) error {
	for attempt := 0; ; attempt++ {
		sess, err := p.Session(ctx, addr)
		if err != nil {
			return err
		}
		opened, err := sess.call(ctx, method, args, reply)
		p.touch(addr, sess)
		if err == nil || !errors.Is(err, ErrSessionClosed) {
			return err
		}
		p.evict(addr, sess)
		if opened || attempt > 0 {
			return err
		}
	}
}

// OpenStream starts a streaming call of method on the server at addr, with
// the same redial-once rule as Call. The stream counts as activity on the
// session until it is closed.
func (p *Pool) OpenStream(ctx context.Context, addr, method string, args any) (*Stream, error) {
	for attempt := 0; ; attempt++ {
		sess, err := p.Session(ctx, addr)
		if err != nil {
			return nil, err
		}
		st, opened, err := sess.openStream(ctx, method, args)
		p.touch(addr, sess)
		if err == nil || !errors.Is(err, ErrSessionClosed) {
			return st, err
		}
		p.evict(addr, sess)
		if opened || attempt > 0 {
			return nil, err
		}
	}
}

// reap closes sessions that carried no stream for IdleTimeout, and drops
// dead ones, until the pool closes.
func (p *Pool) reap() {
	defer p.wg.Done()
	idle := p.IdleTimeout
	if idle <= 0 {
		idle = defaultIdleTimeout
	}
	t := time.NewTicker(max(idle/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		now := p.now()
		var stale []*Session
		p.mu.Lock()
		for addr, e := range p.sessions {
			switch {
			case e.sess.IsClosed():
				delete(p.sessions, addr)
			case e.sess.streamsInUse() > 0:
				// In use: a stream open now counts as use; the unary
				// streams kept idle for reuse do not, or a session that
				// ever made a call would never idle out.
				e.lastUsed.Store(now.UnixNano())
			case now.Sub(time.Unix(0, e.lastUsed.Load())) >= idle:
				delete(p.sessions, addr)
				stale = append(stale, e.sess)
			}
		}
		p.mu.Unlock()
		for _, s := range stale {
			s.Close()
		}
	}
}

// Close closes every session and stops the pool's goroutines. Later calls
// fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	sessions := p.sessions
	p.sessions = make(map[string]*poolEntry)
	p.mu.Unlock()

	p.cancel()
	for _, e := range sessions {
		e.sess.Close()
	}
	p.wg.Wait()
	return nil
}
