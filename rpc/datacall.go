package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Data calls (spec.md, section 1). A data connection whose transfer ended
// exactly at its length is not closed: the server pools it under the node
// it came from (PoolData), and the node waits on it for the server's next
// request (ServeDataCalls). A data call is a unary request, header and
// args; the answer is a response header and, on success, the reply and
// then exactly the raw bytes the reply announces. A bulk read then costs
// each side one write and one read ahead of the bytes, instead of a stream
// (open, handshake, header, trailer, close, and a goroutine each side) and
// a token exchange.

const (
	// maxPooledData bounds the pooled data connections of one node on a
	// server.
	maxPooledData = 16

	// dataPoolIdle is how long a server keeps a pooled data connection.
	dataPoolIdle = 20 * time.Second

	// DataServeIdle is how long a node waits for a data call on a
	// connection before it closes it: longer than dataPoolIdle, so that
	// the server, which starts calls, lets go first.
	DataServeIdle = 30 * time.Second
)

// ErrDataConnLost is what CallData returns when the connection failed
// before the node answered: the node closed it (idle, shut down), or it
// broke. Nothing was done; the caller makes the call another way.
var ErrDataConnLost = errors.New("rpc: data connection lost")

// dataPool holds pooled data connections by node.
type dataPool struct {
	mu     sync.Mutex
	m      map[string][]pooledData
	sweeps map[string]*time.Timer
	closed bool
}

type pooledData struct {
	conn  net.Conn
	since time.Time
}

// PoolData keeps conn, a data connection from the node key whose transfer
// ended exactly at its length, for data calls (TakeData). It is closed
// after dataPoolIdle unused, when the pool of key is full, on DropData,
// and when Serve ends.
func (s *Server) PoolData(key string, conn net.Conn) {
	p := &s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.m[key]) >= maxPooledData {
		conn.Close()
		return
	}
	if p.m == nil {
		p.m = make(map[string][]pooledData)
		p.sweeps = make(map[string]*time.Timer)
	}
	p.m[key] = append(p.m[key], pooledData{conn: conn, since: time.Now()})
	if p.sweeps[key] == nil {
		p.sweeps[key] = time.AfterFunc(dataPoolIdle, func() { p.sweep(key) })
	}
}

// TakeData returns the most recently pooled data connection of key, or
// nil. The caller makes a data call on it (CallData) and pools it again
// or closes it.
func (s *Server) TakeData(key string) net.Conn {
	p := &s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.m[key]
	for len(list) > 0 {
		last := list[len(list)-1]
		list = list[:len(list)-1]
		p.m[key] = list
		if time.Since(last.since) < dataPoolIdle {
			return last.conn
		}
		last.conn.Close()
	}
	return nil
}

// DropData closes the pooled data connections of key: its node went away.
func (s *Server) DropData(key string) {
	p := &s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(key)
}

// PooledData returns how many data connections key has pooled.
func (s *Server) PooledData(key string) int {
	p := &s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m[key])
}

func (p *dataPool) dropLocked(key string) {
	for _, pd := range p.m[key] {
		pd.conn.Close()
	}
	delete(p.m, key)
	if t := p.sweeps[key]; t != nil {
		t.Stop()
		delete(p.sweeps, key)
	}
}

// sweep closes the connections of key that idled out, and comes back
// while any are left.
func (p *dataPool) sweep(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sweeps, key)
	list := p.m[key]
	kept := list[:0]
	for _, pd := range list {
		if time.Since(pd.since) < dataPoolIdle {
			kept = append(kept, pd)
		} else {
			pd.conn.Close()
		}
	}
	if len(kept) == 0 {
		delete(p.m, key)
		return
	}
	p.m[key] = kept
	if !p.closed {
		p.sweeps[key] = time.AfterFunc(dataPoolIdle-time.Since(kept[0].since), func() { p.sweep(key) })
	}
}

// close closes every pooled connection; later ones are closed as pooled.
func (p *dataPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for key := range p.m {
		p.dropLocked(key)
	}
}

