package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
	"golang.org/x/term"
)

func operatorCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"operator":      &group{synopsis: "Operator commands", help: "Usage: tether operator <subcommand> [options]"},
		"operator raft": &group{synopsis: "Raft commands", help: "Usage: tether operator raft list-peers"},
		"server":        &group{synopsis: "Server commands", help: "Usage: tether server members"},
		"system":        &group{synopsis: "System maintenance commands", help: "Usage: tether system gc"},
		"system gc": &command{m: m, synopsis: "Collect terminal jobs, evaluations and allocations",
			help: `
Usage: tether system gc

  Asks the servers to collect terminal jobs, evaluations and allocations,
  and every node to collect its terminal allocations. Needs a management
  token when ACLs are on.
`,
			run: runSystemGC,
		},
		"operator api": &command{m: m, synopsis: "Call any HTTP API path with the CLI's address, token and TLS",
			help: `
Usage: tether operator api [options] <path>

  Sends a request to the HTTP API with the address, token and TLS of the
  other commands and prints the response body. When stdin is not a
  terminal its content is the request body, and the method defaults to
  POST instead of GET, as curl does.

Options:
  -X <method>    The HTTP method (default GET, or POST with a body).
  -H <header>    A header "Name: value"; may be repeated.
  -filter <expr> A filter expression for list endpoints.
`,
			flags: complete.Flags{"-X": complete.PredictSet("GET", "PUT", "POST", "DELETE"),
				"-H": complete.PredictAnything, "-filter": complete.PredictAnything},
			run: runOperatorAPI,
		},
		"operator raft list-peers": &command{m: m, synopsis: "List the raft peers and which one leads",
			help:  "Usage: tether operator raft list-peers [-json]",
			flags: complete.Flags{"-json": complete.PredictNothing},
			run:   runRaftListPeers,
		},
		"server members": &command{m: m, synopsis: "List the servers in the gossip pool",
			help: `
Usage: tether server members [options]

Options:
  -verbose    All the servers' tags.
  -json       Print the API's JSON.
`,
			flags: complete.Flags{"-verbose": complete.PredictNothing, "-json": complete.PredictNothing},
			run:   runServerMembers,
		},
	}
}

// headerFlag collects repeated -H "Name: value" flags.
type headerFlag []string

func (h *headerFlag) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlag) Set(v string) error { *h = append(*h, v); return nil }

