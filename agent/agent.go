package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/client"
	"tether/rpc"
	"tether/server"
)

// Agent is one Tether process: a server, a node agent, or both, and the
// HTTP API in front of them.
type Agent struct {
	cfg    *Config
	logger hclog.Logger
	il     hclog.InterceptLogger // logger, where monitors register their sinks

	// debugMonitors counts the monitors at debug level or below: while
	// there is one, the HTTP API logs every request it completes.
	debugMonitors atomic.Int32

	server  *server.Server
	client  *client.Client
	backend *backend
	tls     *agentTLS // nil unless tls.http or tls.rpc

	httpSrv *http.Server
	httpLn  net.Listener
	rpcLn   net.Listener
	tmpDir  string // dev mode's data dir, removed on shutdown

	httpAdvertise string
	rpcAdvertise  string

	streams  streamLimiter
	streamed byteCounters // bytes of file and log streams by kind (telemetry.go)
	queries  queryStop    // ends blocking queries on shutdown

	telemetry   *telemetry   // nil with DisableTelemetry
	promHandler http.Handler // nil unless telemetry.prometheus_metrics

	wg       sync.WaitGroup
	stopOnce sync.Once
}

// New returns an agent for cfg. Nothing is bound until Start.
func New(cfg *Config, logger hclog.Logger) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent config must not be nil")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	il := interceptLogger(logger)
	return &Agent{cfg: cfg, logger: il, il: il}, nil
}