// CallData makes a data call of method on conn, a pooled data connection
// (TakeData), bounded by ctx and the server's Config.CallTimeout up to
// the reply. On success reply is filled and the raw bytes follow: head
// holds those already read (at most a few KiB), the rest is read from
// conn itself, so that it can be spliced. A *RemoteError is the node's answer (conn stays
// usable: pool it again); an error matching ErrDataConnLost means the node
// answered nothing, and any other error that the exchange broke. On an
// error other than a *RemoteError the caller closes conn.
func (s *Server) CallData(ctx context.Context, conn net.Conn, method string, args, reply any) (head []byte, err error) {
	cfg := s.cfg
	dl := callDeadline(ctx, cfg.CallTimeout)
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	hdr := requestHeader{Method: method, Seq: 1, Timeout: encodeTimeout(dl, true)}
	if err := e.appendFrame(kindData, &hdr, cfg.MaxMessageSize); err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", method, err)
	}
	if err := e.appendFrame(kindData, args, cfg.MaxMessageSize); err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", method, err)
	}
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(pastTime) })
	defer stop()

	br := getReader(conn)
	defer putReader(br)
	var rh responseHeader
	if _, err = WriteData(conn, e.bytes()); err == nil {
		err = readDataFrame(br, cfg.MaxMessageSize, &rh)
	}
	if err != nil {
		if callEnded(ctx, dl) {
			return nil, callError(ctx, dl, nil, method, err)
		}
		return nil, fmt.Errorf("rpc: %s: %w: %w", method, ErrDataConnLost, err)
	}
	if rerr := remoteFromWire(rh.Error, rh.Code); rerr != nil {
		conn.SetDeadline(time.Time{})
		return nil, rerr
	}
	if err := readDataFrame(br, cfg.MaxMessageSize, reply); err != nil {
		return nil, callError(ctx, dl, nil, method, err)
	}
	if !stop() {
		return nil, callError(ctx, dl, nil, method, ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	if n := br.Buffered(); n > 0 {
		head = make([]byte, n)
		io.ReadFull(br, head) // buffered: cannot fail
	}
	return head, nil
}

// DataHandler answers one data call of method. It decodes the args with
// decode; then either it returns an error without calling reply, which
// is sent as the call's error (the connection stays usable), or it calls
// reply with its reply, which writes it and returns the connection, then
// writes exactly the raw bytes the reply announces there and returns nil.
// An error once reply was called ends the connection, so that the server
// sees a short transfer.
type DataHandler func(ctx context.Context, method string, decode func(v any) error, reply func(v any) (net.Conn, error)) error

// ServeDataCalls answers data calls on conn, a data connection the node
// made whose transfer ended exactly at its length, until the server
// closes it, DataServeIdle passes without a call, ctx ends or a call
// fails. It closes conn. Handlers get a context derived from ctx and
// bounded by the call's timeout.
func ServeDataCalls(ctx context.Context, conn net.Conn, cfg *Config, h DataHandler) {
	defer conn.Close()
	cfg, err := cfg.normalize()
	if err != nil {
		return
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := getReader(conn)
	defer putReader(br)
	for {
		conn.SetReadDeadline(time.Now().Add(DataServeIdle))
		var hdr requestHeader
		if err := readDataFrame(br, cfg.MaxMessageSize, &hdr); err != nil {
			if !errors.Is(err, io.EOF) && !timedOut(err) && ctx.Err() == nil {
				logger.Debug("reading data call failed", "error", err)
			}
			return
		}
		conn.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
		kind, body, err := readFrame(br, cfg.MaxMessageSize)
		if err != nil || kind != kindData {
			logger.Debug("reading data call args failed", "method", hdr.Method, "error", err)
			return
		}
		conn.SetReadDeadline(time.Time{})
		if !serveDataCall(ctx, conn, cfg, logger, h, &hdr, body) {
			return
		}
	}
}

// serveDataCall runs one data call and reports whether the connection
// can take another.
func serveDataCall(ctx context.Context, conn net.Conn, cfg *Config, logger hclog.Logger, h DataHandler, hdr *requestHeader, body []byte) bool {
	hctx, cancel := handlerContext(ctx, nil, hdr.Timeout)
	defer cancel()
	if dl, ok := hctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	replied := false
	reply := func(v any) (net.Conn, error) {
		if replied {
			return nil, errors.New("rpc: data call answered twice")
		}
		replied = true
		e := getEncoder()
		defer putEncoder(e)
		e.reset()
		err := e.appendFrame(kindData, &responseHeader{Seq: hdr.Seq}, cfg.MaxMessageSize)
		if err == nil {
			err = e.appendFrame(kindData, v, cfg.MaxMessageSize)
		}
		if err == nil {
			_, err = WriteData(conn, e.bytes())
		}
		if err != nil {
			return nil, err
		}
		return conn, nil
	}
	herr := runDataHandler(hctx, logger, h, hdr.Method, body, reply)
	switch {
	case replied && herr != nil:
		if hctx.Err() == nil {
			logger.Debug("data call ended with error", "method", hdr.Method, "error", herr)
		}
		return false
	case !replied && herr == nil:
		herr = &RemoteError{Code: 500, Message: fmt.Sprintf("rpc: handler for %q sent no reply", hdr.Method)}
		fallthrough
	case !replied:
		if writeResponse(conn, cfg, hdr.Seq, herr, nil) != nil {
			return false
		}
	}
	conn.SetWriteDeadline(time.Time{})
	return true
}

// runDataHandler runs h, turning a panic into an error.
func runDataHandler(ctx context.Context, logger hclog.Logger, h DataHandler, method string, body []byte, reply func(any) (net.Conn, error)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			logger.Error("data call handler panicked", "method", method, "panic", p)
			err = &RemoteError{Code: 500, Message: fmt.Sprintf("rpc: handler for %q panicked", method)}
		}
	}()
	return h(ctx, method, func(v any) error { return decode(body, v) }, reply)
}

// timedOut reports whether err is a deadline's.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
