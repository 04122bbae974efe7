// Command tether runs a Tether agent: a server, a node agent, or both in
// one process, serving Nomad's client HTTP API.
//
// Usage:
//
//	tether agent [flags]   run an agent (see "tether agent -h")
//	tether fleet [flags]   run many simulated nodes (see "tether fleet -h")
//	tether tls ...         create a CA and certificates (see "tether tls -h")
//	tether version         print the version
//
// and the operator commands, with Nomad's names and flags (cli_*.go):
// status, node, alloc, job, monitor, operator, server, system, acl.
package main

import (
	"fmt"
	"io"
	"os"

	"tether/agent"
)

// Exit codes. Usage errors exit 1 like failures, as Nomad's CLI does:
// scripts written for it test for non-zero, and some for 1.
const (
	exitOK    = 0
	exitError = 1 // the agent failed while running
	exitUsage = 1 // unknown command, bad flags, bad configuration
)

const usageText = `Usage: tether <command> [flags]

Tether serves Nomad's client HTTP API from servers and node agents.

Commands:
  agent     Run a Tether agent (server, node agent, or both with -dev)
  fleet     Run many simulated nodes in one process against servers
  tls       Create a CA and certificates for a test cluster
  version   Print the Tether version

Operator commands (Nomad's names, flags and NOMAD_* environment):
  status, node, alloc, job, monitor, operator, server, system, acl,
  completion

Run "tether agent -h" for the agent's flags, "tether node -h" and so on
for the operator commands.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if os.Getenv("COMP_LINE") != "" { // a shell completion request
		return runCLI(args, os.Stdin, stdout, stderr)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "agent":
		return runAgent(args[1:], stdout, stderr)
	case "fleet":
		return runFleet(args[1:], stdout, stderr)
	case "tls":
		return runTLS(args[1:], stdout, stderr)
	case "version", "-version", "--version", "-v":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		if isCLICommand(args[0]) {
			return runCLI(args, os.Stdin, stdout, stderr)
		}
		fmt.Fprintf(stderr, "tether: unknown command %q\n\n%s", args[0], usageText)
		return exitUsage
	}
}

// versionString is what "tether version" prints.
func versionString() string {
	return fmt.Sprintf("Tether v%s (Nomad API compatible %s)", agent.Version, agent.NomadVersion)
}
