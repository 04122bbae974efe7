package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Server accepts TCP connections on a server agent's RPC port and
// dispatches each on its first byte (see the Byte constants).
type Server struct {
	// OnSession, if set before Serve, is called for every multiplexed
	// session accepted, in the connection's goroutine, before the
	// session's accept loop starts. The server then serves its Mux on the
	// session until the session closes. OnSession should return quickly;
	// use SessionFromContext in handlers and Session.CloseChan to follow
	// the session's life.
	OnSession func(*Session)

	cfg    *Config
	cfgErr error
	mux    *Mux
	logger hclog.Logger

	mu    sync.Mutex
	perIP map[string]int

	data     dataWaiters     // tokens of expected data connections
	pool     dataPool        // data connections that carry data calls
	serveCtx context.Context // Serve's context: idle data connections end with it

	// handshakes holds a slot per TLS handshake running
	// (Config.MaxConcurrentHandshakes); nil means unlimited.
	handshakes chan struct{}
}

// NewServer returns a Server that serves mux. A nil cfg means
// DefaultConfig(); an invalid one makes Serve fail.
func NewServer(cfg *Config, mux *Mux) *Server {
	n, err := cfg.normalize()
	if err != nil {
		n, _ = (*Config)(nil).normalize()
	}
	if mux == nil {
		mux = NewMux()
	}
	s := &Server{
		cfg:    n,
		cfgErr: err,
		mux:    mux,
		logger: n.Logger,
		perIP:  make(map[string]int),
	}
	s.pool.idle = n.DataPoolIdle
	if n.Counters == nil {
		n.Counters = new(Counters)
	}
	if n.MaxConcurrentHandshakes > 0 {
		s.handshakes = make(chan struct{}, n.MaxConcurrentHandshakes)
	}
	return s
}

// Serve accepts connections on ln and serves each in its own goroutine
// until ctx ends or ln is closed; it closes ln when ctx ends. Before it
// returns, every connection and session it accepted is closed and their
// goroutines have exited. It returns nil on a clean stop and the accept
// error otherwise.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfgErr != nil {
		return fmt.Errorf("rpc: invalid config: %w", s.cfgErr)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel() // closes every connection and session below
		s.pool.close()
		wg.Wait()
	}()
	s.mu.Lock()
	s.serveCtx = ctx
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off as
				// net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger.Error("accept failed; retrying", "error", err, "delay", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil
				}
				continue
			}
			return fmt.Errorf("rpc: accept: %w", err)
		}
		backoff = 0
		ip := remoteIP(conn)
		if !s.acquireIP(ip) {
			s.cfg.Counters.connOverLimit()
			s.logger.Warn("rejecting client for exceeding maximum RPC connections",
				"remote", conn.RemoteAddr().String(), "limit", s.cfg.MaxConnsPerIP)
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { s.releaseIP(ip) }) }
			if !s.serveConn(ctx, conn, release) {
				release()
			}
		}()
	}
}

// remoteIP returns the IP text of conn's peer, or the whole address when
// it has no port.
func remoteIP(conn net.Conn) string {
	addr := conn.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// acquireIP counts a connection from ip against MaxConnsPerIP.
func (s *Server) acquireIP(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit := s.cfg.MaxConnsPerIP; limit > 0 && s.perIP[ip] >= limit {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *Server) releaseIP(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip] <= 1 {
		delete(s.perIP, ip)
	} else {
		s.perIP[ip]--
	}
}

// ServeConn serves one connection and returns when it is done or ctx ends
// (which closes it). The first byte must arrive within HandshakeTimeout:
// ByteRPC serves sequential unary requests on the raw connection,
// ByteStreaming one streaming call, ByteMultiplex a session (see
// OnSession), ByteTLS a TLS handshake followed by another first byte (TLS
// inside TLS is refused), ByteRaft hands the connection to RaftHandler.
// Any other byte is logged and the connection closed.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) {
	s.serveConn(ctx, conn, nil)
}

