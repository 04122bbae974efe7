package rpc

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// benchPair dials a TCP session to a server serving the test methods.
func benchPair(b *testing.B) *Session { return benchSessions(b, 1)[0] }

// benchSessions dials n TCP sessions to one server serving the test
// methods.
func benchSessions(b *testing.B, n int) []*Session {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mux := NewMux()
	registerTestMethods(mux, "server", newHooks())
	srv := NewServer(cfg, mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	sessions := make([]*Session, 0, n)
	b.Cleanup(func() {
		for _, s := range sessions {
			s.Close()
		}
		cancel()
		<-done
	})
	for range n {
		s, err := Dial(context.Background(), ln.Addr().String(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	return sessions
}

// BenchmarkCall_ParallelSessions measures unary calls from many
// goroutines spread over many sessions, the shape of a server forwarding
// to its nodes: it is where a watch of calls in flight shared by the
// whole process would contend.
func BenchmarkCall_ParallelSessions(b *testing.B) {
	sessions := benchSessions(b, 32)
	var next atomic.Uint32
	args := &echoArgs{Msg: "ping"}
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32) // every session has calls in flight
	b.RunParallel(func(pb *testing.PB) {
		s := sessions[int(next.Add(1))%len(sessions)]
		for pb.Next() {
			var reply echoReply
			if err := s.Call(context.Background(), "Test.Echo", args, &reply); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCall measures a unary round trip (stream per call) over a TCP
// session.
func BenchmarkCall(b *testing.B) {
	s := benchPair(b)
	args := &echoArgs{Msg: "ping", Meta: map[string]*string{"a": strPtr("b")}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var reply echoReply
		if err := s.Call(context.Background(), "Test.Echo", args, &reply); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCall_Parallel measures unary calls from many goroutines on one
// session.
func BenchmarkCall_Parallel(b *testing.B) {
	s := benchPair(b)
	args := &echoArgs{Msg: "ping"}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var reply echoReply
			if err := s.Call(context.Background(), "Test.Echo", args, &reply); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkStreamThroughput sends 64 KiB []byte frames down one stream to
// a handler that discards them, and reports MB/s.
func BenchmarkStreamThroughput(b *testing.B) {
	s := benchPair(b)
	st, err := s.OpenStream(context.Background(), "Test.Sink", nil)
	if err != nil {
		b.Fatal(err)
	}
	f := &frame{Data: make([]byte, 64<<10)}
	b.SetBytes(int64(len(f.Data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := st.Send(f); err != nil {
			b.Fatal(err)
		}
	}
	st.Close()
}

// BenchmarkStreamThroughput_Download has the handler send 64 KiB frames to
// the caller, the direction of a log follow.
func BenchmarkStreamThroughput_Download(b *testing.B) {
	s := benchPair(b)
	b.SetBytes(64 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	st, err := s.OpenStream(context.Background(), "Test.Frames", &echoArgs{Frames: b.N, ReplySize: 64 << 10})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for {
		if err := st.Recv(nil); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			break
		}
	}
}