func runOperatorAPI(m *meta, args []string) int {
	fs := m.flagSet("operator api")
	var method, filter string
	var headers headerFlag
	fs.StringVar(&method, "X", "", "")
	fs.Var(&headers, "H", "")
	fs.StringVar(&filter, "filter", "", "")
	if !m.parse(fs, args) {
		return cli.RunResultHelp
	}
	if fs.NArg() != 1 {
		m.ui.Error("This command takes one argument: <path>")
		return cli.RunResultHelp
	}
	var body []byte
	if !isTerminal(m.stdin) {
		b, err := io.ReadAll(io.LimitReader(m.stdin, maxInputBytes+1))
		if err != nil {
			m.ui.Error(fmt.Sprintf("Error reading stdin: %v", err))
			return 1
		}
		if len(b) > maxInputBytes {
			m.ui.Error(fmt.Sprintf("Error reading stdin: body over %d bytes", maxInputBytes))
			return 1
		}
		body = b
	}
	if method == "" {
		method = http.MethodGet
		if len(body) > 0 {
			method = http.MethodPost
		}
	}
	cfg := m.config()
	base, err := url.Parse(cfg.Address)
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error parsing address %q: %v", cfg.Address, err))
		return 1
	}
	path := fs.Arg(0)
	// A full URL is accepted as Nomad's CLI accepts one; only its path and
	// query are used, against the configured address.
	if u, err := url.Parse(path); err == nil && u.Scheme != "" {
		path = u.RequestURI()
	}
	ref, err := url.Parse(path)
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error parsing path %q: %v", path, err))
		return 1
	}
	target := base.ResolveReference(ref)
	q := target.Query()
	if filter != "" {
		q.Set("filter", filter)
	}
	if cfg.Region != "" && q.Get("region") == "" {
		q.Set("region", cfg.Region)
	}
	if cfg.Namespace != "" && q.Get("namespace") == "" {
		q.Set("namespace", cfg.Namespace)
	}
	target.RawQuery = q.Encode()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, strings.ToUpper(method), target.String(), bytes.NewReader(body))
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error making request: %v", err))
		return 1
	}
	if cfg.SecretID != "" {
		req.Header.Set("X-Nomad-Token", cfg.SecretID)
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			m.ui.Error(fmt.Sprintf("Error parsing -H %q: want \"Name: value\"", h))
			return cli.RunResultHelp
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	if base.Scheme == "https" || cfg.TLSConfig != nil {
		if err := nomad.ConfigureTLS(hc, cfg.TLSConfig); err != nil {
			m.ui.Error(fmt.Sprintf("Error configuring TLS: %v", err))
			return 1
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		m.apiError("querying "+path, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		m.ui.Error(fmt.Sprintf("Error querying %s: Unexpected response code %d (%s)", path, resp.StatusCode, strings.TrimSpace(string(b))))
		return 1
	}
	if _, err := io.Copy(m.stdout, resp.Body); err != nil && ctx.Err() == nil {
		m.ui.Error(fmt.Sprintf("Error reading response: %v", err))
		return 1
	}
	return 0
}

func runSystemGC(m *meta, args []string) int {
	c, _, code := m.start("system gc", args, noArgs, nil)
	if c == nil {
		return code
	}
	if err := c.System().GarbageCollect(); err != nil {
		m.apiError("running system garbage collection", err)
		return 1
	}
	return 0
}

func runRaftListPeers(m *meta, args []string) int {
	var jsonOut bool
	c, _, code := m.start("operator raft list-peers", args, noArgs, func(fs *flagSetT) {
		fs.BoolVar(&jsonOut, "json", false, "")
	})
	if c == nil {
		return code
	}
	rc, err := c.Operator().RaftGetConfiguration(nil)
	if err != nil {
		m.apiError("retrieving operator raft configuration", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, "", rc); done {
		return code
	}
	rows := []string{"Node|ID|Address|State|Voter|RaftProtocol"}
	for _, s := range rc.Servers {
		state := "follower"
		if s.Leader {
			state = "leader"
		}
		rows = append(rows, fmt.Sprintf("%s|%s|%s|%s|%v|%s", s.Node, s.ID, s.Address, state, s.Voter, s.RaftProtocol))
	}
	m.ui.Output(formatList(rows))
	return 0
}

func runServerMembers(m *meta, args []string) int {
	var verbose, jsonOut bool
	c, _, code := m.start("server members", args, noArgs, func(fs *flagSetT) {
		fs.BoolVar(&verbose, "verbose", false, "")
		fs.BoolVar(&jsonOut, "json", false, "")
	})
	if c == nil {
		return code
	}
	mem, err := c.Agent().Members()
	if err != nil {
		m.apiError("querying servers", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, "", mem.Members); done {
		return code
	}
	sort.Sort(nomad.AgentMembersNameSort(mem.Members))
	// A member leads when its RPC address is the leader's, as the leader
	// is known to the servers (an error leaves every Leader false).
	leader, _ := c.Status().Leader()
	rows := []string{"Name|Address|Port|Status|Leader|Raft Version|Build|Datacenter|Region"}
	if verbose {
		rows[0] += "|Tags"
	}
	for _, s := range mem.Members {
		rv := s.Tags["raft_vsn"]
		if rv == "" {
			rv = "3"
		}
		row := fmt.Sprintf("%s|%s|%d|%s|%v|%s|%s|%s|%s", s.Name, s.Addr, s.Port, s.Status,
			leader != "" && (leader == s.Tags["rpc_addr"] || leader == net.JoinHostPort(s.Addr, s.Tags["port"])), rv, s.Tags["build"], s.Tags["dc"], s.Tags["region"])
		if verbose {
			keys := make([]string, 0, len(s.Tags))
			for k := range s.Tags {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var tags []string
			for _, k := range keys {
				tags = append(tags, k+"="+s.Tags[k])
			}
			row += "|" + strings.Join(tags, ",")
		}
		rows = append(rows, row)
	}
	m.ui.Output(formatList(rows))
	return 0
}

// isTerminal reports whether r is a terminal.
func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
