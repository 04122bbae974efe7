package server

import (
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
)

// Config configures a Server. The zero value is not usable; start from
// DefaultConfig.
type Config struct {
	// Region and Datacenter are the server's own; nodes of other regions
	// are refused.
	Region     string
	Datacenter string

	// Name is the server's name, reported in /v1/agent/members.
	Name string

	// RPCAdvertise is the address nodes and peers dial to reach this
	// server's RPC port. It is handed to nodes as a failover address.
	RPCAdvertise string

	// HeartbeatTTL is how often nodes must heartbeat. A node silent for
	// HeartbeatTTL plus HeartbeatGrace is marked down. Default 10s.
	HeartbeatTTL time.Duration

	// HeartbeatGrace is added to HeartbeatTTL before a node is marked down.
	// Default 10s.
	HeartbeatGrace time.Duration

	// RPC configures the transport; nil means rpc.DefaultConfig().
	RPC *rpc.Config

	// Logger is the server's logger; nil means no logging.
	Logger hclog.Logger
}

// DefaultConfig returns a Config with safe defaults.
func DefaultConfig() *Config {
	return &Config{
		Region:         "global",
		Datacenter:     "dc1",
		HeartbeatTTL:   10 * time.Second,
		HeartbeatGrace: 10 * time.Second,
	}
}

// Verify checks the config.
func (c *Config) Verify() error {
	if c.Region == "" {
		return errors.New("region must not be empty")
	}
	if c.HeartbeatTTL <= 0 {
		return errors.New("heartbeat ttl must be positive")
	}
	if c.HeartbeatGrace < 0 {
		return errors.New("heartbeat grace must not be negative")
	}
	return nil
}
