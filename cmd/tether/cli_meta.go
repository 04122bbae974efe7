package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
	"github.com/ryanuber/columnize"
)

// meta is what every API command shares: the connection flags (with
// Nomad's names, over the NOMAD_* environment the official client reads),
// the output streams and the client built from them.
type meta struct {
	ui     cli.Ui
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader

	address       string
	token         string
	region        string
	namespace     string
	caCert        string
	caPath        string
	clientCert    string
	clientKey     string
	tlsServerName string
	tlsSkipVerify bool
}

// flagSet returns a flag set with the connection flags registered. Its
// errors are reported by the command (usage, exit 1), never by the flag
// package exiting the process.
func (m *meta) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&m.address, "address", "", "")
	fs.StringVar(&m.token, "token", "", "")
	fs.StringVar(&m.region, "region", "", "")
	fs.StringVar(&m.namespace, "namespace", "", "")
	fs.StringVar(&m.caCert, "ca-cert", "", "")
	fs.StringVar(&m.caPath, "ca-path", "", "")
	fs.StringVar(&m.clientCert, "client-cert", "", "")
	fs.StringVar(&m.clientKey, "client-key", "", "")
	fs.StringVar(&m.tlsServerName, "tls-server-name", "", "")
	fs.BoolVar(&m.tlsSkipVerify, "tls-skip-verify", false, "")
	return fs
}

// parse parses args into fs; on a bad flag it prints the error and
// returns false (the caller returns cli.RunResultHelp).
func (m *meta) parse(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			m.ui.Error(err.Error())
		}
		return false
	}
	return true
}

// argsRule is how many positional arguments a command takes, and the
// line it prints when it gets another number.
type argsRule struct {
	min, max int
	usage    string
}

// noArgs is the rule of a command that takes no arguments.
var noArgs = argsRule{0, 0, "This command takes no arguments"}

// oneArg is the rule of a command that takes the one argument what.
func oneArg(what string) argsRule {
	return argsRule{1, 1, "This command takes one argument: " + what}
}

// nArgs is the rule of a command that takes exactly n arguments.
func nArgs(n int) argsRule {
	return argsRule{n, n, fmt.Sprintf("This command takes %d argument(s)", n)}
}

// start parses a command's flags (register, if not nil, adds its own),
// checks its positional arguments against rule and makes the API client.
// It returns the client and the arguments, or a nil client and the exit
// code.
func (m *meta) start(name string, args []string, rule argsRule, register func(*flagSetT)) (*nomad.Client, []string, int) {
	fs := m.flagSet(name)
	if register != nil {
		register(fs)
	}
	if !m.parse(fs, args) {
		return nil, nil, cli.RunResultHelp
	}
	if fs.NArg() < rule.min || fs.NArg() > rule.max {
		m.ui.Error(rule.usage)
		return nil, nil, cli.RunResultHelp
	}
	c, err := m.client()
	if err != nil {
		m.ui.Error(err.Error())
		return nil, nil, 1
	}
	return c, fs.Args(), 0
}

// client returns an official API client configured as Nomad's CLI
// configures it: api.DefaultConfig reads the NOMAD_* environment, and
// each flag given overrides it.
func (m *meta) client() (*nomad.Client, error) {
	c, err := nomad.NewClient(m.config())
	if err != nil {
		return nil, fmt.Errorf("Error initializing client: %w", err)
	}
	return c, nil
}

// config is the official client's configuration: api.DefaultConfig (the
// NOMAD_* environment) with the flags given on top.
func (m *meta) config() *nomad.Config {
	cfg := nomad.DefaultConfig()
	if m.address != "" {
		cfg.Address = m.address
	}
	if m.token != "" {
		cfg.SecretID = m.token
	}
	if m.region != "" {
		cfg.Region = m.region
	}
	if m.namespace != "" {
		cfg.Namespace = m.namespace
	}
	if m.caCert != "" || m.caPath != "" || m.clientCert != "" || m.clientKey != "" ||
		m.tlsServerName != "" || m.tlsSkipVerify {
		if cfg.TLSConfig == nil {
			cfg.TLSConfig = &nomad.TLSConfig{}
		}
		t := cfg.TLSConfig
		if m.caCert != "" {
			t.CACert = m.caCert
		}
		if m.caPath != "" {
			t.CAPath = m.caPath
		}
		if m.clientCert != "" {
			t.ClientCert = m.clientCert
		}
		if m.clientKey != "" {
			t.ClientKey = m.clientKey
		}
		if m.tlsServerName != "" {
			t.TLSServerName = m.tlsServerName
		}
		if m.tlsSkipVerify {
			t.Insecure = true
		}
	}
	return cfg
}

// apiError renders an API error as one line: an unreachable agent names
// the address and the cause, an HTTP error keeps the server's text.
func (m *meta) apiError(what string, err error) {
	var ue *url.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &oe) && errors.As(err, &ue):
		m.ui.Error(fmt.Sprintf("Error %s: cannot reach %s: %v", what, hostOf(ue.URL), oe.Err))
	case errors.As(err, &ue):
		m.ui.Error(fmt.Sprintf("Error %s: %s: %v", what, hostOf(ue.URL), ue.Err))
	default:
		m.ui.Error(fmt.Sprintf("Error %s: %v", what, err))
	}
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	return u.Scheme + "://" + u.Host
}

