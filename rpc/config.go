package rpc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Config configures sessions, servers and pools. Constructors accept nil
// (DefaultConfig) and treat a zero field as "use the default", so a config
// built by hand only needs the fields it changes. A Config must not be
// modified after it was handed to a constructor.
type Config struct {
	// HandshakeTimeout is the deadline for the first byte of a connection
	// or stream, for a TLS handshake, for unary request and streaming
	// headers, for the first frame (the arguments) of a streaming
	// call, and (plus the message's size at 64 KiB/s) for the rest of
	// any later stream message once its first byte has come: a quiet
	// stream has no bound, half a message does.
	// It bounds how long a stalled or hostile peer can hold a goroutine
	// before saying what it wants. Default 5s.
	HandshakeTimeout time.Duration

	// MaxMessageSize is the largest encoded message (header, body or
	// stream frame) either side sends or accepts. Larger messages fail
	// with ErrMessageTooLarge. Default 4 MiB, at most 1 GiB.
	MaxMessageSize int

	// Counters, when set, counts a server's refused connections,
	// handshakes and oversized frames (rpc/metrics.go). A Server given
	// none makes its own; sessions and calls use their config's.
	Counters *Counters

	// CallTimeout is the deadline applied to a unary call whose context has
	// none. Streams have no default deadline: they live until closed or
	// until their context ends. Default 30s.
	CallTimeout time.Duration

	// DialTimeout bounds the TCP dial (and the TLS handshake) of Dial.
	// Default 10s.
	DialTimeout time.Duration

	// MaxConnsPerIP limits the concurrent TCP connections Server.Serve
	// accepts from one remote IP. Connections over the limit are closed at
	// once. Zero (the default) and -1 mean unlimited: a whole fleet behind
	// one NAT address dials from one IP, so a per-IP cap refuses nodes
	// that did nothing wrong (limits that protect a server key on the
	// authenticated node, server/admission.go). Agents set it from
	// limits.rpc_max_conns_per_client.
	MaxConnsPerIP int

	// MaxPooledDataPerNode bounds the data connections a Server keeps
	// pooled for one node's data calls (PoolData): about the bulk reads of
	// one node it serves at once. Default 16; at most MaxConnsPerIP is
	// useful, since each holds a slot of it.
	MaxPooledDataPerNode int

	// MaxPooledData bounds the data connections a Server keeps pooled over
	// all nodes. It is what bounds them fleet-wide: 10,000 nodes at
	// MaxPooledDataPerNode would be 160,000 descriptors and TLS states. A
	// connection over the bound is closed (that node's next bulk read
	// dials again). Default 1024; -1 means unlimited.
	MaxPooledData int

	// DataRedialDelay is how long a node's DataDialer sends bulk bytes on
	// the stream, without dialing, after a data connection to a server
	// address failed (refused: the address is a load balancer that led to
	// another server; a firewall). Every failed dial costs a TCP connect
	// and, with TLS, a handshake on some server, on every bulk read. A
	// successful dial forgets the failure. Default 1 minute; -1 means dial
	// every time.
	DataRedialDelay time.Duration

	// Yamux configures the multiplexer. nil means yamux.DefaultConfig()
	// with an AcceptBacklog of 64 (yamux's 256 is a 2 KiB channel per
	// session at each end; streams are accepted at once, and both ends
	// use the same bound) and its logging routed to Logger. A non-nil
	// config is cloned, never mutated; if it sets neither Logger nor
	// LogOutput, its logging is routed to Logger too.
	Yamux *yamux.Config

	// TLSConfig enables TLS. A Server accepts ByteTLS, runs the handshake
	// and reads the protocol byte again inside TLS; Dial writes ByteTLS
	// and runs a client handshake (ServerName defaults to the host of the
	// dialled address). nil means plaintext only: a Server refuses
	// ByteTLS.
	TLSConfig *tls.Config

	// TLSUpgradeMode lets a Server with a TLSConfig also accept plaintext
	// connections, while nodes are being migrated to TLS (Nomad's
	// rpc_upgrade_mode). When false and TLSConfig is set, a connection
	// that does not start with ByteTLS is refused.
	TLSUpgradeMode bool

	// RaftHandler takes over server connections that start with ByteRaft.
	// It is called in the connection's goroutine, owns the connection from
	// then on, and should hand it off quickly. nil means such connections
	// are closed.
	RaftHandler func(net.Conn)

	// VerifyRaftPeer, if set, is asked about every ByteRaft connection
	// that arrived inside TLS, with the TLS state, before RaftHandler gets
	// it; an error refuses the connection. It lets a server accept raft
	// only from server certificates while node certificates from the same
	// CA may open sessions (CVE-2021-37218). Plaintext raft connections
	// (possible only without TLSConfig or in TLSUpgradeMode) are not
	// checked. nil accepts every peer the TLS handshake accepted.
	VerifyRaftPeer func(tls.ConnectionState) error

	// Logger receives the package's logs. nil means hclog.NewNullLogger().
	Logger hclog.Logger

	// The fields below tune the transport's fast paths. Their defaults
	// were measured on small, shared machines; each says what it trades.

	// TCPKeepAlive is the TCP keepalive period of the connections Dial
	// opens and Server accepts: how soon a peer that vanished without a
	// FIN is noticed when the session is idle. Default 30s.
	TCPKeepAlive time.Duration

	// KeepAliveInterval is how long a session may hear nothing from its
	// peer before it pings it (yamux's ping, sent from a timer of the
	// session's, keepalive.go), each wait shortened by up to a quarter
	// at random so that sessions opened together do not ping together.
	// Any frame read counts, so a busy session is not pinged, and an
	// idle one about once per interval from whichever end is due first.
	// With KeepAliveTimeout it bounds how long a peer that stops
	// answering without a reset (a blackholed link, a SIGSTOPped
	// process) goes unnoticed: at most interval plus timeout after its
	// last frame, 8 s by default, for an idle session and for the calls
	// in flight on it, which then fail with ErrSessionClosed. 10,000
	// idle sessions cost a server 2,500 pings a second in all, a timer
	// per session and no goroutine while they wait. It takes the place
	// of Yamux.KeepAliveInterval; a Yamux config that turns
	// EnableKeepAlive off, or -1 here, means this end never pings (the
	// peer's pings still keep the session checked). Default 4s.
	KeepAliveInterval time.Duration

	// KeepAliveTimeout is how long a ping may go unanswered before the
	// session is closed. It is separate from yamux's
	// ConnectionWriteTimeout (10 s), which also bounds how long a frame
	// may wait for a congested socket: a slow link must not kill a
	// session that a frozen peer should. At most ConnectionWriteTimeout
	// is effective (yamux's ping gives up then). Default 4s.
	KeepAliveTimeout time.Duration

	// MaxIdleStreams bounds the unary streams a session keeps open after
	// a clean call, for the next call to reuse (one write per call instead
	// of a stream open, a mode byte and a close each way). Each idle
	// stream costs both ends a yamux stream's buffers. Default 64; -1
	// keeps none.
	MaxIdleStreams int

	// CallWatchTick is how often a session looks at its unary calls in
	// flight (callwatch.go): the most a call outlives its deadline or its
	// caller's context. Shorter ends abandoned calls sooner and wakes
	// more often while calls are in flight. Default 10ms.
	CallWatchTick time.Duration

	// LongCallAfter is how long a unary call is polled before it gets its
	// own timer and context registration (a blocking query): polling is
	// cheaper for the many short calls, a timer for the few long ones. It
	// is rounded up to whole ticks. Default 50ms.
	LongCallAfter time.Duration

	// HandlerWatchDelay is how long a unary handler runs before its
	// stream is watched for the caller going away (unary.go). Most
	// handlers finish sooner, and skipping the watch saves a goroutine and
	// two deadline changes per call; a caller that leaves is noticed at
	// most this much later. Default 5ms.
	HandlerWatchDelay time.Duration

	// ReadProbeDelay is how long net/http's one-byte background read on
	// a plain connection of BatchingListener waits before it reaches the
	// socket (read_probe.go): a client that goes away mid-request is
	// noticed at most this much later. Default 10ms.
	ReadProbeDelay time.Duration

	// CoalesceBulkMin is the frame body size from which the frame
	// coalescer (coalesce.go) writes a frame at once from yamux's buffer
	// instead of queueing a copy of it. Default 16 KiB.
	CoalesceBulkMin int

	// CoalesceMaxQueued bounds the small frames queued for one session's
	// flusher; yamux's send loop blocks beyond it, as on a full socket.
	// Default 256 KiB.
	CoalesceMaxQueued int

	// CoalesceKeep is the largest queue buffer a session keeps between
	// writes. It is memory each busy session holds: with many sessions,
	// keep it small. Default 64 KiB.
	CoalesceKeep int

	// DataPoolIdle is how long a server keeps a pooled data connection.
	// Default 20s.
	DataPoolIdle time.Duration

	// DataServeIdle is how long a node waits for a data call on a
	// connection before it closes it: longer than DataPoolIdle, so that
	// the server, which starts calls, lets go first. Default 30s.
	DataServeIdle time.Duration

	// IdleStreamTimeout is how long a session keeps an idle unary stream
	// (MaxIdleStreams) unused before it closes it. A stream kept idle
	// costs the peer a parked goroutine serving it and both ends a yamux
	// stream: after a burst of concurrent calls, the streams beyond what
	// the calls since need are let go. It is short because a call on a
	// new stream costs microseconds while a kept one costs the peer a
	// goroutine's stack: a node called every few seconds by its servers,
	// or calling them, keeps none between calls. Default 5s.
	IdleStreamTimeout time.Duration

	// MaxConcurrentHandshakes bounds the TLS handshakes a Server runs at
	// once; more connections wait for a slot within HandshakeTimeout.
	// When a server dies, a third of a fleet dials the survivors within
	// seconds; thousands of handshakes at once would queue the calls of
	// the sessions already there behind them (a peer's route query, a
	// node's answer) for seconds. Bounded, the handshakes take their turn
	// and the rest of the server keeps its latency. Default 4 per
	// GOMAXPROCS, at least 8; -1 means unlimited.
	MaxConcurrentHandshakes int

	// Set by normalize: the yamux config handed to yamux (Yamux with its
	// keepalive off) and the keepalive interval the session runs itself
	// (0: none). See keepalive.go.
	yamuxSession      *yamux.Config
	keepAliveInterval time.Duration
}

