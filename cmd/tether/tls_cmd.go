package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"

	"tether/agent"
)

const tlsUsageText = `Usage: tether tls <subcommand> [flags]

Creates a CA and certificates for a test or development cluster, with the
same names and files as Nomad's "nomad tls" helpers, written to the current
directory. Existing files are never overwritten. Production clusters
should use a real PKI.

Subcommands:
  ca create     Create a CA: nomad-agent-ca.pem and nomad-agent-ca-key.pem
  cert create   Create a certificate for a server (-server), a node
                (-client) or an operator (-cli), signed by the CA

Example, a CA and one certificate of each kind:
  tether tls ca create
  tether tls cert create -server
  tether tls cert create -client
  tether tls cert create -cli
`

// runTLS is "tether tls": it dispatches to "ca create" and "cert create".
func runTLS(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, tlsUsageText)
		return exitOK
	}
	if len(args) < 2 || args[1] != "create" || (args[0] != "ca" && args[0] != "cert") {
		fmt.Fprint(stderr, tlsUsageText)
		return exitUsage
	}
	if args[0] == "ca" {
		return runTLSCACreate(args[2:], stdout, stderr)
	}
	return runTLSCertCreate(args[2:], stdout, stderr)
}

const tlsCAUsageHeader = `Usage: tether tls ca create [flags]

Creates a CA certificate and its ECDSA P-256 key in the current directory:
<domain>-agent-ca.pem and <domain>-agent-ca-key.pem (mode 0600).

Flags:
`

