package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

var (
	benchJobLogs       = flag.Bool("bench-joblogs", false, "run the job-wide log follow benchmark (make bench-joblogs)")
	benchJobLogsWindow = flag.Duration("bench-joblogs-window", 10*time.Second, "how long each measured follow lasts")
)

// BenchmarkJobLogs_Follow50 follows, through a server, the job-wide log
// of 50 raw_exec allocations on two nodes, each writing a line with its
// write time ($EPOCHREALTIME) 20 times a second, and reports the line
// latency: from the write on the node to the line's arrival at the HTTP
// client, p50, p99 and the worst (target: p99 at most 50 ms). The
// script waits with bash's read -t on a FIFO, so that 1,000 lines a
// second cost no fork. Measurement only: it runs with -bench-joblogs.
func BenchmarkJobLogs_Follow50(b *testing.B) {
	if !*benchJobLogs {
		b.Skip("measurement only: set -bench-joblogs to run (make bench-joblogs does)")
	}
	const allocs, perSecond = 50, 20
	srv := startServer(b, "server1")
	for i := range 2 {
		startNode(b, fmt.Sprintf("node%d", i), withServers(srv.RPCAddr()), withRawExec())
	}
	api, err := nomad.NewClient(&nomad.Config{Address: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	task := &nomad.Task{Name: "t", Driver: "raw_exec", Config: map[string]any{"command": "/bin/bash", "args": []string{"-c",
		`f="$NOMAD_ALLOC_DIR/tick"; mkfifo "$f"; exec 3<>"$f"; i=0
		while :; do i=$((i+1)); echo "$EPOCHREALTIME $i"; read -t 0.05 -u 3; done`}},
		Resources: &nomad.Resources{CPU: ptr(20), MemoryMB: ptr(16)},
		LogConfig: &nomad.LogConfig{MaxFiles: ptr(2), MaxFileSizeMB: ptr(10)}}
	registerRunning(b, api, groupJob("bench", allocs, false, task), allocs)

	var lat []time.Duration
	var lines, lost int
	for b.Loop() {
		l, n := followWindow(b, jobLogsURL(srv.URL(), "bench", "follow=true&format=ndjson&lines=0&max_allocs=64"), allocs, *benchJobLogsWindow)
		lat = append(lat, l...)
		lines += len(l)
		lost += n
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(lines)/benchJobLogsWindow.Seconds()/float64(b.N), "lines/s")
	b.ReportMetric(float64(lost), "lost")
	if lost > 0 {
		b.Errorf("%d lines missing from the allocations' sequences", lost)
	}
}

// followWindow follows u until lines of all n allocations have arrived,
// then for window, and returns the latency of each line of the window
// (arrival minus the time the line carries) and how many lines are
// missing from the allocations' sequence numbers.
func followWindow(b *testing.B, u string, n int, window time.Duration) (lat []time.Duration, lost int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("job logs: status %d", resp.StatusCode)
	}
	last := map[string]int{} // each allocation's last sequence number
	var until time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		now := time.Now()
		var r ndjsonRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Line == nil {
			b.Fatalf("record %q: %v", sc.Text(), err)
		}
		stamp, seq, _ := strings.Cut(*r.Line, " ")
		sec, usec, _ := strings.Cut(stamp, ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		us, err2 := strconv.ParseInt(usec, 10, 64)
		i, err3 := strconv.Atoi(seq)
		if err1 != nil || err2 != nil || err3 != nil {
			b.Fatalf("line %q: want a time and a number", *r.Line)
		}
		if prev, ok := last[r.Alloc]; ok && i != prev+1 {
			lost += max(i-prev-1, 0)
		}
		last[r.Alloc] = i
		if until.IsZero() {
			if len(last) == n {
				until = now.Add(window)
			}
			continue
		}
		if now.After(until) {
			return lat, lost
		}
		lat = append(lat, now.Sub(time.Unix(s, us*1000)))
	}
	b.Fatalf("the follow ended: %v", sc.Err())
	return nil, 0
}