// Defaults.
const (
	defaultHandshakeTimeout = 5 * time.Second
	defaultMaxMessageSize   = 4 << 20
	defaultCallTimeout      = 30 * time.Second
	defaultDialTimeout      = 10 * time.Second
	defaultMaxConnsPerIP    = 0 // unlimited
	defaultTCPKeepAlive     = 30 * time.Second
	defaultKeepAlive        = 4 * time.Second
	defaultKeepAliveTimeout = 4 * time.Second
	defaultMaxIdleStreams   = 64
	defaultHandlerWatch     = 5 * time.Millisecond
	defaultReadProbeDelay   = 10 * time.Millisecond
	defaultCoalesceBulkMin  = 16 << 10
	defaultCoalesceQueued   = 256 << 10
	defaultCoalesceKeep     = 64 << 10
	defaultDataPoolIdle     = 20 * time.Second
	defaultDataServeIdle    = 30 * time.Second
	defaultIdleStreamTTL    = 5 * time.Second
	defaultAcceptBacklog    = 64

	defaultDataRedialDelay  = time.Minute
	defaultMaxPooledPerNode = 16
	defaultMaxPooledData    = 1024

	// Bounds of the tunables: beyond them a value is a mistake.
	maxTunedBuffer = 16 << 20
	maxIdleStreams = 4096
)

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() *Config {
	return &Config{
		HandshakeTimeout: defaultHandshakeTimeout,
		MaxMessageSize:   defaultMaxMessageSize,
		CallTimeout:      defaultCallTimeout,
		DialTimeout:      defaultDialTimeout,
		MaxConnsPerIP:    defaultMaxConnsPerIP,

		TCPKeepAlive:      defaultTCPKeepAlive,
		KeepAliveInterval: defaultKeepAlive,
		KeepAliveTimeout:  defaultKeepAliveTimeout,
		MaxIdleStreams:    defaultMaxIdleStreams,
		CallWatchTick:     defaultCallWatchTick,
		LongCallAfter:     defaultLongCallAfter,
		HandlerWatchDelay: defaultHandlerWatch,
		ReadProbeDelay:    defaultReadProbeDelay,
		CoalesceBulkMin:   defaultCoalesceBulkMin,
		CoalesceMaxQueued: defaultCoalesceQueued,
		CoalesceKeep:      defaultCoalesceKeep,
		DataPoolIdle:      defaultDataPoolIdle,
		DataServeIdle:     defaultDataServeIdle,
		DataRedialDelay:   defaultDataRedialDelay,
		IdleStreamTimeout: defaultIdleStreamTTL,

		MaxPooledDataPerNode: defaultMaxPooledPerNode,
		MaxPooledData:        defaultMaxPooledData,
	}
}