// runTLSCACreate is "tether tls ca create".
func runTLSCACreate(args []string, stdout, stderr io.Writer) int {
	var o agent.CAOptions
	var extra stringList
	flags := flag.NewFlagSet("tether tls ca create", flag.ContinueOnError)
	flags.StringVar(&o.Domain, "domain", agent.DefaultTLSDomain, "Domain of the certificate names; the files are <domain>-agent-ca*.pem.")
	flags.StringVar(&o.CommonName, "common-name", "", `Common name of the CA. Default "Nomad Agent CA <serial>".`)
	flags.IntVar(&o.Days, "days", agent.DefaultCADays, "Days the CA is valid.")
	flags.BoolVar(&o.NameConstraint, "name-constraint", false, "Limit the CA to the domain, localhost and each -additional-domain.")
	flags.Var(&extra, "additional-domain", "A domain added to the name constraint. Repeatable.")
	if code, ok := parseTLSFlags(flags, args, tlsCAUsageHeader, stdout, stderr); !ok {
		return code
	}
	o.AdditionalDomains = extra
	if o.Days <= 0 {
		fmt.Fprintln(stderr, "tether tls ca create: -days must be positive")
		return exitUsage
	}
	certFile, keyFile := o.Domain+"-agent-ca.pem", o.Domain+"-agent-ca-key.pem"
	if err := checkNotExist(certFile, keyFile); err != nil {
		fmt.Fprintf(stderr, "tether tls ca create: %v\n", err)
		return exitError
	}
	cert, key, err := agent.GenerateCA(o)
	if err != nil {
		fmt.Fprintf(stderr, "tether tls ca create: %v\n", err)
		return exitError
	}
	if err := writeCertAndKey(certFile, cert, keyFile, key); err != nil {
		fmt.Fprintf(stderr, "tether tls ca create: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "==> CA certificate saved to: %s\n==> CA certificate key saved to: %s\n", certFile, keyFile)
	return exitOK
}

const tlsCertUsageHeader = `Usage: tether tls cert create -server|-client|-cli [flags]

Creates a certificate and its ECDSA P-256 key (mode 0600) in the current
directory, signed by the CA: <region>-<role>-<domain>.pem and
<region>-<role>-<domain>-key.pem. Server certificates are valid for
server.<region>.nomad, node certificates (-client) for client.<region>.nomad,
both also for localhost and 127.0.0.1; operator certificates (-cli) for
cli.<region>.nomad and localhost. With tls.verify_server_hostname, servers
accept RPC sessions only from server and client certificates of their
region, and nodes accept only server certificates.

Flags:
`

// runTLSCertCreate is "tether tls cert create".
func runTLSCertCreate(args []string, stdout, stderr io.Writer) int {
	var (
		o                   agent.CertOptions
		server, client, cli bool
		caFile, keyFile     string
		dnsNames, ipAddrs   stringList
	)
	flags := flag.NewFlagSet("tether tls cert create", flag.ContinueOnError)
	flags.BoolVar(&server, "server", false, "Create a server certificate.")
	flags.BoolVar(&client, "client", false, "Create a node agent (client) certificate.")
	flags.BoolVar(&cli, "cli", false, "Create an operator (CLI and API caller) certificate.")
	flags.StringVar(&o.Region, "region", "global", "Region of the agent the certificate is for.")
	flags.StringVar(&o.Region, "cluster-region", "global", "Same as -region (Nomad's older name).")
	flags.StringVar(&o.Domain, "domain", agent.DefaultTLSDomain, "Domain of the certificate names.")
	flags.StringVar(&o.Node, "node", "", "Name of the server; adds <node>.server.<region>.<domain>. Only with -server.")
	flags.IntVar(&o.Days, "days", agent.DefaultCertDays, "Days the certificate is valid.")
	flags.StringVar(&caFile, "ca", "", `CA certificate file. Default "<domain>-agent-ca.pem".`)
	flags.StringVar(&keyFile, "key", "", `CA key file. Default "<domain>-agent-ca-key.pem".`)
	flags.Var(&dnsNames, "additional-dnsname", "A DNS name the certificate is also valid for. Repeatable.")
	flags.Var(&ipAddrs, "additional-ipaddress", "An IP address the certificate is also valid for. Repeatable.")
	if code, ok := parseTLSFlags(flags, args, tlsCertUsageHeader, stdout, stderr); !ok {
		return code
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "tether tls cert create: %s\n\n%s", msg, tlsCertUsageHeader)
		flags.SetOutput(stderr)
		flags.PrintDefaults()
		return exitUsage
	}
	switch n := btoi(server) + btoi(client) + btoi(cli); {
	case n == 0:
		return usage("one of -server, -client or -cli is required")
	case n > 1:
		return usage("only one of -server, -client and -cli may be given")
	case server:
		o.Role = agent.RoleServer
	case client:
		o.Role = agent.RoleClient
	default:
		o.Role = agent.RoleCLI
	}
	if o.Days <= 0 {
		return usage("-days must be positive")
	}
	if o.Node != "" && !server {
		return usage("-node is only valid with -server")
	}
	o.DNSNames = dnsNames
	for _, s := range ipAddrs {
		ip := net.ParseIP(s)
		if ip == nil {
			return usage(fmt.Sprintf("-additional-ipaddress %q is not an IP address", s))
		}
		o.IPAddresses = append(o.IPAddresses, ip)
	}
	if caFile == "" {
		caFile = o.Domain + "-agent-ca.pem"
	}
	if keyFile == "" {
		keyFile = o.Domain + "-agent-ca-key.pem"
	}

	certOut, keyOut := agent.CertFileNames(o.Role, o.Region, o.Domain)
	if err := checkNotExist(certOut, keyOut); err != nil {
		fmt.Fprintf(stderr, "tether tls cert create: %v\n", err)
		return exitError
	}
	var err error
	if o.CACert, err = os.ReadFile(caFile); err != nil {
		fmt.Fprintf(stderr, "tether tls cert create: reading CA file (-ca): %v\n", err)
		return exitError
	}
	if o.CAKey, err = os.ReadFile(keyFile); err != nil {
		fmt.Fprintf(stderr, "tether tls cert create: reading CA key file (-key): %v\n", err)
		return exitError
	}
	cert, key, err := agent.GenerateCert(o)
	if err != nil {
		fmt.Fprintf(stderr, "tether tls cert create: %v\n", err)
		return exitError
	}
	if err := writeCertAndKey(certOut, cert, keyOut, key); err != nil {
		fmt.Fprintf(stderr, "tether tls cert create: %v\n", err)
		return exitError
	}
	kind := map[string]string{agent.RoleServer: "Server", agent.RoleClient: "Client", agent.RoleCLI: "Cli"}[o.Role]
	fmt.Fprintf(stdout, "==> Using CA file %s and CA key %s\n", caFile, keyFile)
	fmt.Fprintf(stdout, "==> %s Certificate saved to %s\n==> %s Certificate key saved to %s\n", kind, certOut, kind, keyOut)
	if server {
		fmt.Fprintln(stdout, "==> WARNING: a server certificate lets its holder act as a server of the region. Keep it on server hosts only, as safe as the CA key.")
	}
	return exitOK
}

// parseTLSFlags parses args with flags. On -h it prints the help to stdout,
// on a bad flag the error and the help to stderr; ok false means exit with
// code.
func parseTLSFlags(flags *flag.FlagSet, args []string, header string, stdout, stderr io.Writer) (code int, ok bool) {
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	err := flags.Parse(args)
	if err == nil && flags.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments: %s", strings.Join(flags.Args(), " "))
	}
	if err == nil {
		return exitOK, true
	}
	w, code := stderr, exitUsage
	if errors.Is(err, flag.ErrHelp) {
		w, code = stdout, exitOK
	} else {
		fmt.Fprintf(stderr, "%s: %v\n\n", flags.Name(), err)
	}
	fmt.Fprint(w, header)
	flags.SetOutput(w)
	flags.PrintDefaults()
	return code, false
}

// checkNotExist fails if any of the files exists: the helpers never
// overwrite a CA or a certificate.
func checkNotExist(files ...string) error {
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s already exists; remove it or work in another directory", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("checking %s: %w", f, err)
		}
	}
	return nil
}

// writeCertAndKey writes a certificate (0644) and its key (0600), creating
// both files (never overwriting). If the key cannot be written, the
// certificate is removed again.
func writeCertAndKey(certFile string, cert []byte, keyFile string, key []byte) error {
	if err := writeNewFile(certFile, cert, 0o644); err != nil {
		return err
	}
	if err := writeNewFile(keyFile, key, 0o600); err != nil {
		os.Remove(certFile)
		return err
	}
	return nil
}

// writeNewFile creates path with mode and writes b.
func writeNewFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// btoi is 1 for true.
func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
