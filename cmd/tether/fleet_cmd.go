package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/agent"
	"tether/client"
	"tether/rpc"
)

const fleetUsageHeader = `Usage: tether fleet -servers HOST:PORT[,HOST:PORT...] -nodes N [flags]

Runs N simulated nodes in one process against the servers, for testing a
cluster at fleet size. Each node is a real node agent: its own node ID and
secret, its own connection and session, registration, heartbeats, dynamic
metadata, allocations (mock_driver only: no processes) and every client
endpoint. One host-stats sample and one fingerprint serve them all.

Nodes register with their node secret and need no ACL token; -token is
the fleet's own token for checking that the servers list its nodes
(node:read). With -token, nodes check each call's token themselves, as
nodes of a cluster with ACLs on do (-acl=false turns that off).

Prints progress every -progress, and a line when every node has
registered. SIGINT/SIGTERM stop every node and exit 0 (a second one exits
at once); a temporary data dir is removed.

Flags:
`

// fleetFlags holds the parsed flags of "tether fleet".
type fleetFlags struct {
	servers    string
	nodes      int
	dataDir    string
	dc         string
	region     string
	nodePool   string
	namePrefix string
	token      string
	acl        bool
	caFile     string
	certFile   string
	keyFile    string
	verifyHost bool
	startRate  float64
	startBurst int
	statsEvery time.Duration
	progress   time.Duration
	logLevel   string
	nodeLevel  string
	gcPercent  int

	set map[string]bool
}

// defaultFleetGCPercent is the fleet's GC target: the runtime's own. A
// fleet's heap is thousands of idle sessions that live as long as the
// process, so a lower target saves memory (3,000 mTLS nodes: 87 KiB RSS
// per node at 100, 67 KiB at 25), but each collection marks all of them,
// and every call to every node waits while the process is in one: on two
// shared cores at 10,000 nodes a cycle held the calls for about a second,
// GOGC 25 ran one every 4 s of a 1,000 req/s load (p99 1.2 s, and a
// 52 s cold start against 26 s), and a server kill under it left half
// the calls to the other nodes failing for two minutes. A simulator that
// distorts the latencies it is there to measure is worse than one that
// needs more memory; -gc-percent 25 is there for a fleet run for size.
// Only the fleet command sets it; agents keep the runtime's default.
const defaultFleetGCPercent = 100