// Verify checks the config. Zero values are valid (they mean the default);
// negative durations and sizes are not.
func (c *Config) Verify() error {
	switch {
	case c.HandshakeTimeout < 0:
		return errors.New("handshake timeout must not be negative")
	case c.MaxMessageSize < 0:
		return errors.New("max message size must be positive")
	case c.MaxMessageSize > maxMessageSizeLimit:
		return fmt.Errorf("max message size must be at most %d", maxMessageSizeLimit)
	case c.CallTimeout < 0:
		return errors.New("call timeout must not be negative")
	case c.DialTimeout < 0:
		return errors.New("dial timeout must not be negative")
	case c.MaxConnsPerIP < -1:
		return errors.New("max conns per ip must be positive, 0 (default) or -1 (unlimited)")
	case c.TCPKeepAlive < 0:
		return errors.New("tcp keepalive must not be negative")
	case c.KeepAliveInterval < -1:
		return errors.New("keepalive interval must be positive, 0 (default) or -1 (no pings)")
	case c.KeepAliveTimeout < 0:
		return errors.New("keepalive timeout must not be negative")
	case c.MaxIdleStreams < -1 || c.MaxIdleStreams > maxIdleStreams:
		return fmt.Errorf("max idle streams must be at most %d, 0 (default) or -1 (none)", maxIdleStreams)
	case c.CallWatchTick < 0:
		return errors.New("call watch tick must not be negative")
	case c.LongCallAfter < 0:
		return errors.New("long call after must not be negative")
	case c.HandlerWatchDelay < 0:
		return errors.New("handler watch delay must not be negative")
	case c.ReadProbeDelay < 0:
		return errors.New("read probe delay must not be negative")
	case c.CoalesceBulkMin < 0 || c.CoalesceBulkMin > maxTunedBuffer:
		return fmt.Errorf("coalesce bulk min must be between 0 (default) and %d", maxTunedBuffer)
	case c.CoalesceMaxQueued < 0 || c.CoalesceMaxQueued > maxTunedBuffer:
		return fmt.Errorf("coalesce max queued must be between 0 (default) and %d", maxTunedBuffer)
	case c.CoalesceKeep < 0 || c.CoalesceKeep > maxTunedBuffer:
		return fmt.Errorf("coalesce keep must be between 0 (default) and %d", maxTunedBuffer)
	case c.DataPoolIdle < 0:
		return errors.New("data pool idle must not be negative")
	case c.DataServeIdle < 0:
		return errors.New("data serve idle must not be negative")
	case c.IdleStreamTimeout < 0:
		return errors.New("idle stream timeout must not be negative")
	case c.MaxConcurrentHandshakes < -1:
		return errors.New("max concurrent handshakes must be positive, 0 (default) or -1 (unlimited)")
	case c.MaxPooledDataPerNode < 0:
		return errors.New("max pooled data per node must not be negative")
	case c.MaxPooledData < -1:
		return errors.New("max pooled data must be positive, 0 (default) or -1 (unlimited)")
	case c.DataRedialDelay < -1:
		return errors.New("data redial delay must be positive, 0 (default) or -1 (always dial)")
	}
	if c.Yamux != nil {
		y := c.Yamux.Clone()
		if y.Logger == nil && y.LogOutput == nil {
			y.Logger = hclog.NewNullLogger().StandardLogger(nil)
		}
		if err := yamux.VerifyConfig(y); err != nil {
			return fmt.Errorf("yamux: %w", err)
		}
	}
	return nil
}

