package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
)

func monitorCommands(m *meta) map[string]cli.Command {
	return map[string]cli.Command{
		"monitor": &command{m: m, synopsis: "Stream the log of an agent",
			help: `
Usage: tether monitor [options]

  Streams the log of an agent as it writes it, until interrupted: the
  agent the address points at, or the node or server named. Lines below
  the level asked for are not sent.

Options:
  -log-level <level>  TRACE, DEBUG, INFO (the default), WARN or ERROR.
  -node-id <node>     The node agent to follow (a unique ID prefix is
                      enough), reached through the servers.
  -server-id <name>   The server to follow: its member name, its RPC
                      address, or "leader".
  -json               The log lines as JSON objects.
`,
			flags: complete.Flags{
				"-log-level": complete.PredictSet("TRACE", "DEBUG", "INFO", "WARN", "ERROR"),
				"-node-id":   predictIDs(m, "nodes"),
				"-server-id": complete.PredictAnything,
				"-json":      complete.PredictNothing,
			},
			run: runMonitor,
		},
	}
}

// errStreamClosed is the end of a monitor the agent closed.
var errStreamClosed = errors.New("the agent closed the stream")

func runMonitor(m *meta, args []string) int {
	var level, nodeID, serverID string
	var jsonOut bool
	c, _, code := m.start("monitor", args, noArgs, func(fs *flagSetT) {
		fs.StringVar(&level, "log-level", "", "")
		fs.StringVar(&nodeID, "node-id", "", "")
		fs.StringVar(&serverID, "server-id", "", "")
		fs.BoolVar(&jsonOut, "json", false, "")
	})
	if c == nil {
		return code
	}
	if nodeID != "" && serverID != "" {
		m.ui.Error("Only one of -node-id and -server-id may be given")
		return cli.RunResultHelp
	}
	params := map[string]string{}
	if level != "" {
		params["log_level"] = level
	}
	if nodeID != "" {
		id, ok := m.resolveNodeID(c, nodeID)
		if !ok {
			return 1
		}
		params["node_id"] = id
	}
	if serverID != "" {
		params["server_id"] = serverID
	}
	if jsonOut {
		params["log_json"] = "true"
	}
	ctx, stop := interruptContext()
	defer stop()
	// The official client's reader ends with ctx (the request's context)
	// or with stopCh, whichever comes first.
	stopCh := make(chan struct{})
	defer close(stopCh)
	frames, errs := c.Agent().Monitor(stopCh, (&nomad.QueryOptions{Params: params}).WithContext(ctx))
	err := eachFrame(ctx, frames, errs, func(f *nomad.StreamFrame) error {
		if len(f.Data) == 0 {
			return nil
		}
		if _, err := m.stdout.Write(f.Data); err != nil {
			return fatalError{fmt.Errorf("writing output: %w", err)}
		}
		return nil
	})
	if ctx.Err() != nil {
		return 0 // interrupted: the way a monitor ends
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errStreamClosed
	}
	m.apiError("monitoring logs", err)
	return 1
}