func newFleetFlagSet(f *fleetFlags) *flag.FlagSet {
	d := client.DefaultFleetConfig()
	fs := flag.NewFlagSet("tether fleet", flag.ContinueOnError)
	fs.StringVar(&f.servers, "servers", "", "Comma-separated server RPC addresses (host:port) every node dials. Required.")
	fs.IntVar(&f.nodes, "nodes", 0, "Number of simulated nodes. Required.")
	fs.StringVar(&f.dataDir, "data-dir", "", "Directory for the nodes' state (one dir per node); a fleet started again on it\nis the same nodes. Default: a temporary dir removed on exit.")
	fs.StringVar(&f.dc, "datacenter", d.Datacenter, "Datacenter of every node.")
	fs.StringVar(&f.region, "region", d.Region, "Region of every node (also the region in the servers' certificate name).")
	fs.StringVar(&f.nodePool, "node-pool", d.NodePool, "Node pool of every node.")
	fs.StringVar(&f.namePrefix, "name-prefix", d.NamePrefix, "Node names are this prefix and the node's index (fleet-00000, ...).")
	fs.StringVar(&f.token, "token", "", "ACL token of the fleet's own check that the servers list its nodes (needs\nnode:read). Default $NOMAD_TOKEN.")
	fs.BoolVar(&f.acl, "acl", false, "Nodes check each call's ACL token themselves (default true with -token).")
	fs.StringVar(&f.caFile, "tls-ca-file", "", "PEM CA bundle that verifies the servers (with -tls-cert-file and -tls-key-file:\nmutual TLS on the RPC port).")
	fs.StringVar(&f.certFile, "tls-cert-file", "", "PEM certificate the nodes present (a client certificate: client.<region>.nomad).")
	fs.StringVar(&f.keyFile, "tls-key-file", "", "PEM private key of -tls-cert-file.")
	fs.BoolVar(&f.verifyHost, "tls-verify-server-hostname", false, "Check that servers' certificates are valid for server.<region>.nomad.")
	fs.Float64Var(&f.startRate, "start-rate", d.StartRate, "Nodes started (dialing) per second.")
	fs.IntVar(&f.startBurst, "start-burst", d.StartBurst, "Nodes that may start at once.")
	fs.DurationVar(&f.statsEvery, "stats-interval", d.StatsInterval, "How often the one host-stats sample all nodes serve is taken.")
	fs.DurationVar(&f.progress, "progress", 5*time.Second, "How often a progress line is printed; 0 prints none.")
	fs.StringVar(&f.logLevel, "log-level", "INFO", "Log level of the fleet's own logs: TRACE, DEBUG, INFO, WARN or ERROR.")
	fs.StringVar(&f.nodeLevel, "node-log-level", "ERROR", "Log level of the nodes' logs (each line names its node).")
	fs.IntVar(&f.gcPercent, "gc-percent", defaultFleetGCPercent, "The fleet process's GC target (as GOGC). Its heap is mostly live sessions:\n25 saves a quarter of its memory, but collections run four times as often and\nstall every node's calls while they mark. A GOGC in the environment wins\nunless this flag is given; -1 turns the collector off.")
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func fleetUsage(w io.Writer) {
	fs := newFleetFlagSet(&fleetFlags{})
	fs.SetOutput(w)
	fmt.Fprint(w, fleetUsageHeader)
	fs.PrintDefaults()
}

// parseFleetFlags parses args. When it returns ok false the command should
// exit with code.
func parseFleetFlags(args []string, stdout, stderr io.Writer) (f *fleetFlags, code int, ok bool) {
	f = &fleetFlags{set: map[string]bool{}}
	fs := newFleetFlagSet(f)
	fail := func(format string, a ...any) (*fleetFlags, int, bool) {
		fmt.Fprintf(stderr, "tether fleet: "+format+"\n\n", a...)
		fleetUsage(stderr)
		return nil, exitUsage, false
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fleetUsage(stdout)
			return nil, exitOK, false
		}
		return fail("%v", err)
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	tlsGiven := 0
	for _, v := range []string{f.caFile, f.certFile, f.keyFile} {
		if v != "" {
			tlsGiven++
		}
	}
	if tlsGiven != 0 && tlsGiven != 3 {
		return fail("-tls-ca-file, -tls-cert-file and -tls-key-file go together")
	}
	if hclog.LevelFromString(f.logLevel) == hclog.NoLevel {
		return fail("-log-level %q is invalid", f.logLevel)
	}
	if hclog.LevelFromString(f.nodeLevel) == hclog.NoLevel {
		return fail("-node-log-level %q is invalid", f.nodeLevel)
	}
	if f.progress < 0 {
		return fail("-progress must not be negative")
	}
	return f, exitOK, true
}

// fleetConfig builds the fleet's configuration from the flags; getenv
// reads NOMAD_TOKEN.
func (f *fleetFlags) fleetConfig(getenv func(string) string) (*client.FleetConfig, error) {
	cfg := client.DefaultFleetConfig()
	cfg.Servers = splitList(f.servers)
	cfg.Nodes = f.nodes
	cfg.DataDir = f.dataDir
	cfg.Datacenter = f.dc
	cfg.Region = f.region
	cfg.NodePool = f.nodePool
	cfg.NamePrefix = f.namePrefix
	cfg.Token = f.token
	if !f.set["token"] {
		cfg.Token = getenv("NOMAD_TOKEN")
	}
	cfg.ACLEnabled = f.acl
	if !f.set["acl"] {
		cfg.ACLEnabled = cfg.Token != ""
	}
	cfg.StartRate = f.startRate
	cfg.StartBurst = f.startBurst
	cfg.StatsInterval = f.statsEvery
	cfg.Version = agent.NomadVersion
	if f.caFile != "" {
		tc, err := agent.NodeRPCTLS(agent.TLSConfig{
			CAFile:               f.caFile,
			CertFile:             f.certFile,
			KeyFile:              f.keyFile,
			VerifyServerHostname: f.verifyHost,
		}, f.region)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.RPC = rpc.DefaultConfig()
		cfg.RPC.TLSConfig = tc
	}
	if err := cfg.Verify(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// fleetRunner is the part of *client.Fleet the command drives.
type fleetRunner interface {
	Start()
	Shutdown() error
	Status() client.FleetStatus
	RegisteredCount() int
	Started() <-chan struct{}
	Err() error
	CountReady(ctx context.Context) (int, error)
	DataDir() string
}

// newFleet creates the fleet; tests may replace it.
var newFleet = func(cfg *client.FleetConfig) (fleetRunner, error) {
	return client.NewFleet(cfg)
}

// runFleet is "tether fleet". It returns the exit code.
func runFleet(args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseFleetFlags(args, stdout, stderr)
	if !ok {
		return code
	}
	cfg, err := f.fleetConfig(os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "tether fleet: %v\n", err)
		return exitUsage
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{
		Name:   "fleet",
		Level:  hclog.LevelFromString(f.logLevel),
		Output: stderr,
	})
	cfg.NodeLogger = hclog.New(&hclog.LoggerOptions{
		Name:   "fleet.node",
		Level:  hclog.LevelFromString(f.nodeLevel),
		Output: stderr,
	})
	if _, env := os.LookupEnv("GOGC"); !env || f.set["gc-percent"] {
		defer debug.SetGCPercent(debug.SetGCPercent(f.gcPercent))
	}
	fl, err := newFleet(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "tether fleet: %v\n", err)
		return exitError
	}
	sigs := make(chan os.Signal, 4)
	stop := notifySignals(sigs)
	defer stop()
	fmt.Fprintf(stdout, "fleet: starting %d nodes against %s (data dir %s, %.0f nodes/s)\n",
		cfg.Nodes, strings.Join(cfg.Servers, ","), fl.DataDir(), cfg.StartRate)
	fl.Start()
	code = watchFleet(fl, cfg, f.progress, stdout, sigs)
	fmt.Fprintln(stdout, "fleet: stopping")
	done := make(chan error, 1)
	go func() { done <- fl.Shutdown() }()
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(stderr, "tether fleet: %v\n", err)
				return exitError
			}
			fmt.Fprintln(stdout, "fleet: stopped")
			return code
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			fmt.Fprintf(stderr, "tether fleet: caught second signal (%v), exiting immediately\n", sig)
			return exitError
		}
	}
}

