package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// startTestCluster starts n servers on 127.0.0.1 with raft-wal in temp
// dirs, joined over membership, and waits for a leader that every one
// knows. tune adjusts every config.
func startTestCluster(tb testing.TB, n int, tune func(*Config)) []*Server {
	tb.Helper()
	var servers []*Server
	var join []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("s%d", i)
		cfg.DataDir = filepath.Join(tb.TempDir(), "server")
		cfg.RPCAdvertise = ln.Addr().String()
		cfg.SerfBind = "127.0.0.1:0"
		cfg.BootstrapExpect = n
		cfg.RetryJoin = join
		cfg.RetryJoinInterval = 100 * time.Millisecond
		// raft's own timeouts: shorter ones lose the leader on a loaded
		// two-core machine mid-benchmark.
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.Name, Level: hclog.Error})
		if tune != nil {
			tune(cfg)
		}
		s, err := New(cfg)
		if err != nil {
			ln.Close()
			tb.Fatal(err)
		}
		tb.Cleanup(s.Shutdown)
		s.Start(ln)
		if i == 0 {
			join = []string{s.SerfAddr()}
		}
		servers = append(servers, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, ok := "", true
		for _, s := range servers {
			l := s.Leader()
			if l == "" || (leader != "" && l != leader) || len(s.Peers()) != n {
				ok = false
				break
			}
			leader = l
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no leader known to all %d servers", n)
		}
		<-time.After(20 * time.Millisecond) // polling interval; the condition decides
	}
	for _, s := range servers {
		if s.IsLeader() {
			waitEstablished(tb, s)
		}
	}
	return servers
}

// registerNodes registers n fresh nodes, each on its own session, spread
// over servers round robin, with conc registrations in flight, honouring
// 429 hints. It returns the time taken.
func registerNodes(tb testing.TB, servers []*Server, n, conc int) time.Duration {
	tb.Helper()
	ctx := context.Background()
	rcfg := rpc.DefaultConfig()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				addr := servers[i%len(servers)].cfg.RPCAdvertise
				sess, err := rpc.Dial(ctx, addr, rcfg)
				if err != nil {
					errs <- err
					return
				}
				node := fullNode()
				for {
					var resp structs.NodeRegisterResponse
					err = sess.Call(ctx, structs.MethodNodeRegister, &structs.NodeRegisterRequest{Node: node}, &resp)
					hint, again := structs.RetryAfter(err)
					if !again {
						break
					}
					<-time.After(hint) // the server's hint
				}
				sess.Close()
				if err != nil {
					errs <- fmt.Errorf("node %d via %s: %w", i, addr, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkRegister3Servers measures new-node registrations per second
// on three in-process servers (raft-wal on disk), spread over all three
// as a fleet's first registrations are: two thirds are forwarded to the
// leader. With admission off it is the servers' capacity; with the
// default admission it is what a fleet gets (3 × 200/s after the bursts).
//
//	go test -run XXX -bench BenchmarkRegister3Servers -benchtime 4000x ./server/
func BenchmarkRegister3Servers(b *testing.B) {
	for _, bc := range []struct {
		name string
		conc int
		tune func(*Config)
	}{
		{"admission=off/conc=64", 64, func(c *Config) { c.AdmissionRate = -1 }},
		{"admission=off/conc=256", 256, func(c *Config) { c.AdmissionRate = -1 }},
		{"admission=default/conc=256", 256, nil},
	} {
		conc := bc.conc
		b.Run(bc.name, func(b *testing.B) {
			servers := startTestCluster(b, 3, bc.tune)
			b.ResetTimer()
			took := registerNodes(b, servers, b.N, conc)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/took.Seconds(), "registrations/s")
		})
	}
}
