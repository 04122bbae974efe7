package integration

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var benchStreams = flag.Bool("bench-streams", false, "run the stream benchmark (make bench)")

// TestBenchStreams prints, from one run on real processes: MB/s of a 90 MB
// rotated log read from disk, framed and plain through the server and
// direct on the node (with ratios to disk), and server and node RSS with
// 100 follow streams open. Measurement only: it runs with -bench-streams.
func TestBenchStreams(t *testing.T) {
	if !*benchStreams {
		t.Skip("measurement only: set -bench-streams to run (make bench does)")
	}
	pair := startProcPair(t)
	serverURL, nodeURL, sp, cp, cdir := pair.serverURL, pair.nodeURL, pair.server, pair.node, pair.nodeDataDir

	body := `{"Job":{"ID":"logs","Type":"service","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"w","Driver":"raw_exec",` +
		`"Config":{"command":"/bin/sh","args":["-c","yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456 | head -c 90000000; echo done >&2; exec sleep 100000"]}}]}]}}`
	if code, resp, _ := do(t, "POST", serverURL+"/v1/jobs", strings.NewReader(body)); code != 200 {
		t.Fatalf("register: %d %s", code, resp)
	}
	var allocID string
	waitFor(t, 60*time.Second, "log written", func() (bool, error) {
		_, b, err := tryGet(serverURL + "/v1/job/logs/allocations")
		if i := strings.Index(b, `"ID":"`); i >= 0 {
			allocID = b[i+6 : i+42]
		}
		if allocID == "" {
			return false, err
		}
		_, e, _ := tryGet(serverURL + "/v1/client/fs/logs/" + allocID + "?task=w&type=stderr&plain=true")
		return strings.Contains(e, "done"), nil
	})

	hc := &http.Client{}
	read := func(url string) (int64, time.Duration) {
		start := time.Now()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return n, time.Since(start)
	}
	mbps := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

	// Disk: the rotated files, read in order.
	logDir := filepath.Join(cdir, "alloc", allocID, "alloc", "logs")
	start := time.Now()
	var diskN int64
	for i := 0; ; i++ {
		f, err := os.Open(filepath.Join(logDir, fmt.Sprintf("w.stdout.%d", i)))
		if err != nil {
			break
		}
		n, _ := io.Copy(io.Discard, f)
		f.Close()
		diskN += n
	}
	disk := mbps(diskN, time.Since(start))
	var lines []string
	lines = append(lines, fmt.Sprintf("%-22s %8.1f MB/s", "disk", disk))
	for _, c := range []struct{ name, url string }{
		{"framed via server", serverURL},
		{"framed direct", nodeURL},
		{"plain via server", serverURL},
		{"plain direct", nodeURL},
	} {
		q := "task=w&type=stdout"
		if strings.HasPrefix(c.name, "plain") {
			q += "&plain=true"
		}
		n, d := read(c.url + "/v1/client/fs/logs/" + allocID + "?" + q)
		// MB/s of log data delivered (framed: decoded bytes, as the shared
		// harness counts them).
		lines = append(lines, fmt.Sprintf("%-22s %8.1f MB/s of log data (%d bytes on the wire, %.3f of disk)", c.name, mbps(diskN, d), n, mbps(diskN, d)/disk))
	}

	// 100 follow streams through the server.
	rs0, rn0 := procRSS(sp.cmd.Process.Pid), procRSS(cp.cmd.Process.Pid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var resps []*http.Response
	for i := 0; i < 100; i++ {
		resp, err := openFollow(ctx, serverURL+"/v1/client/fs/logs/"+allocID+"?task=w&type=stdout&follow=true&origin=end&offset=0")
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	rs1, rn1 := procRSS(sp.cmd.Process.Pid), procRSS(cp.cmd.Process.Pid)
	lines = append(lines, fmt.Sprintf("100 follow streams: server RSS %.1f -> %.1f MiB (%.0f KiB/stream), node RSS %.1f -> %.1f MiB (%.0f KiB/stream)",
		float64(rs0)/(1<<20), float64(rs1)/(1<<20), float64(rs1-rs0)/100/1024,
		float64(rn0)/(1<<20), float64(rn1)/(1<<20), float64(rn1-rn0)/100/1024))
	cancel()
	for _, r := range resps {
		r.Body.Close()
	}
	t.Log("\n" + strings.Join(lines, "\n"))
}