// serveConn is ServeConn. release, if set, gives back the connection's
// slot of MaxConnsPerIP; a data connection, which outlives serveConn (a
// transfer, then the pool), takes it along and calls it when closed, and
// serveConn then reports true: the caller must not release the slot.
func (s *Server) serveConn(ctx context.Context, conn net.Conn, release func()) (slotTaken bool) {
	handedOff := false
	defer func() {
		if !handedOff {
			conn.Close()
		}
	}()
	if s.cfgErr != nil {
		s.logger.Error("refusing connection: invalid config", "error", s.cfgErr)
		return
	}
	raw := conn
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	setTCPOptions(conn, s.cfg.TCPKeepAlive)
	logger := s.logger.With("remote", conn.RemoteAddr().String())

	isTLS := false
	for {
		conn.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			s.cfg.Counters.handshakeRefused()
			logger.Debug("connection sent no protocol byte", "error", err)
			return
		}
		if b[0] == ByteTLS {
			tconn, err := s.serverTLS(ctx, conn, isTLS)
			if err != nil {
				s.cfg.Counters.handshakeRefused()
				logger.Warn("refusing TLS connection", "error", err)
				lingerClose(raw, s.cfg.HandshakeTimeout)
				return
			}
			conn, isTLS = tconn, true
			continue
		}
		if s.cfg.TLSConfig != nil && !isTLS && !s.cfg.TLSUpgradeMode {
			s.cfg.Counters.handshakeRefused()
			logger.Warn("refusing non-TLS connection: TLS is required", "byte", fmt.Sprintf("0x%02x", b[0]))
			return
		}
		switch b[0] {
		case ByteRPC:
			serveUnary(ctx, conn, s.mux, nil, s.cfg, logger)
		case ByteStreaming:
			serveStreaming(ctx, conn, bufio.NewReaderSize(conn, readBufferSize), s.mux, nil, s.cfg, logger)
		case ByteMultiplex:
			s.serveSession(ctx, conn)
		case ByteData:
			if s.serveData(conn, release) {
				handedOff = true // the expecting side owns and closes it
				slotTaken = release != nil
			}
		case ByteRaft:
			if s.cfg.RaftHandler == nil {
				s.cfg.Counters.handshakeRefused()
				logger.Warn("refusing raft connection: no raft handler")
				return
			}
			if err := s.verifyRaftPeer(conn); err != nil {
				s.cfg.Counters.handshakeRefused()
				logger.Warn("refusing raft connection", "error", err)
				return
			}
			if !stop() {
				return // ctx ended: the connection is closed
			}
			conn.SetDeadline(time.Time{})
			handedOff = true
			s.cfg.RaftHandler(conn)
		default:
			s.cfg.Counters.handshakeRefused()
			logger.Warn("unrecognized RPC byte", "error", ErrUnknownProtocol, "byte", fmt.Sprintf("0x%02x", b[0]))
		}
		return
	}
}

// serverTLS runs the server side of a TLS handshake on conn.
func (s *Server) serverTLS(ctx context.Context, conn net.Conn, isTLS bool) (net.Conn, error) {
	if s.cfg.TLSConfig == nil {
		return nil, errors.New("TLS is not configured")
	}
	if isTLS {
		return nil, errors.New("TLS inside TLS")
	}
	conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	tconn := tls.Server(NewRecordBatcher(conn), s.cfg.TLSConfig)
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	if s.handshakes != nil {
		select {
		case s.handshakes <- struct{}{}:
			defer func() { <-s.handshakes }()
		case <-hctx.Done():
			return nil, fmt.Errorf("waiting for a TLS handshake slot: %w", hctx.Err())
		}
	}
	if err := handshakeApart(hctx, tconn); err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return tconn, nil
}

// serveSession runs the server end of a multiplexed session.
func (s *Server) serveSession(ctx context.Context, conn net.Conn) {
	conn.SetDeadline(time.Time{})
	fc := coalesceFrames(conn, s.cfg)
	ys, err := yamux.Server(fc, s.cfg.yamuxSession)
	if err != nil {
		s.logger.Error("starting session failed", "error", err)
		return
	}
	sess := wrapSession(ys, fc, s.cfg)
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	sess.logger.Debug("session accepted")
	if s.OnSession != nil {
		s.OnSession(sess)
	}
	err = sess.Serve(ctx, s.mux)
	sess.logger.Debug("session ended", "error", err)
}
