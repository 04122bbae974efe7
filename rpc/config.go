package rpc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
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
	// headers, and for the first frame (the arguments) of a streaming
	// call. It bounds how long a stalled or hostile peer can hold a
	// goroutine before saying what it wants. Default 5s.
	HandshakeTimeout time.Duration

	// MaxMessageSize is the largest encoded message (header, body or
	// stream frame) either side sends or accepts. Larger messages fail
	// with ErrMessageTooLarge. Default 4 MiB, at most 1 GiB.
	MaxMessageSize int

	// CallTimeout is the deadline applied to a unary call whose context has
	// none. Streams have no default deadline: they live until closed or
	// until their context ends. Default 30s.
	CallTimeout time.Duration

	// DialTimeout bounds the TCP dial (and the TLS handshake) of Dial.
	// Default 10s.
	DialTimeout time.Duration

	// MaxConnsPerIP limits the concurrent TCP connections Server.Serve
	// accepts from one remote IP. Connections over the limit are closed at
	// once. Default 100; -1 means unlimited.
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
	// with its logging routed to Logger. A non-nil config is cloned, never
	// mutated; if it sets neither Logger nor LogOutput, its logging is
	// routed to Logger too.
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
}

// Defaults.
const (
	defaultHandshakeTimeout = 5 * time.Second
	defaultMaxMessageSize   = 4 << 20
	defaultCallTimeout      = 30 * time.Second
	defaultDialTimeout      = 10 * time.Second
	defaultMaxConnsPerIP    = 100
	defaultDataRedialDelay  = time.Minute
	defaultMaxPooledPerNode = 16
	defaultMaxPooledData    = 1024
	tcpKeepAlivePeriod      = 30 * time.Second
)

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() *Config {
	return &Config{
		HandshakeTimeout: defaultHandshakeTimeout,
		MaxMessageSize:   defaultMaxMessageSize,
		CallTimeout:      defaultCallTimeout,
		DialTimeout:      defaultDialTimeout,
		MaxConnsPerIP:    defaultMaxConnsPerIP,
		DataRedialDelay:  defaultDataRedialDelay,

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
		y.LogOutput = nil
	} else {
		y = n.Yamux.Clone()
	}
	if y.Logger == nil && y.LogOutput == nil {
		y.Logger = n.Logger.Named("yamux").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	}
	n.Yamux = y
	if n.TLSConfig != nil {
		n.TLSConfig = n.TLSConfig.Clone()
	}
	return &n, nil
}