// normalize returns a private copy of c (nil meaning DefaultConfig) with
// every default filled in and its own yamux config, after Verify.
func (c *Config) normalize() (*Config, error) {
	if c == nil {
		c = DefaultConfig()
	}
	if err := c.Verify(); err != nil {
		return nil, err
	}
	n := *c
	if n.HandshakeTimeout == 0 {
		n.HandshakeTimeout = defaultHandshakeTimeout
	}
	if n.MaxMessageSize == 0 {
		n.MaxMessageSize = defaultMaxMessageSize
	}
	if n.CallTimeout == 0 {
		n.CallTimeout = defaultCallTimeout
	}
	if n.DialTimeout == 0 {
		n.DialTimeout = defaultDialTimeout
	}
	if n.MaxConnsPerIP == 0 {
		n.MaxConnsPerIP = defaultMaxConnsPerIP
	}
	orDefault(&n.TCPKeepAlive, defaultTCPKeepAlive)
	orDefault(&n.MaxIdleStreams, defaultMaxIdleStreams)
	orDefault(&n.KeepAliveTimeout, defaultKeepAliveTimeout)
	orDefault(&n.CallWatchTick, defaultCallWatchTick)
	orDefault(&n.LongCallAfter, defaultLongCallAfter)
	orDefault(&n.HandlerWatchDelay, defaultHandlerWatch)
	orDefault(&n.ReadProbeDelay, defaultReadProbeDelay)
	orDefault(&n.CoalesceBulkMin, defaultCoalesceBulkMin)
	orDefault(&n.CoalesceMaxQueued, defaultCoalesceQueued)
	orDefault(&n.CoalesceKeep, defaultCoalesceKeep)
	orDefault(&n.DataPoolIdle, defaultDataPoolIdle)
	orDefault(&n.DataServeIdle, defaultDataServeIdle)
	orDefault(&n.IdleStreamTimeout, defaultIdleStreamTTL)
	if n.MaxConcurrentHandshakes == 0 {
		n.MaxConcurrentHandshakes = max(8, 4*runtime.GOMAXPROCS(0))
	}
	if n.MaxPooledDataPerNode == 0 {
		n.MaxPooledDataPerNode = defaultMaxPooledPerNode
	}
	if n.MaxPooledData == 0 {
		n.MaxPooledData = defaultMaxPooledData
	}
	if n.DataRedialDelay == 0 {
		n.DataRedialDelay = defaultDataRedialDelay
	}
	if n.Logger == nil {
		n.Logger = hclog.NewNullLogger()
	}
	// Clone once per consumer: the server and pool of one agent may share a
	// Config, and yamux keeps the pointer (Nomad PR #25978).
	var y *yamux.Config
	if n.Yamux == nil {
		y = yamux.DefaultConfig()
		y.AcceptBacklog = defaultAcceptBacklog
		y.LogOutput = nil
	} else {
		y = n.Yamux.Clone()
	}
	orDefault(&n.KeepAliveInterval, defaultKeepAlive)
	if n.KeepAliveInterval < 0 {
		y.EnableKeepAlive = false
	} else {
		y.KeepAliveInterval = n.KeepAliveInterval
	}
	if y.Logger == nil && y.LogOutput == nil {
		y.Logger = n.Logger.Named("yamux").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	}
	n.Yamux = y
	// yamux runs a keepalive goroutine per session; the session runs a
	// timer instead (keepalive.go).
	ys := y.Clone()
	ys.EnableKeepAlive = false
	n.yamuxSession = ys
	n.keepAliveInterval = 0
	if y.EnableKeepAlive {
		n.keepAliveInterval = n.KeepAliveInterval
	}
	if n.TLSConfig != nil {
		n.TLSConfig = n.TLSConfig.Clone()
	}
	return &n, nil
}

// orDefault sets a zero field to its default.
func orDefault[T int | time.Duration](field *T, def T) {
	if *field == 0 {
		*field = def
	}
}
