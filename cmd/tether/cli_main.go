package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/cli"
	"github.com/posener/complete"
)

// command is one operator CLI command: its help, its completion and the
// function that runs it. The connection flags and output come from meta.
type command struct {
	m        *meta
	synopsis string
	help     string
	flags    complete.Flags
	args     complete.Predictor
	run      func(m *meta, args []string) int
}

func (c *command) Help() string     { return strings.TrimSpace(c.help) + "\n" + connHelp }
func (c *command) Synopsis() string { return c.synopsis }
func (c *command) Run(args []string) int {
	return c.run(c.m, args)
}

// AutocompleteFlags lists the command's flags and the connection flags.
func (c *command) AutocompleteFlags() complete.Flags { return mergeFlags(connFlags(), c.flags) }

// AutocompleteArgs predicts the command's positional arguments.
func (c *command) AutocompleteArgs() complete.Predictor {
	if c.args == nil {
		return complete.PredictNothing
	}
	return c.args
}

// group is a command that only has subcommands ("node", "acl token").
type group struct {
	synopsis string
	help     string
}

func (g *group) Help() string          { return strings.TrimSpace(g.help) }
func (g *group) Synopsis() string      { return g.synopsis }
func (g *group) Run(args []string) int { return cli.RunResultHelp }

// cliCommands returns the operator CLI's command table for m.
func cliCommands(m *meta) map[string]cli.CommandFactory {
	out := map[string]cli.CommandFactory{}
	add := func(name string, c cli.Command) {
		out[name] = func() (cli.Command, error) { return c, nil }
	}
	for name, c := range nodeCommands(m) {
		add(name, c)
	}
	for name, c := range allocCommands(m) {
		add(name, c)
	}
	for name, c := range allocExecCommands(m) {
		add(name, c)
	}
	for name, c := range jobCommands(m) {
		add(name, c)
	}
	for name, c := range jobLogsCommands(m) {
		add(name, c)
	}
	for name, c := range operatorCommands(m) {
		add(name, c)
	}
	for name, c := range aclCommands(m) {
		add(name, c)
	}
	for name, c := range monitorCommands(m) {
		add(name, c)
	}
	for name, c := range completionCommands(m) {
		add(name, c)
	}
	return out
}

// isCLICommand reports whether name is a top-level operator CLI command.
func isCLICommand(name string) bool {
	_, ok := cliCommands(&meta{})[name]
	return ok
}

// runCLI runs an operator CLI command (or answers a shell completion
// request) and returns the exit code.
func runCLI(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	m := &meta{
		stdout: stdout, stderr: stderr, stdin: stdin,
		ui: &cli.BasicUi{Reader: stdin, Writer: stdout, ErrorWriter: stderr},
	}
	cmds := cliCommands(m)
	// The agent's own commands complete too.
	for _, name := range []string{"agent", "fleet", "tls", "version"} {
		cmds[name] = func() (cli.Command, error) { return &group{synopsis: name}, nil }
	}
	c := &cli.CLI{
		Name:                       "tether",
		Args:                       args,
		Commands:                   cmds,
		HelpFunc:                   cliHelp,
		HelpWriter:                 stdout,
		ErrorWriter:                stderr,
		Autocomplete:               true,
		AutocompleteNoDefaultFlags: true,
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	if code == 127 { // unknown subcommand: usage was printed
		return 1
	}
	return code
}

// cliHelp is the usage of a command group: its subcommands, sorted.
func cliHelp(cmds map[string]cli.CommandFactory) string {
	names := make([]string, 0, len(cmds))
	width := 0
	for n := range cmds {
		names = append(names, n)
		if len(n) > width {
			width = len(n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("Usage: tether [-version] [-help] <command> [args]\n\nCommands:\n")
	for _, n := range names {
		c, err := cmds[n]()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "    %-*s  %s\n", width, n, c.Synopsis())
	}
	return b.String()
}

func completionCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"completion": &command{m: m, synopsis: "Print a shell completion script (bash, zsh)",
			help: `
Usage: tether completion bash|zsh

  Prints a script that makes the shell complete tether's commands, flags
  and node, allocation and job IDs (asked of the API as you type).

    bash:  source <(tether completion bash)
    zsh:   source <(tether completion zsh)
`,
			args: complete.PredictSet("bash", "zsh"),
			run:  runCompletion,
		},
	}
}

func runCompletion(m *meta, args []string) int {
	if len(args) != 1 {
		return cli.RunResultHelp
	}
	self, err := os.Executable()
	if err != nil {
		self = "tether"
	}
	q := shellQuote(self)
	switch args[0] {
	case "bash":
		m.ui.Output(fmt.Sprintf("# tether completion for bash\ncomplete -C %s tether", q))
	case "zsh":
		// bashcompinit's complete needs compinit's compdef: load it when
		// the shell has not.
		m.ui.Output(fmt.Sprintf("# tether completion for zsh\n"+
			"(( $+functions[compdef] )) || { autoload -Uz compinit && compinit -i }\n"+
			"autoload -U +X bashcompinit && bashcompinit\n"+
			"complete -o nospace -C %s tether", q))
	default:
		m.ui.Error(fmt.Sprintf("unknown shell %q: bash or zsh", args[0]))
		return 1
	}
	return 0
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