// connFlags are the completion entries of the connection flags.
func connFlags() complete.Flags {
	return complete.Flags{
		"-address": complete.PredictAnything, "-token": complete.PredictAnything,
		"-region": complete.PredictAnything, "-namespace": complete.PredictAnything,
		"-ca-cert": complete.PredictFiles("*"), "-ca-path": complete.PredictDirs("*"),
		"-client-cert": complete.PredictFiles("*"), "-client-key": complete.PredictFiles("*"),
		"-tls-server-name": complete.PredictAnything, "-tls-skip-verify": complete.PredictNothing,
	}
}

func mergeFlags(fl ...complete.Flags) complete.Flags {
	out := complete.Flags{}
	for _, f := range fl {
		for k, v := range f {
			out[k] = v
		}
	}
	return out
}

const connHelp = `
General Options:

  -address=<addr>     The address of the Tether server (env NOMAD_ADDR,
                      default http://127.0.0.1:4646).
  -token=<secret>     The SecretID of an ACL token (env NOMAD_TOKEN).
  -region=<region>    The region to forward to (env NOMAD_REGION).
  -namespace=<ns>     The target namespace (env NOMAD_NAMESPACE).
  -ca-cert=<path>     A PEM CA file to verify the server (env NOMAD_CACERT).
  -ca-path=<path>     A directory of PEM CA files (env NOMAD_CAPATH).
  -client-cert=<path> A PEM client certificate (env NOMAD_CLIENT_CERT).
  -client-key=<path>  The client certificate's key (env NOMAD_CLIENT_KEY).
  -tls-server-name=<name>
                      The server name to verify (env NOMAD_TLS_SERVER_NAME).
  -tls-skip-verify    Do not verify the server's certificate
                      (env NOMAD_SKIP_VERIFY).
`

// Output helpers.

// formatList aligns rows of "a|b|c" as Nomad's tables.
func formatList(rows []string) string {
	c := columnize.DefaultConfig()
	c.Empty = "<none>"
	return columnize.Format(rows, c)
}

// formatKV aligns rows of "key|value" as Nomad's "key = value" blocks.
func formatKV(rows []string) string {
	c := columnize.DefaultConfig()
	c.Empty = "<none>"
	c.Glue = " = "
	return columnize.Format(rows, c)
}

// formatMap renders a map as a sorted key = value block.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rows := make([]string, 0, len(keys))
	for _, k := range keys {
		rows = append(rows, k+"|"+m[k])
	}
	return formatKV(rows)
}

// shortID is the 8-character form of an ID in tables, or the full ID
// with -verbose.
func shortID(id string, verbose bool) string {
	if verbose || len(id) <= 8 {
		return id
	}
	return id[:8]
}

// formatTime is Nomad's absolute time: RFC 3339 in UTC.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return t.UTC().Format(time.RFC3339)
}

func formatUnixNano(n int64) string {
	if n == 0 {
		return "N/A"
	}
	return formatTime(time.Unix(0, n))
}

// prettyTimeDiff is Nomad's relative time: "5s ago", "3m12s ago",
// "2h5m ago", "3d4h ago", with the two largest units.
func prettyTimeDiff(first, now time.Time) string {
	if first.IsZero() || first.Unix() == 0 {
		return "N/A"
	}
	d := now.Sub(first)
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, " from now"
	}
	d = d.Round(time.Second)
	if d == 0 {
		return "0s" + suffix
	}
	units := []struct {
		n string
		d time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}}
	var b strings.Builder
	parts := 0
	for _, u := range units {
		if d >= u.d && parts < 2 {
			fmt.Fprintf(&b, "%d%s", d/u.d, u.n)
			d %= u.d
			parts++
		} else if parts > 0 {
			parts = 2 // only adjacent units
		}
	}
	return b.String() + suffix
}

// humanBytes is Nomad's size format: "0 B", "250 B", "3.2 MiB", "24 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v < 10 {
		return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.0f %ciB", v, "KMGTPE"[exp])
}

// formatOut prints v as the API's JSON (-json) or through a Go template
// (-t). It reports whether it printed.
func (m *meta) formatOut(jsonOut bool, tmpl string, v any) (bool, int) {
	if !jsonOut && tmpl == "" {
		return false, 0
	}
	if jsonOut && tmpl != "" {
		m.ui.Error("Both -json and -t are not allowed")
		return true, 1
	}
	if jsonOut {
		b, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			m.ui.Error(fmt.Sprintf("Error formatting JSON: %v", err))
			return true, 1
		}
		m.ui.Output(string(b))
		return true, 0
	}
	t, err := template.New("out").Parse(tmpl)
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error parsing template: %v", err))
		return true, 1
	}
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		m.ui.Error(fmt.Sprintf("Error executing template: %v", err))
		return true, 1
	}
	m.ui.Output(b.String())
	return true, 0
}

// sanitizeUUIDPrefix trims an odd-length UUID prefix to even length, as
// the API matches UUID prefixes by whole bytes.
func sanitizeUUIDPrefix(p string) string {
	hex := strings.ReplaceAll(p, "-", "")
	if len(hex)%2 == 1 {
		return p[:len(p)-1]
	}
	return p
}

// errIDTooShort is returned for a one-character identifier.
var errIDTooShort = errors.New("Identifier must contain at least two characters.")

// readFileArg reads a file argument, "-" meaning stdin.
func (m *meta) readFileArg(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(m.stdin, maxInputBytes))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxInputBytes))
}

// maxInputBytes bounds a job file, policy file or request body read.
const maxInputBytes = 16 << 20

// flagSetT is the flag set of a command.
type flagSetT = flag.FlagSet
