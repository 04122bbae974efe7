package agent

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The agent's log is an hclog.InterceptLogger: every component logs
// through a logger Named from it, and a monitor (GET /v1/agent/monitor)
// registers a sink of its own, at its own level and format, without
// changing the level of what the agent writes. Sinks see every line the
// components emit, whatever the agent's level.

// monitorBufferLines bounds the lines a monitor holds for a slow reader;
// beyond it lines are dropped and counted, so that a monitor never
// blocks the goroutine that logs.
const monitorBufferLines = 512

// interceptLogger returns logger as an InterceptLogger: itself when it is
// one (tether agent builds one), else one whose lines go to logger
// through a sink, so agents run inside other programs (tests) can be
// monitored too.
func interceptLogger(logger hclog.Logger) hclog.InterceptLogger {
	if il, ok := logger.(hclog.InterceptLogger); ok {
		return il
	}
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   logger.Name(),
		Level:  logger.GetLevel(), // so IsDebug and friends answer as before
		Output: discard{},
	})
	il.RegisterSink(forwardSink{to: logger.ResetNamed("")})
	return il
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// forwardSink passes every line on to another logger, which applies its
// own level.
type forwardSink struct{ to hclog.Logger }

// Accept logs the line on the wrapped logger under the emitter's name.
func (f forwardSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level < f.to.GetLevel() {
		return
	}
	f.to.ResetNamed(name).Log(level, msg, args...)
}

// parseLogLevel reads a monitor's log_level ("" is info).
func parseLogLevel(s string) (hclog.Level, error) {
	if s == "" {
		return hclog.Info, nil
	}
	switch lvl := hclog.LevelFromString(s); lvl {
	case hclog.NoLevel, hclog.Off:
		return 0, fmt.Errorf("unknown log level %q for parameter log_level; want one of trace, debug, info, warn, error", s)
	default:
		return lvl, nil
	}
}

// logMonitor is one monitor's sink: lines formatted at its level and in
// its format, queued for the stream that sends them. Write never blocks.
type logMonitor struct {
	il      hclog.InterceptLogger
	sink    hclog.SinkAdapter
	lines   chan []byte
	dropped atomic.Uint64
	json    bool
}

// newLogMonitor registers a sink on il at level, in JSON when json is set.
// Stop removes it.
func newLogMonitor(il hclog.InterceptLogger, level hclog.Level, json bool) *logMonitor {
	m := &logMonitor{il: il, lines: make(chan []byte, monitorBufferLines), json: json}
	m.sink = hclog.NewSinkAdapter(&hclog.LoggerOptions{
		Level:      level,
		JSONFormat: json,
		Output:     m,
		TimeFormat: time.RFC3339Nano,
	})
	il.RegisterSink(m.sink)
	return m
}

// Write queues one formatted line (hclog writes a line per call); a full
// queue drops it and counts it.
func (m *logMonitor) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	select {
	case m.lines <- line:
	default:
		m.dropped.Add(1)
	}
	return len(p), nil
}

// droppedNotice returns the line that says n lines were dropped, in the
// monitor's format.
func (m *logMonitor) droppedNotice(n uint64) []byte {
	now := time.Now().Format(time.RFC3339Nano)
	if m.json {
		return fmt.Appendf(nil, `{"@level":"warn","@message":"monitor dropped %d log lines: the reader is too slow","@module":"agent.monitor","@timestamp":%q,"dropped":%d}`+"\n", n, now, n)
	}
	return fmt.Appendf(nil, "%s [WARN]  agent.monitor: dropped %d log lines: the reader is too slow\n", now, n)
}

// takeDropped returns and resets the count of dropped lines.
func (m *logMonitor) takeDropped() uint64 { return m.dropped.Swap(0) }

// Stop removes the sink; lines still queued stay readable.
func (m *logMonitor) Stop() { m.il.DeregisterSink(m.sink) }
