package client

import (
	"net"
	"sync"
	"time"

	"tether/rpc"
)

// maxIdleDataConns bounds the idle data connections kept per server.
const maxIdleDataConns = 4

// dataPool keeps data connections whose transfer ended cleanly, per server
// address, for the next bulk read: a new connection per 1 MiB readat costs
// a TCP (and TLS) handshake and a goroutine on both sides. The server
// waits for the next token on such a connection (rpc.Server.ReuseData);
// the node reuses one for at most rpc.DataIdleReuse. The zero value is
// ready to use.
type dataPool struct {
	mu     sync.Mutex
	idle   map[string][]idleDataConn
	closed bool
}

type idleDataConn struct {
	conn  net.Conn
	since time.Time
}

// get returns the most recently idled connection to addr that is fresh
// enough to reuse, or nil. Stale ones are closed.
func (p *dataPool) get(addr string) net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[addr]
	for len(list) > 0 {
		last := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(last.since) < rpc.DataIdleReuse {
			p.idle[addr] = list
			return last.conn
		}
		last.conn.Close()
	}
	delete(p.idle, addr)
	return nil
}

// put keeps c for the next transfer to addr, or closes it when the pool
// is full or closed.
func (p *dataPool) put(addr string, c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[addr]) >= maxIdleDataConns {
		c.Close()
		return
	}
	if p.idle == nil {
		p.idle = make(map[string][]idleDataConn)
	}
	p.idle[addr] = append(p.idle[addr], idleDataConn{conn: c, since: time.Now()})
}

// close closes every idle connection; later puts close theirs.
func (p *dataPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, list := range p.idle {
		for _, ic := range list {
			ic.conn.Close()
		}
	}
	p.idle = nil
}
