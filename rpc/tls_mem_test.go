package rpc

import (
	"context"
	"net"
	"runtime"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// idleSessions is how many TLS sessions BenchmarkIdleTLSSessionHeap holds
// open at once.
const idleSessions = 200

// BenchmarkIdleTLSSessionHeap reports the heap and stack an idle TLS
// session costs, both ends of it in this process (server and node), as
// heap-B/session: what a server pays per connected node, plus the node's
// side. Each iteration opens idleSessions sessions to one Server, measures
// runtime.MemStats HeapInuse+StackInuse against the figure before them,
// and closes them.
func BenchmarkIdleTLSSessionHeap(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	cfg.MaxConnsPerIP = -1
	scfg, ccfg := *cfg, *cfg
	scfg.TLSConfig = serverTLSConfig()
	ccfg.TLSConfig = clientTLSConfig()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(&scfg, NewMux())
	accepted := make(chan *Session, idleSessions)
	srv.OnSession = func(s *Session) { accepted <- s }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	defer func() {
		cancel()
		<-done
	}()

	inUse := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	var total float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := inUse()
		sessions := make([]*Session, 0, idleSessions)
		for j := 0; j < idleSessions; j++ {
			s, err := Dial(context.Background(), ln.Addr().String(), &ccfg)
			if err != nil {
				b.Fatal(err)
			}
			<-accepted // the server's end is up too
			sessions = append(sessions, s)
		}
		after := inUse()
		total += (float64(after) - float64(before)) / idleSessions
		b.StopTimer()
		for _, s := range sessions {
			s.Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(total/float64(b.N), "heap-B/session")
}
