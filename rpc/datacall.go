package rpc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Data calls (spec.md, section 1). A data connection whose transfer ended
// exactly at its length is not closed: the server pools it under the node
// it came from (PoolData), and the node waits on it for the server's next
// request (ServeDataCalls). A data call is a unary call of a bulk method
// (HandleBulk), made and answered by the unary code: a request header and
// args; a response header and, on success, the reply, and then exactly the
// raw bytes the reply announces. A bulk read then costs
// each side one write and one read ahead of the bytes, instead of a stream
// (open, handshake, header, trailer, close, and a goroutine each side) and
// a token exchange.

const (
	// dataPoolShards is how many locks the pool is split over, by node:
	// every bulk read takes a connection and gives it back, and one lock
	// for all nodes would serialise them on a many-core server.
	dataPoolShards = 32
)

// ErrDataConnLost is what CallData returns when the connection failed
// before the node answered: the node closed it (idle, shut down), or it
// broke. Nothing was done; the caller makes the call another way.
var ErrDataConnLost = errors.New("rpc: data connection lost")

// dataPool holds pooled data connections by node, bounded per node
// (Config.MaxPooledDataPerNode) and over all nodes (Config.MaxPooledData).
type dataPool struct {
	idle   time.Duration // Config.DataPoolIdle
	shards [dataPoolShards]dataPoolShard
	total  atomic.Int64 // pooled connections, all shards
}

// dataPoolShard is the part of the pool of the nodes whose key hashes to
// it.
type dataPoolShard struct {
	mu     sync.Mutex
	m      map[string][]pooledData
	sweeps map[string]*time.Timer
	closed bool
}

type pooledData struct {
	conn  net.Conn
	since time.Time
}

// shard returns the shard of key.
func (p *dataPool) shard(key string) *dataPoolShard {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &p.shards[h.Sum32()%dataPoolShards]
}