// watchFleet prints progress until a signal (exitOK) or a node that
// cannot be created (exitError).
func watchFleet(fl fleetRunner, cfg *client.FleetConfig, every time.Duration, stdout io.Writer, sigs <-chan os.Signal) int {
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	// Whether every node has registered is looked at often, whatever
	// the progress interval, so that the line saying so is on time.
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	started := fl.Started()
	allRegistered := false
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			fmt.Fprintf(stdout, "fleet: caught %v\n", sig)
			return exitOK
		case <-started:
			started = nil
			if err := fl.Err(); err != nil {
				fmt.Fprintf(stdout, "fleet: %v\n", err)
				return exitError
			}
		case <-tick:
			fmt.Fprintln(stdout, progressLine(fl.Status()))
		case <-poll.C:
			if allRegistered || fl.RegisteredCount() < cfg.Nodes {
				continue
			}
			allRegistered = true
			// The cold start's garbage (thousands of TLS handshakes and
			// registrations) is gone once every node is registered, and
			// the stacks that grew in them are a quarter used: one
			// collection now halves those stacks and gives the freed
			// pages back, where the runtime alone would keep them until
			// its scavenger or a forced collection minutes later.
			debug.FreeOSMemory()
			st := fl.Status()
			fmt.Fprintf(stdout, "fleet: all %d nodes registered in %s\n", st.Nodes, st.Elapsed.Round(time.Millisecond))
			fmt.Fprintln(stdout, progressLine(st))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			n, err := fl.CountReady(ctx)
			cancel()
			if err != nil {
				hint := ""
				if cfg.Token == "" {
					hint = " (with ACLs on, pass -token with node:read)"
				}
				fmt.Fprintf(stdout, "fleet: cannot ask the servers for the nodes: %v%s\n", err, hint)
				continue
			}
			fmt.Fprintf(stdout, "fleet: the servers list %d of %d nodes ready\n", n, st.Nodes)
		}
	}
}

// progressLine is one progress line: counts and the spread over servers.
func progressLine(st client.FleetStatus) string {
	addrs := make([]string, 0, len(st.PerServer))
	for a := range st.PerServer {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	per := make([]string, 0, len(addrs))
	for _, a := range addrs {
		per = append(per, fmt.Sprintf("%s=%d", a, st.PerServer[a]))
	}
	return fmt.Sprintf("fleet: %s started=%d/%d registered=%d connected=%d servers=[%s]",
		st.Elapsed.Round(100*time.Millisecond), st.Started, st.Nodes, st.Registered, st.Connected, strings.Join(per, " "))
}