// Start binds the listeners and starts the server, the node agent and the
// HTTP API. It returns once they are serving.
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Shutdown(context.Background())
		}
	}()
	cfg := a.cfg
	dataDir := cfg.DataDir
	if dataDir == "" {
		if !cfg.DevMode {
			return errors.New("data_dir must be set")
		}
		if a.tmpDir, err = os.MkdirTemp("", "tether-dev-"); err != nil {
			return fmt.Errorf("creating dev data dir: %w", err)
		}
		dataDir = a.tmpDir
	}
	if err := os.MkdirAll(dataDir, 0o711); err != nil {
		return fmt.Errorf("creating data_dir: %w", err)
	}

	if err := a.startTLS(); err != nil {
		return err
	}
	if !cfg.DisableTelemetry {
		if a.telemetry, err = newTelemetry(cfg.Telemetry, cfg.Name, a.logger.Named("telemetry")); err != nil {
			return err
		}
		a.promHandler = newPromHandler(a.telemetry)
	}

	// The HTTP listener first: its address is the node's HTTPAddr.
	if a.httpLn, err = net.Listen("tcp", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.HTTP))); err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	a.httpAdvertise = withActualPort(cfg.Advertise.HTTP, a.httpLn.Addr())

	if cfg.Server.Enabled {
		if a.rpcLn, err = net.Listen("tcp", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.RPC))); err != nil {
			return fmt.Errorf("rpc listener: %w", err)
		}
		a.rpcAdvertise = withActualPort(cfg.Advertise.RPC, a.rpcLn.Addr())
		scfg := server.DefaultConfig()
		scfg.Region = cfg.Region
		scfg.Datacenter = cfg.Datacenter
		scfg.Name = cfg.Name
		scfg.RPCAdvertise = a.rpcAdvertise
		scfg.ACLEnabled = cfg.ACL.Enabled
		scfg.RPC = a.withLimits(a.serverRPCConfig(), true)
		if cfg.Server.HeartbeatGrace > 0 {
			scfg.HeartbeatGrace = cfg.Server.HeartbeatGrace
		}
		scfg.RaftSnapshotThreshold = cfg.Server.RaftSnapshotThreshold
		scfg.RaftSnapshotInterval = cfg.Server.RaftSnapshotInterval
		scfg.RaftTrailingLogs = cfg.Server.RaftTrailingLogs
		if cfg.Server.MinHeartbeatTTL > 0 {
			scfg.MinHeartbeatTTL = cfg.Server.MinHeartbeatTTL
		}
		if cfg.Server.MaxHeartbeatsPerSecond > 0 {
			scfg.MaxHeartbeatsPerSecond = cfg.Server.MaxHeartbeatsPerSecond
		}
		if cfg.Server.FailoverHeartbeatTTL > 0 {
			scfg.FailoverHeartbeatTTL = cfg.Server.FailoverHeartbeatTTL
		}
		scfg.Logger = a.logger.Named("server")
		scfg.PeerRPC = a.withLimits(a.clientRPCConfig(), false)
		scfg.Build = NomadVersion
		scfg.BootstrapExpect = cfg.Server.BootstrapExpect
		scfg.InMemory = cfg.DevMode
		if !cfg.DevMode {
			scfg.DataDir = filepath.Join(dataDir, "server")
			scfg.SerfBind = net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.Serf))
			scfg.SerfAdvertise = cfg.Advertise.Serf
		}
		for _, j := range append(append([]string(nil), cfg.Server.RetryJoin...), cfg.Server.StartJoin...) {
			scfg.RetryJoin = append(scfg.RetryJoin, withDefaultPort(j, DefaultSerfPort))
		}
		if cfg.ServerTuning != nil {
			cfg.ServerTuning(scfg)
		}
		if a.server, err = server.New(scfg); err != nil {
			return err
		}
		if a.telemetry != nil {
			a.server.SetMetrics(a.telemetry.m)
		}
		a.registerAgentStreams(a.server.Mux(), true)
		a.server.Start(a.rpcLn)
	}

	if cfg.Client.Enabled {
		ccfg := client.DefaultConfig()
		ccfg.StateDir = cfg.Client.StateDir
		if ccfg.StateDir == "" {
			ccfg.StateDir = filepath.Join(dataDir, "client")
		}
		ccfg.AllocDir = cfg.Client.AllocDir
		if ccfg.AllocDir == "" {
			ccfg.AllocDir = filepath.Join(dataDir, "alloc")
		}
		ccfg.Name = cfg.Name
		ccfg.Datacenter = cfg.Datacenter
		ccfg.Region = cfg.Region
		ccfg.NodeClass = cfg.Client.NodeClass
		if cfg.Client.NodePool != "" {
			ccfg.NodePool = cfg.Client.NodePool
		}
		ccfg.Meta = cfg.Client.Meta
		ccfg.HTTPAddr = a.httpAdvertise
		ccfg.TLSEnabled = cfg.TLS.HTTP
		ccfg.ACLEnabled = cfg.ACL.Enabled
		ccfg.ACLTokenTTL = cfg.ACL.TokenTTL
		ccfg.ACLPolicyTTL = cfg.ACL.PolicyTTL
		ccfg.RPC = a.withLimits(a.clientRPCConfig(), false)
		ccfg.CPUTotalCompute = cfg.Client.CPUTotalCompute
		ccfg.Drivers = map[string]bool{
			client.DriverRawExec: cfg.RawExecEnabled(),
			client.DriverMock:    cfg.MockDriverEnabled(),
		}
		ccfg.Version = NomadVersion
		if cfg.Telemetry.CollectionInterval > 0 {
			ccfg.StatsInterval = cfg.Telemetry.CollectionInterval
		}
		ccfg.Logger = a.logger.Named("client")
		if cfg.DevMode {
			ccfg.MetaSyncDelay = 500 * time.Millisecond
		}
		for _, s := range cfg.Client.Servers {
			ccfg.Servers = append(ccfg.Servers, withDefaultPort(s, 4647))
		}
		if len(ccfg.Servers) == 0 && a.rpcLn != nil {
			ccfg.Servers = []string{a.rpcLn.Addr().String()}
		}
		if a.client, err = client.New(ccfg); err != nil {
			return err
		}
		a.registerAgentStreams(a.client.Mux(), false)
		a.client.Start()
	}

	a.backend = &backend{server: a.server, client: a.client}
	if t := a.telemetry; t != nil {
		a.backend.calls = &t.calls
		t.client = a.client
		if srv := a.server; srv != nil {
			t.serverSt = func() map[string]uint64 {
				st := srv.Stats()
				maps.Copy(st, srv.RPCStats())
				return st
			}
		}
		t.agentStats = a.stats
		t.streamed = &a.streamed
		if err := t.start(); err != nil {
			return err
		}
	}
	a.httpSrv = &http.Server{
		Handler:           a.router(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ConnContext:       rpc.BatcherContext,
		ErrorLog:          a.logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	if a.server != nil {
		a.server.SetHTTPAPI(serverPathsOnly(a.httpSrv.Handler)) // what nodes forward (forward_http.go)
	}
	httpLn := a.httpListener()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("http server stopped", "error", err)
		}
	}()
	a.logger.Info("agent started", "http", a.httpLn.Addr().String(), "server", cfg.Server.Enabled,
		"client", cfg.Client.Enabled, "region", cfg.Region, "datacenter", cfg.Datacenter)
	return nil
}