// reserve counts one more pooled connection, if fewer than max are.
func (p *dataPool) reserve(max int) bool {
	for {
		n := p.total.Load()
		if max > 0 && n >= int64(max) {
			return false
		}
		if p.total.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// PoolData keeps conn, a data connection from the node key whose transfer
// ended exactly at its length, for data calls (TakeData). It is closed
// after Config.DataPoolIdle unused, when the pool of key or of the server is full
// (Config.MaxPooledDataPerNode, MaxPooledData), on DropData, and when
// Serve ends. While pooled, conn holds its slot of Config.MaxConnsPerIP
// (the slot is released when it is closed).
func (s *Server) PoolData(key string, conn net.Conn) {
	p := &s.pool
	sh := p.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.closed || len(sh.m[key]) >= s.cfg.MaxPooledDataPerNode || !p.reserve(s.cfg.MaxPooledData) {
		conn.Close()
		return
	}
	if sh.m == nil {
		sh.m = make(map[string][]pooledData)
		sh.sweeps = make(map[string]*time.Timer)
	}
	sh.m[key] = append(sh.m[key], pooledData{conn: conn, since: time.Now()})
	if sh.sweeps[key] == nil {
		sh.sweeps[key] = time.AfterFunc(p.idle, func() { p.sweep(key) })
	}
}

// TakeData returns the most recently pooled data connection of key, or
// nil. The caller makes a data call on it (CallData) and pools it again
// or closes it.
func (s *Server) TakeData(key string) net.Conn {
	p := &s.pool
	sh := p.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[key]
	for len(list) > 0 {
		last := list[len(list)-1]
		list = list[:len(list)-1]
		sh.m[key] = list
		p.total.Add(-1)
		if time.Since(last.since) < p.idle {
			return last.conn
		}
		last.conn.Close()
	}
	return nil
}

// DropData closes the pooled data connections of key: its node went away.
func (s *Server) DropData(key string) {
	p := &s.pool
	sh := p.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p.dropLocked(sh, key)
}

// PooledData returns how many data connections key has pooled.
func (s *Server) PooledData(key string) int {
	sh := s.pool.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return len(sh.m[key])
}

// AllPooledData returns how many data connections the server has pooled,
// over all nodes.
func (s *Server) AllPooledData() int { return int(s.pool.total.Load()) }

func (p *dataPool) dropLocked(sh *dataPoolShard, key string) {
	for _, pd := range sh.m[key] {
		pd.conn.Close()
		p.total.Add(-1)
	}
	delete(sh.m, key)
	if t := sh.sweeps[key]; t != nil {
		t.Stop()
		delete(sh.sweeps, key)
	}
}

// sweep closes the connections of key that idled out, and comes back
// while any are left.
func (p *dataPool) sweep(key string) {
	sh := p.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	delete(sh.sweeps, key)
	list := sh.m[key]
	kept := list[:0]
	for _, pd := range list {
		if time.Since(pd.since) < p.idle {
			kept = append(kept, pd)
		} else {
			pd.conn.Close()
			p.total.Add(-1)
		}
	}
	if len(kept) == 0 {
		delete(sh.m, key)
		return
	}
	sh.m[key] = kept
	if !sh.closed {
		sh.sweeps[key] = time.AfterFunc(p.idle-time.Since(kept[0].since), func() { p.sweep(key) })
	}
}

// close closes every pooled connection; later ones are closed as pooled.
func (p *dataPool) close() {
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		sh.closed = true
		for key := range sh.m {
			p.dropLocked(sh, key)
		}
		sh.mu.Unlock()
	}
}

// CallData makes a data call of method on conn, a pooled data connection
// (TakeData): a unary request (section 5 of spec.md) answered, on success,
// by the reply and then exactly the raw bytes the reply announces. It is
// bounded by ctx and the server's Config.CallTimeout up to the reply. On
// success reply is filled and the raw bytes follow: head holds those
// already read (at most a few KiB), the rest is read from conn itself, so
// that it can be spliced. A *RemoteError is the node's answer (conn stays
// usable: pool it again); an error matching ErrDataConnLost means the node
// answered nothing, and any other error that the exchange broke. On an
// error other than a *RemoteError the caller closes conn.
func (s *Server) CallData(ctx context.Context, conn net.Conn, method string, args, reply any) (head []byte, err error) {
	cfg := s.cfg
	dl := callDeadline(ctx, cfg.CallTimeout)
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	if err := appendRequest(e, cfg, method, 1, dl, args, false); err != nil {
		return nil, err
	}
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(pastTime) })
	defer stop()

	br := getReader(conn)
	defer putReader(br)
	answered := false
	if _, err = WriteData(conn, e.bytes()); err == nil {
		answered, err = readResponse(ctx, dl, br, nil, cfg, method, 1, reply)
	}
	var re *RemoteError
	switch {
	case err == nil:
	case !answered && !callEnded(ctx, dl):
		return nil, fmt.Errorf("%w: %w", ErrDataConnLost, err)
	case errors.As(err, &re) && !callEnded(ctx, dl):
		conn.SetDeadline(time.Time{})
		return nil, err
	default:
		return nil, err
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

// ServeDataCalls answers data calls on conn, a data connection the node
// made whose transfer ended exactly at its length, with the bulk methods
// of mux (HandleBulk), until the server closes it, Config.DataServeIdle passes
// without a call, ctx ends or a call fails. It closes conn. Requests and
// responses are those of unary calls, read and written by the same code;
// handlers get a context derived from ctx and bounded by the call's
// timeout.
func ServeDataCalls(ctx context.Context, conn net.Conn, cfg *Config, mux *Mux) {
	defer conn.Close()
	cfg, err := cfg.normalize()
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := getReader(conn)
	defer putReader(br)
	serveCalls(ctx, conn, br, mux, nil, cfg, cfg.Logger, cfg.DataServeIdle)
}

// BulkReply is how a bulk handler (HandleBulk) answers: Send writes the
// response and hands over the connection for the raw bytes.
type BulkReply struct {
	conn  net.Conn
	cfg   *Config
	seq   uint64
	resp  any
	watch *callerWatch
	sent  bool
	err   error // Send's
}

// Send writes the response header and the handler's resp, as it is now,
// in one socket write, and returns the connection, to which the handler
// then writes exactly the raw bytes resp announces. It fails if the
// caller went away, or on a second call.
func (r *BulkReply) Send() (net.Conn, error) {
	if r.sent {
		return nil, errors.New("rpc: bulk reply sent twice")
	}
	r.sent = true
	if r.watch.stop() {
		r.err = errCallerGone
	} else {
		r.err = writeResponse(r.conn, r.cfg, r.seq, nil, r.resp)
	}
	if r.err != nil {
		return nil, r.err
	}
	return r.conn, nil
}

// errCallerGone is what Send returns when the caller stopped waiting.
var errCallerGone = errors.New("rpc: the caller went away")

// serveBulk runs one decoded request for a bulk method and writes the
// response (or, once the handler sent its reply, leaves the connection to
// it). It reports whether the connection can serve another request.
func serveBulk(ctx context.Context, conn net.Conn, rd *reqReader, mux *Mux, sess *Session, cfg *Config, logger hclog.Logger, hdr *requestHeader, body []byte) bool {
	b := mux.lookupBulk(hdr.Method)
	if b == nil {
		return writeResponse(conn, cfg, hdr.Seq, unknownMethodError(hdr.Method), nil) == nil
	}
	req := b.newReq()
	if err := decode(body, req); err != nil {
		return writeResponse(conn, cfg, hdr.Seq, &RemoteError{Code: 400, Message: err.Error()}, nil) == nil
	}
	resp := b.newResp()

	hctx, cancel := handlerContext(ctx, sess, hdr.Timeout)
	defer cancel()
	if dl, ok := hctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	reply := &BulkReply{conn: conn, cfg: cfg, seq: hdr.Seq, resp: resp, watch: watchCaller(conn, rd, cancel, cfg.HandlerWatchDelay)}
	herr := callBulk(hctx, logger, hdr.Method, b, req, resp, reply)
	if !reply.sent {
		if reply.watch.stop() {
			return false
		}
		if herr == nil {
			herr = &RemoteError{Code: codeInternal, Message: fmt.Sprintf("rpc: handler for %q sent no reply", hdr.Method)}
		}
		if err := writeResponse(conn, cfg, hdr.Seq, herr, nil); err != nil {
			logger.Debug("writing response failed", "method", hdr.Method, "error", err)
			return false
		}
		conn.SetWriteDeadline(time.Time{})
		return true
	}
	if herr != nil || reply.err != nil {
		if hctx.Err() == nil {
			logger.Debug("bulk call ended with error", "method", hdr.Method, "error", herr, "reply_error", reply.err)
		}
		return false
	}
	conn.SetWriteDeadline(time.Time{})
	return true
}

// timedOut reports whether err is a deadline's.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
