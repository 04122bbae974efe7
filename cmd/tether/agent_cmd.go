package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/agent"
)

// shutdownTimeout bounds a graceful shutdown after SIGINT or SIGTERM.
// Tests shorten it.
var shutdownTimeout = 10 * time.Second

// agentRunner is the part of *agent.Agent the command drives. Tests
// replace newAgent to run the command against a fake.
type agentRunner interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
	Reload(cfg *agent.Config) error
	HTTPAddr() string
}

// newAgent creates the agent; tests replace it.
var newAgent = func(cfg *agent.Config, logger hclog.Logger) (agentRunner, error) {
	a, err := agent.New(cfg, logger)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// notifySignals subscribes c to the signals the agent handles and returns
// a function that unsubscribes it; tests replace it.
var notifySignals = func(c chan<- os.Signal) (stop func()) {
	signal.Notify(c, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	return func() { signal.Stop(c) }
}

const agentUsageHeader = `Usage: tether agent [flags]

Runs a Tether agent. Configuration comes from, in increasing precedence:
the defaults (or the dev defaults with -dev), each -config file or
directory in the order given, then the other flags. The configuration
files are Nomad agent files (HCL or JSON); keys Nomad knows but Tether
ignores are logged as warnings, unknown keys are errors.

Signals: SIGINT/SIGTERM shut down gracefully (a second one exits at once);
SIGHUP reloads the configuration files.

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

// String implements flag.Value.
func (s *stringList) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value; each use of the flag appends one value.
func (s *stringList) Set(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	*s = append(*s, v)
	return nil
}

// agentFlags holds the parsed flags of "tether agent".
type agentFlags struct {
	dev      bool
	configs  stringList
	dataDir  string
	bind     string
	logLevel string
	node     string
	dc       string
	region   string
	servers  string
	server   bool
	client   bool
	httpPort int
	rpcPort  int
	serfPort int

	// set records the flags given on the command line, so that only
	// those override the configuration files.
	set map[string]bool
}

// newAgentFlagSet binds the flags of "tether agent" to f.
func newAgentFlagSet(f *agentFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("tether agent", flag.ContinueOnError)
	fs.BoolVar(&f.dev, "dev", false, "Run a development agent: server and node agent in one process on 127.0.0.1,\nin-memory state, raw_exec and mock_driver enabled, log level DEBUG.")
	fs.Var(&f.configs, "config", "A configuration file or directory (*.hcl, *.json) to load. Repeatable;\nlater ones override earlier ones.")
	fs.StringVar(&f.dataDir, "data-dir", "", "Directory for agent state (data_dir). Required unless -dev.")
	fs.StringVar(&f.bind, "bind", "", `Address every listener binds to (bind_addr). Default "0.0.0.0", "127.0.0.1" with -dev.`)
	fs.StringVar(&f.logLevel, "log-level", "", `Log level: TRACE, DEBUG, INFO, WARN or ERROR (log_level). Default "INFO", "DEBUG" with -dev.`)
	fs.StringVar(&f.node, "node", "", "Node name (name). Default: the host name.")
	fs.StringVar(&f.dc, "dc", "", `Datacenter (datacenter). Default "dc1".`)
	fs.StringVar(&f.region, "region", "", `Region (region). Default "global".`)
	fs.StringVar(&f.servers, "servers", "", "Comma-separated server RPC addresses the node agent dials (client.servers).")
	fs.BoolVar(&f.server, "server", false, "Run the server role (server.enabled).")
	fs.BoolVar(&f.client, "client", false, "Run the node agent role (client.enabled).")
	fs.IntVar(&f.httpPort, "http-port", 0, "HTTP API port (ports.http). Default 4646.")
	fs.IntVar(&f.rpcPort, "rpc-port", 0, "RPC port (ports.rpc). Default 4647.")
	fs.IntVar(&f.serfPort, "serf-port", 0, "Server membership port (ports.serf). Default 4648.")
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// agentUsage writes the help of "tether agent" to w.
func agentUsage(w io.Writer) {
	fs := newAgentFlagSet(&agentFlags{})
	fs.SetOutput(w)
	fmt.Fprint(w, agentUsageHeader)
	fs.PrintDefaults()
}

// parseAgentFlags parses args. On -h it prints the help to stdout; on a bad
// flag it prints the error and the help to stderr. When it returns ok false
// the command should exit with code.
func parseAgentFlags(args []string, stdout, stderr io.Writer) (f *agentFlags, code int, ok bool) {
	f = &agentFlags{set: map[string]bool{}}
	fs := newAgentFlagSet(f)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			agentUsage(stdout)
			return nil, exitOK, false
		}
		fmt.Fprintf(stderr, "tether agent: %v\n\n", err)
		agentUsage(stderr)
		return nil, exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tether agent: unexpected arguments: %s\n\n", strings.Join(fs.Args(), " "))
		agentUsage(stderr)
		return nil, exitUsage, false
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	return f, exitOK, true
}

// buildConfig assembles the configuration: defaults, then each -config in
// order, then the flags given, then address defaults and validation. It is
// called at start-up and again on SIGHUP. The warnings are returned even
// with an error.
func (f *agentFlags) buildConfig() (*agent.Config, []string, error) {
	cfg := agent.DefaultConfig()
	if f.dev {
		cfg = agent.DevConfig()
	}

	var warnings []string
	for _, path := range f.configs {
		fc, w, err := agent.LoadConfig(path)
		warnings = append(warnings, w...)
		if err != nil {
			return nil, warnings, err
		}
		cfg = cfg.Merge(fc)
	}

	f.apply(cfg)

	if err := cfg.NormalizeAddrs(); err != nil {
		return nil, warnings, fmt.Errorf("invalid configuration: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, warnings, fmt.Errorf("invalid configuration: %w", err)
	}
	return cfg, warnings, nil
}

// apply sets the fields of cfg named by the flags given on the command
// line. Unlike a merge, it can turn a role off (-server=false).
func (f *agentFlags) apply(cfg *agent.Config) {
	if f.set["data-dir"] {
		cfg.DataDir = f.dataDir
	}
	if f.set["bind"] {
		cfg.BindAddr = f.bind
	}
	if f.set["log-level"] {
		cfg.LogLevel = f.logLevel
	}
	if f.set["node"] {
		cfg.Name = f.node
	}
	if f.set["dc"] {
		cfg.Datacenter = f.dc
	}
	if f.set["region"] {
		cfg.Region = f.region
	}
	if f.set["servers"] {
		cfg.Client.Servers = splitList(f.servers)
	}
	if f.set["server"] {
		cfg.Server.Enabled = f.server
	}
	if f.set["client"] {
		cfg.Client.Enabled = f.client
	}
	if f.set["http-port"] {
		cfg.Ports.HTTP = f.httpPort
	}
	if f.set["rpc-port"] {
		cfg.Ports.RPC = f.rpcPort
	}
	if f.set["serf-port"] {
		cfg.Ports.Serf = f.serfPort
	}
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// newLogger builds the agent's logger from the configuration: an
// intercepting logger, so that monitors (GET /v1/agent/monitor) get its
// lines at their own level.
func newLogger(cfg *agent.Config, w io.Writer) hclog.Logger {
	return hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:       "tether",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogJSON,
		Output:     w,
	})
}

// roles names the roles a configuration enables, for the banner.
func roles(cfg *agent.Config) string {
	var r []string
	if cfg.Server.Enabled {
		r = append(r, "server")
	}
	if cfg.Client.Enabled {
		r = append(r, "client")
	}
	return strings.Join(r, "+")
}

// runAgent is "tether agent": it builds the configuration, starts the
// agent and serves until a signal stops it. It returns the exit code.
func runAgent(args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseAgentFlags(args, stdout, stderr)
	if !ok {
		return code
	}

	cfg, warnings, err := f.buildConfig()
	if err != nil {
		for _, w := range warnings {
			fmt.Fprintf(stderr, "tether agent: warning: %s\n", w)
		}
		fmt.Fprintf(stderr, "tether agent: %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return exitUsage
	}

	logger := newLogger(cfg, stderr)
	for _, w := range warnings {
		logger.Warn(w)
	}

	a, err := newAgent(cfg, logger)
	if err != nil {
		logger.Error("failed to create agent", "error", err)
		return exitError
	}

	sigs := make(chan os.Signal, 4)
	stop := notifySignals(sigs)
	defer stop()

	// The governor changes the whole process: only when the configuration
	// asks for it, and it hands GOMAXPROCS back to the runtime on exit.
	procs := agent.NewProcGovernorSwitch(logger.Named("procs"))
	procs.Set(cfg.GOMAXPROCSGovernor)
	defer procs.Stop()

	return serve(a, cfg, f.buildConfig, procs, logger, sigs)
}

// serve starts a, logs the banner, and handles signals until a has shut
// down. reload rebuilds the configuration on SIGHUP; procs follows the
// reloaded gomaxprocs_governor.
func serve(a agentRunner, cfg *agent.Config, reload func() (*agent.Config, []string, error), procs *agent.ProcGovernorSwitch, logger hclog.Logger, sigs <-chan os.Signal) int {
	// Start, giving up on start-up at the first SIGINT or SIGTERM.
	startCtx, cancelStart := context.WithCancel(context.Background())
	defer cancelStart()
	startErr := make(chan error, 1)
	go func() { startErr <- a.Start(startCtx) }()
	for started := false; !started; {
		select {
		case err := <-startErr:
			if err != nil {
				logger.Error("failed to start agent", "error", err)
				return exitError
			}
			started = true
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				logger.Info("ignoring SIGHUP during start-up")
				continue
			}
			logger.Info("caught signal during start-up, stopping", "signal", sig)
			cancelStart()
			select {
			case <-startErr:
			case sig := <-sigs:
				logger.Warn("caught second signal, exiting immediately", "signal", sig)
				return exitError
			}
			return shutdown(a, logger, sigs)
		}
	}

	banner := []any{
		"version", agent.Version,
		"http", a.HTTPAddr(),
		"roles", roles(cfg),
		"region", cfg.Region,
		"datacenter", cfg.Datacenter,
		"node", cfg.Name,
	}
	if cfg.DevMode {
		banner = append(banner, "dev", true)
	}
	logger.Info("Tether agent started", banner...)

	for sig := range sigs {
		if sig != syscall.SIGHUP {
			logger.Info("caught signal, shutting down", "signal", sig)
			return shutdown(a, logger, sigs)
		}

		logger.Info("caught SIGHUP, reloading configuration")
		newCfg, warnings, err := reload()
		for _, w := range warnings {
			logger.Warn(w)
		}
		if err != nil {
			logger.Error("failed to reload configuration; keeping the running one", "error", err)
			continue
		}
		if lvl := hclog.LevelFromString(newCfg.LogLevel); lvl != hclog.NoLevel {
			logger.SetLevel(lvl)
		}
		if err := a.Reload(newCfg); err != nil {
			logger.Error("failed to apply reloaded configuration", "error", err)
			continue
		}
		procs.Set(newCfg.GOMAXPROCSGovernor)
		logger.Info("configuration reloaded", "files", newCfg.Files)
	}
	// The signal channel is never closed while serving.
	return exitOK
}

// shutdown stops a gracefully within shutdownTimeout. A second SIGINT or
// SIGTERM exits at once.
func shutdown(a agentRunner, logger hclog.Logger, sigs <-chan os.Signal) int {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Shutdown(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				logger.Error("shutdown failed", "error", err)
				return exitError
			}
			logger.Info("agent stopped")
			return exitOK
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			logger.Warn("caught second signal, exiting immediately", "signal", sig)
			return exitError
		}
	}
}
