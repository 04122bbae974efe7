package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// A dial is confirmed before Dial returns (2026-11, with TLS).
//
// With TLS 1.3 the client's handshake completes before the server has
// looked at the client's certificate: a server that refuses a node's
// certificate (another CA, wrong role) answers with an alert only after
// Dial would have returned, and a server that requires TLS just closes a
// plaintext connection. Without a confirmation the refusal surfaces later,
// as "session closed" on whichever call comes first, with a text that
// varies from attempt to attempt (so a caller cannot log a repeated
// refusal once) and with yamux logging an error of its own every time.
//
// So Dial sends one yamux ping (a standard frame every yamux peer,
// Nomad's included, answers) and waits for the answer. If the session dies
// instead, Dial fails with ErrRefused and the cause: the TLS alert the
// server sent ("remote error: tls: unknown certificate authority") or
// "the server closed the connection". Until the ping is answered, yamux's
// own complaints about the failing connection are logged at Debug.

// dialConn is the connection under a dialled session. It records the
// first read error, the cause a refused dial reports.
type dialConn struct {
	net.Conn
	mu    sync.Mutex
	cause error
}

// NetConn returns the connection under the wrapper.
func (c *dialConn) NetConn() net.Conn { return c.Conn }

// Read reads from the connection, recording the first error.
func (c *dialConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.cause == nil {
			c.cause = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// writeConn lets the frame coalescer write to the connection itself (TCP
// or TLS), so writev and record batching apply under a dialled session.
func (c *dialConn) writeConn() net.Conn { return c.Conn }

// readErr returns the first read error, if any.
func (c *dialConn) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// dialLogger is the yamux logger of a dialled session: Debug until the
// session is confirmed, the configured logger after.
type dialLogger struct {
	confirmed atomic.Bool
	normal    yamux.Logger
	quiet     hclog.Logger
}

func (l *dialLogger) Print(v ...any)                 { l.out(fmt.Sprint(v...)) }
func (l *dialLogger) Printf(format string, v ...any) { l.out(fmt.Sprintf(format, v...)) }
func (l *dialLogger) Println(v ...any)               { l.out(fmt.Sprintln(v...)) }

func (l *dialLogger) out(s string) {
	if l.confirmed.Load() {
		l.normal.Print(s)
		return
	}
	l.quiet.Debug("while dialing: " + strings.TrimSpace(s))
}

// dialSession starts the client end of a session on conn (already
// connected, TLS done) and confirms it with a ping, within ctx. On error
// the session and conn are closed.
func dialSession(ctx context.Context, conn net.Conn, cfg *Config, isTLS bool) (*Session, error) {
	dc := &dialConn{Conn: conn}
	y := cfg.Yamux.Clone()
	normal := y.Logger
	if normal == nil {
		normal = log.New(y.LogOutput, "", log.LstdFlags)
	}
	dl := &dialLogger{normal: normal, quiet: cfg.Logger.Named("yamux")}
	y.Logger, y.LogOutput = dl, nil
	scfg := *cfg
	scfg.Yamux = y
	scfg.yamuxSession = y.Clone()
	scfg.yamuxSession.EnableKeepAlive = false // the session's own (keepalive.go)

	deadline, _ := ctx.Deadline()
	sess, err := newClientSession(dc, &scfg, deadline)
	if err != nil {
		return nil, err
	}
	if err := confirmSession(ctx, sess, dc, isTLS); err != nil {
		sess.Close()
		return nil, err
	}
	dl.confirmed.Store(true)
	return sess, nil
}

// confirmSession pings the server and waits for the answer, or for ctx.
func confirmSession(ctx context.Context, sess *Session, dc *dialConn, isTLS bool) error {
	done := make(chan error, 1)
	go func() {
		_, err := sess.ys.Ping()
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
		return refusal(dc.readErr(), err, isTLS)
	case <-ctx.Done():
		sess.Close() // ends the ping
		<-done
		return fmt.Errorf("waiting for the server to answer: %w", ctxError(ctx))
	}
}

// refusal is the error of a session the server closed before answering
// the first ping. The text is the same for every attempt against the same
// refusal, so callers can log a repeat once.
func refusal(readErr, pingErr error, isTLS bool) error {
	cause := readErr
	if cause == nil {
		cause = pingErr
	}
	switch {
	case errors.Is(cause, yamux.ErrTimeout):
		return fmt.Errorf("no answer from the server: %w", ErrTimeout)
	case isConnClosed(cause):
		msg := "the server closed the connection"
		if !isTLS {
			msg += " (does it require TLS?)"
		}
		return fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	return fmt.Errorf("%w: %w", ErrRefused, cause)
}

// isConnClosed reports whether err says only that the connection ended
// (in one of the ways an abrupt close shows up), not why.
func isConnClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, yamux.ErrSessionShutdown) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// lingerMax bounds how long lingerClose waits for the peer.
const lingerMax = time.Second

// lingerClose closes the sending side of a refused connection and reads
// (discarding) until the peer closes, for at most min(timeout, lingerMax),
// before the caller closes it. Closing at once, with the peer's bytes
// still unread (a TLS client sends its first protocol byte right after
// its handshake flight), makes the kernel reset the connection, and a
// reset can destroy the TLS alert just sent: the peer would see
// "connection reset" instead of why it was refused.
func lingerClose(conn net.Conn, timeout time.Duration) {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	if err := cw.CloseWrite(); err != nil {
		return
	}
	conn.SetReadDeadline(time.Now().Add(min(timeout, lingerMax)))
	io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
}

// handshakeApart runs c's TLS handshake on a goroutine of its own and
// waits for it. The handshake's crypto grows a stack to 16 KiB or more;
// the goroutine that asked goes on to serve or keep the session for as
// long as the node stays, where the runtime would only halve that stack
// now and then (about 4 KiB per session on a server, measured by
// BenchmarkIdleSessionCost). The handshake's goroutine ends with it.
func handshakeApart(ctx context.Context, c *tls.Conn) error {
	errc := make(chan error, 1)
	go func() { errc <- c.HandshakeContext(ctx) }()
	return <-errc
}
