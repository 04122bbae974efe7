package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"tether/rpc"
)

// errRaftLayerClosed is returned by Accept once the layer is closed.
var errRaftLayerClosed = errors.New("raft layer closed")

// stringAddr is a net.Addr that reports the advertised address verbatim
// (raft uses Addr().String() as this server's address).
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// raftLayer is raft's StreamLayer on the RPC port: inbound connections
// that start with rpc.ByteRaft are handed over by the rpc.Server
// (Config.RaftHandler), outbound ones dial the peer's RPC port, run TLS
// when configured and write ByteRaft.
type raftLayer struct {
	addr   net.Addr
	tlsCfg *tls.Config // client side, nil for plaintext

	connCh  chan net.Conn
	closeCh chan struct{}
	once    sync.Once
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func newRaftLayer(advertise string, tlsCfg *tls.Config) *raftLayer {
	return &raftLayer{
		addr:    stringAddr(advertise),
		tlsCfg:  tlsCfg,
		connCh:  make(chan net.Conn),
		closeCh: make(chan struct{}),
	}
}

// handoff gives an inbound raft connection to raft's accept loop, or
// closes it when the layer is closed.
func (l *raftLayer) handoff(c net.Conn) {
	select {
	case l.connCh <- c:
	case <-l.closeCh:
		c.Close()
	}
}

// Accept waits for the next inbound raft connection.
func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.connCh:
		return c, nil
	case <-l.closeCh:
		return nil, errRaftLayerClosed
	}
}

// Close stops Accept; connections already handed over are raft's.
func (l *raftLayer) Close() error {
	l.once.Do(func() { close(l.closeCh) })
	return nil
}

// Addr returns the advertised RPC address.
func (l *raftLayer) Addr() net.Addr { return l.addr }

// Dial opens a raft connection to a peer's RPC port.
func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	if l.tlsCfg != nil {
		if _, err := conn.Write([]byte{rpc.ByteTLS}); err != nil {
			conn.Close()
			return nil, fmt.Errorf("raft dial %s: %w", address, err)
		}
		cfg := l.tlsCfg
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg = cfg.Clone()
			if host, _, err := net.SplitHostPort(string(address)); err == nil {
				cfg.ServerName = host
			}
		}
		tconn := tls.Client(conn, cfg)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("raft dial %s: tls handshake: %w", address, err)
		}
		conn = tconn
	}
	if _, err := conn.Write([]byte{rpc.ByteRaft}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
