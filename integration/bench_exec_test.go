package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/segmentio/asm/base64"

	"tether/agent"
	"tether/structs"
)

// BenchmarkExec measures exec on one in-process cluster (make bench-exec):
// the round trip of one byte through `cat` (stdin in, the echo out) on
// the node's own agent, through the server holding the node's session
// and through its peer, p50 and p99 side by side in one run (targets:
// through a server at most 2 ms p99 on loopback); and the throughput of
// 100 MB of `head -c` output through the server (target at least
// 100 MB/s).
func BenchmarkExec(b *testing.B) {
	srvA := benchServer(b, "srvA", 2, nil)
	srvB := benchServer(b, "srvB", 2, []string{srvA.SerfAddr()})
	waitFor(b, 30*time.Second, "a leader on both servers", func() (bool, error) {
		return srvA.Server().Leader() != "" && srvB.Server().Leader() != "" && len(srvA.Server().Peers()) == 2, nil
	})
	node := startNode(b, "node1", withServers(srvA.RPCAddr()), withRawExec(), func(c *agent.Config) { c.LogLevel = "WARN" })
	api, err := nomad.NewClient(&nomad.Config{Address: srvA.URL()})
	if err != nil {
		b.Fatal(err)
	}
	byTask := runJob(b, api, "bench-exec", "service", shellTask("main", "while :; do sleep 1; done"))
	allocID := byTask["main"]
	waitStarted(b, api, allocID, "main")

	for _, via := range []struct {
		name  string
		agent *testAgent
	}{{"direct", node}, {"server", srvA}, {"peer", srvB}} {
		b.Run("roundtrip/"+via.name, func(b *testing.B) {
			conn := benchDialExec(b, via.agent, allocID, `["cat"]`)
			defer conn.Close()
			in, _ := json.Marshal(structs.ExecStreamingInput{Stdin: &structs.ExecStreamingIOOperation{Data: []byte("x")}})
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if err := conn.WriteMessage(websocket.TextMessage, in); err != nil {
					b.Fatal(err)
				}
				var out structs.ExecStreamingOutput
				if err := conn.ReadJSON(&out); err != nil || out.Stdout == nil || string(out.Stdout.Data) != "x" {
					b.Fatalf("echo: %+v, %v", out, err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}

	const bulk = 100_000_000
	b.Run("cat100MB/server", func(b *testing.B) {
		b.SetBytes(bulk)
		for range b.N {
			conn := benchDialExec(b, srvA, allocID, fmt.Sprintf(`["head","-c","%d","/dev/zero"]`, bulk))
			n := 0
			var buf []byte
			for {
				// Data messages decoded by hand (base64 with AVX2):
				// encoding/json, as the Go client decodes them, caps
				// this at about 50 MB/s here, the caller's CPU, not
				// Tether's.
				_, msg, err := conn.ReadMessage()
				if err != nil {
					b.Fatal(err)
				}
				if data, ok := bytes.CutPrefix(msg, []byte(`{"stdout":{"data":"`)); ok {
					data = bytes.TrimSuffix(data, []byte(`"}}`))
					buf = slices.Grow(buf[:0], base64.StdEncoding.DecodedLen(len(data)))
					m, err := base64.StdEncoding.Decode(buf[:cap(buf)], data)
					if err != nil {
						b.Fatal(err)
					}
					n += m
					continue
				}
				if bytes.Contains(msg, []byte(`"exited":true`)) {
					break
				}
			}
			conn.Close()
			if n != bulk {
				b.Fatalf("read %d bytes; want %d", n, bulk)
			}
		}
	})
}

// benchServer starts one of expect servers, joining join.
func benchServer(b *testing.B, name string, expect int, join []string) *testAgent {
	cfg := baseConfig(b, name)
	cfg.LogLevel = "WARN"
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = expect
	cfg.Server.RetryJoin = join
	return startAgent(b, cfg)
}

// benchDialExec opens an exec of command in the main task on agent a.
func benchDialExec(b *testing.B, a *testAgent, allocID, command string) *websocket.Conn {
	b.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(execURL(a, allocID, "main", command), nil)
	if err != nil {
		b.Fatalf("exec on %s: %v (%v)", a.cfg.Name, err, resp)
	}
	return conn
}
