package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestParseLogLevel(t *testing.T) {
	cases := []struct {
		in   string
		want hclog.Level
		ok   bool
	}{
		{"", hclog.Info, true},
		{"trace", hclog.Trace, true},
		{"DEBUG", hclog.Debug, true},
		{"Info", hclog.Info, true},
		{"warn", hclog.Warn, true},
		{"error", hclog.Error, true},
		{"off", 0, false},
		{"loud", 0, false},
	}
	for _, tc := range cases {
		got, err := parseLogLevel(tc.in)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("parseLogLevel(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "log_level") {
			t.Errorf("parseLogLevel(%q) error %q does not name log_level", tc.in, err)
		}
	}
}

// drain returns every line queued on m.
func drain(m *logMonitor) string {
	var sb strings.Builder
	for {
		select {
		case l := <-m.lines:
			sb.Write(l)
		default:
			return sb.String()
		}
	}
}

// TestLogMonitor_OwnLevel: a monitor gets lines at its own level, both
// above and below the agent's, and the agent's output keeps its level.
func TestLogMonitor_OwnLevel(t *testing.T) {
	var out syncBuffer
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Level: hclog.Info, Output: &out})
	comp := il.Named("client")
	cases := []struct {
		level     hclog.Level
		want, not []string
	}{
		{hclog.Debug, []string{"[DEBUG] client: dbg", "[INFO]  client: inf"}, []string{"trc"}},
		{hclog.Warn, []string{"[WARN]  client: wrn"}, []string{"dbg", "inf"}},
	}
	for _, tc := range cases {
		m := newLogMonitor(il, tc.level, false)
		comp.Trace("trc")
		comp.Debug("dbg")
		comp.Info("inf")
		comp.Warn("wrn")
		m.Stop()
		comp.Error("after stop")
		got := drain(m)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("monitor at %v got %q; want %q in it", tc.level, got, w)
			}
		}
		for _, n := range append(tc.not, "after stop") {
			if strings.Contains(got, n) {
				t.Errorf("monitor at %v got %q; want no %q", tc.level, got, n)
			}
		}
	}
	if s := out.String(); strings.Contains(s, "dbg") || !strings.Contains(s, "inf") {
		t.Errorf("agent output %q; want info and above only", s)
	}
}

// TestLogMonitor_JSON: log_json lines are one JSON object each.
func TestLogMonitor_JSON(t *testing.T) {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: discard{}})
	m := newLogMonitor(il, hclog.Debug, true)
	defer m.Stop()
	il.Named("server").Debug("hello", "node_id", "n1")
	var v map[string]any
	if err := json.Unmarshal([]byte(drain(m)), &v); err != nil {
		t.Fatal(err)
	}
	if v["@message"] != "hello" || v["@module"] != "server" || v["node_id"] != "n1" {
		t.Fatalf("got %v", v)
	}
	if err := json.Unmarshal(m.droppedNotice(3), &v); err != nil || v["dropped"] != float64(3) {
		t.Fatalf("dropped notice %q: %v", m.droppedNotice(3), err)
	}
}

// TestLogMonitor_SlowReaderNeverBlocks: a monitor nobody reads takes its
// bounded buffer's worth of lines and counts the rest; logging goes on.
func TestLogMonitor_SlowReaderNeverBlocks(t *testing.T) {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: discard{}})
	m := newLogMonitor(il, hclog.Trace, false)
	defer m.Stop()
	const n = 5 * monitorBufferLines
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			il.Info("line", "i", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logging blocked on a monitor nobody reads")
	}
	if got := len(m.lines); got != monitorBufferLines {
		t.Fatalf("queued %d lines; want %d", got, monitorBufferLines)
	}
	if got := m.takeDropped(); got != n-monitorBufferLines {
		t.Fatalf("dropped %d; want %d", got, n-monitorBufferLines)
	}
	if !strings.Contains(string(m.droppedNotice(7)), "dropped 7 log lines") {
		t.Fatalf("notice %q", m.droppedNotice(7))
	}
}

// TestInterceptLogger_WrapsPlainLogger: a logger that is not an
// InterceptLogger keeps receiving the agent's lines, at its own level, and
// can be monitored below that level.
func TestInterceptLogger_WrapsPlainLogger(t *testing.T) {
	var out syncBuffer
	base := hclog.New(&hclog.LoggerOptions{Name: "agent1", Level: hclog.Info, Output: &out})
	il := interceptLogger(base)
	if interceptLogger(il) != il {
		t.Fatal("an InterceptLogger is not used as it is")
	}
	m := newLogMonitor(il, hclog.Debug, false)
	defer m.Stop()
	comp := il.Named("server")
	comp.Debug("dbg")
	comp.Info("inf", "k", "v")
	if s := out.String(); !strings.Contains(s, "agent1.server: inf: k=v") || strings.Contains(s, "dbg") {
		t.Fatalf("base output %q; want the info line under its name only", s)
	}
	if got := drain(m); !strings.Contains(got, "agent1.server: dbg") {
		t.Fatalf("monitor got %q; want the debug line", got)
	}
	if il.IsDebug() || !il.IsInfo() {
		t.Fatalf("wrapped logger's level %v; want the base's (info)", il.GetLevel())
	}
}

// BenchmarkLogLine measures one info line on the agent's logger with no
// monitor, with a monitor at debug that keeps up, and with one that never
// reads (its lines are dropped).
func BenchmarkLogLine(b *testing.B) {
	for _, mode := range []string{"no monitor", "monitor reading", "monitor stalled"} {
		b.Run(mode, func(b *testing.B) {
			il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Level: hclog.Info, Output: discard{}})
			comp := il.Named("client")
			if mode != "no monitor" {
				m := newLogMonitor(il, hclog.Debug, false)
				defer m.Stop()
				if mode == "monitor reading" {
					done := make(chan struct{})
					defer close(done)
					go func() {
						for {
							select {
							case <-m.lines:
							case <-done:
								return
							}
						}
					}()
				}
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					comp.Info("request served", "method", "GET", "path", "/v1/client/stats", "code", 200)
				}
			})
		})
	}
}