// Shutdown stops the HTTP API, the node agent and the server, in that
// order, waiting at most until ctx is done for HTTP requests in flight.
func (a *Agent) Shutdown(ctx context.Context) error {
	var err error
	a.stopOnce.Do(func() {
		a.queries.stop()
		if a.httpSrv != nil {
			if e := a.httpSrv.Shutdown(ctx); e != nil {
				a.httpSrv.Close()
			}
		} else if a.httpLn != nil {
			a.httpLn.Close()
		}
		a.wg.Wait()
		if a.telemetry != nil {
			a.telemetry.stop()
		}
		if a.client != nil {
			a.client.Shutdown()
		}
		if a.server != nil {
			a.server.Shutdown()
		} else if a.rpcLn != nil {
			a.rpcLn.Close()
		}
		if a.tmpDir != "" {
			err = os.RemoveAll(a.tmpDir)
		}
		a.logger.Info("agent stopped")
	})
	return err
}

// Reload applies what can change at run time: the log level, and the TLS
// certificates, keys and CA (re-read from the files cfg names; sessions
// and streams already established are not dropped). A TLS file that is
// missing or bad makes Reload fail with an error naming it, and nothing
// changes.
func (a *Agent) Reload(cfg *Config) error {
	if cfg == nil {
		return errors.New("agent config must not be nil")
	}
	if err := a.reloadTLS(cfg.TLS); err != nil {
		return err
	}
	if lvl := hclog.LevelFromString(cfg.LogLevel); lvl != hclog.NoLevel {
		a.logger.SetLevel(lvl)
	}
	a.logger.Info("configuration reloaded")
	return nil
}

// HTTPAddr returns the address the HTTP API listens on.
func (a *Agent) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// RPCAddr returns the address the RPC port listens on ("" without a server).
func (a *Agent) RPCAddr() string {
	if a.rpcLn == nil {
		return ""
	}
	return a.rpcLn.Addr().String()
}

// Client returns the node agent, or nil.
func (a *Agent) Client() *client.Client { return a.client }

// Server returns the server, or nil.
func (a *Agent) Server() *server.Server { return a.server }

func (a *Agent) advertiseHost() string {
	h, _, err := net.SplitHostPort(a.httpAdvertise)
	if err != nil {
		return a.httpAdvertise
	}
	return h
}

// serfPort returns the membership port actually bound (the configured one
// when no server runs).
func (a *Agent) serfPort() int {
	if a.server != nil {
		if _, p, err := net.SplitHostPort(a.server.SerfAddr()); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				return n
			}
		}
	}
	return a.cfg.Ports.Serf
}

// SerfAddr returns the membership address other servers join ("" without
// a server, or in dev mode).
func (a *Agent) SerfAddr() string {
	if a.server == nil {
		return ""
	}
	return a.server.SerfAddr()
}

// withActualPort returns advertise with its port replaced by the listener's
// when the configured one was 0 (or missing).
func withActualPort(advertise string, actual net.Addr) string {
	_, port, _ := net.SplitHostPort(actual.String())
	if advertise == "" {
		return actual.String()
	}
	host, p, err := net.SplitHostPort(advertise)
	if err != nil {
		return net.JoinHostPort(advertise, port)
	}
	if p == "" || p == "0" {
		return net.JoinHostPort(host, port)
	}
	return advertise
}

// withDefaultPort appends port to an address that has none.
func withDefaultPort(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
}
