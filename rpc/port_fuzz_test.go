package rpc

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/internal/msgpack/msgpacktest"
)

// The fuzz targets of the RPC port feed bytes to every reader of it, on
// both ends: the server (first byte and mode, unary requests, streaming
// headers and frames, multiplexed sessions, data connections, raft
// handoff), a node serving data calls, and a caller reading a unary
// response or a stream. The properties: no panic, the reader returns once
// its input ends (nothing waits for the context to end it), no goroutine
// outlives it, and what it allocates is bounded by what it was sent, not
// by what a length prefix claims.

// fuzzRole is the first byte of an input: which reader gets the rest.
const (
	roleServeConn    byte = iota // Server.ServeConn: the RPC port
	roleDataCalls                // ServeDataCalls: a node's data connection
	roleCallerUnary              // unaryCall reading a response
	roleCallerStream             // a caller's stream reading frames
	numRoles
)

// fuzzConn is a connection whose peer sent in and then closed: reads
// return in, then io.EOF; writes are counted and dropped. Deadlines are
// accepted and never fire (reads never block).
type fuzzConn struct {
	mu      sync.Mutex
	in      []byte
	closed  bool
	written int
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.written += len(p)
	return len(p), nil
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

var fuzzAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4647}

func (c *fuzzConn) LocalAddr() net.Addr              { return fuzzAddr }
func (c *fuzzConn) RemoteAddr() net.Addr             { return fuzzAddr }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzMux serves methods whose work is bounded by what the caller sent:
// an echo (unary, also as JSON), a stream that echoes frames until its
// input ends, and a bulk read of at most 64 bytes.
func fuzzMux() *Mux {
	m := NewMux()
	HandleUnary(m, "Fuzz.Echo", func(ctx context.Context, req *echoArgs, resp *echoReply) error {
		*resp = echoReply{Msg: req.Msg, Data: req.Data, Meta: req.Meta, Dur: req.Dur, When: req.When, Nested: req.Nested, List: req.List}
		if req.Code != 0 {
			return &codedError{code: req.Code, msg: req.Msg}
		}
		return nil
	})
	RegisterJSON(m, func(r *echoReply) ([]byte, error) { return EncodeJSON(r) })
	m.HandleStream("Fuzz.Stream", func(ctx context.Context, s *Stream) error {
		var args echoArgs
		if err := s.Recv(&args); err != nil {
			return err
		}
		for {
			msg, err := s.RecvMsg()
			if err != nil {
				return err
			}
			err = s.SendMsg(msg)
			msg.Release()
			if err != nil {
				return err
			}
		}
	})
	HandleBulk(m, "Fuzz.Read", func(ctx context.Context, args *dataReadArgs, resp *dataReadReply, reply *BulkReply) error {
		resp.Length = min(max(args.Length, 0), 64)
		w, err := reply.Send()
		if err != nil {
			return err
		}
		_, err = WriteData(w, bytes.Repeat([]byte{args.Fill}, resp.Length))
		return err
	})
	return m
}

// fuzzConfig is a quiet config with the limits of production, but a
// smaller largest message so that an input can reach it.
func fuzzConfig() *Config {
	cfg := DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	cfg.MaxMessageSize = 1 << 20
	return cfg
}

// maxFuzzAlloc bounds what one input may make the readers allocate: a
// fixed allowance for buffers and goroutines, plus a multiple of the
// input. A length prefix alone must not buy a body.
func maxFuzzAlloc(in []byte) uint64 { return 512<<10 + 64*uint64(len(in)) }

// runRole feeds in to the reader role selects and returns once it ended.
func runRole(ctx context.Context, role byte, in []byte, mux *Mux) {
	cfg := fuzzConfig()
	conn := &fuzzConn{in: in}
	defer conn.Close()
	switch role {
	case roleServeConn:
		s := NewServer(cfg, mux)
		s.cfg.RaftHandler = func(c net.Conn) { // raft's own framing is hashicorp/raft's
			io.Copy(io.Discard, c)
			c.Close()
		}
		s.ServeConn(ctx, conn)
	case roleDataCalls:
		ServeDataCalls(ctx, conn, cfg, mux)
	case roleCallerUnary:
		ncfg, _ := cfg.normalize()
		var reply echoReply
		unaryCall(ctx, time.Now().Add(time.Minute), conn, nil, ncfg, "Fuzz.Echo", 1, &echoArgs{Msg: "x"}, &reply, true)
	case roleCallerStream:
		ncfg, _ := cfg.normalize()
		br, err := streamHandshake(ctx, conn, nil, ncfg, "Fuzz.Stream", &echoArgs{Msg: "x"})
		if err != nil {
			return
		}
		st, err := startCallerStream(ctx, conn, br, nil, ncfg, "Fuzz.Stream", nil, true)
		if err != nil {
			return
		}
		defer st.Close()
		for {
			msg, err := st.RecvMsg()
			if err != nil {
				return
			}
			msg.Release()
		}
	}
}

// FuzzRPCPort runs one input through one reader (its first byte picks
// which) and checks the properties above.
func FuzzRPCPort(f *testing.F) {
	mux := fuzzMux()
	f.Add([]byte{roleServeConn, 0x00})
	f.Add([]byte{roleServeConn, ByteTLS})
	f.Add([]byte{roleServeConn, ByteRaft, 1, 2, 3})
	f.Add([]byte{roleServeConn, ByteData, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte{roleServeConn, ByteRPC, 0x00, 0x0f, 0xff, 0xff, kindData}) // a length with no body
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		role, in := data[0]%numRoles, data[1:]
		base := runtime.NumGoroutine()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)

		// The context only catches a reader that would wait forever: a
		// reader that needed it failed.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		runRole(ctx, role, in, mux)
		if ctx.Err() != nil {
			t.Fatalf("role %d: the reader did not return when its input ended", role)
		}
		runtime.ReadMemStats(&after)
		if got, limit := after.TotalAlloc-before.TotalAlloc, maxFuzzAlloc(in); got > limit {
			t.Fatalf("role %d: %d input bytes made the readers allocate %d bytes (limit %d)", role, len(in), got, limit)
		}
		goroutinesSettle(t, base)
	})
}

// FuzzFastHeaders: the hand-written decoders of the request and response
// headers agree with go-msgpack on every body they take.
func FuzzFastHeaders(f *testing.F) {
	f.Add(byte(0), (&requestHeader{Method: "ClientStats.Stats", Seq: 7, Timeout: int64(time.Second), JSON: true}).AppendMsgpack(nil))
	f.Add(byte(1), (&responseHeader{Seq: 7, Error: "Unknown node", Code: 404}).AppendMsgpack(nil))
	f.Add(byte(2), (&JSON{}).AppendMsgpack(nil))
	f.Fuzz(func(t *testing.T, which byte, body []byte) {
		switch which % 3 {
		case 0:
			msgpacktest.CheckDecode[requestHeader](t, body)
		case 1:
			msgpacktest.CheckDecode[responseHeader](t, body)
		default:
			msgpacktest.CheckDecode[JSON](t, body)
		}
	})
}

var writeSeeds = flag.Bool("write-fuzz-seeds", false, "write the recorded RPC seeds to testdata/fuzz/FuzzRPCPort")

// TestWriteFuzzSeeds records what real callers and callees send on the
// port. With -write-fuzz-seeds it writes them as seeds of FuzzRPCPort
// (go test -run TestWriteFuzzSeeds ./rpc/ -args -write-fuzz-seeds);
// without, it checks that the committed corpus holds a seed for every
// exchange recorded (the bytes differ from run to run: timeouts, IDs), so
// an exchange added to recordSeeds without new seeds fails here.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRPCPort")
	seeds := recordSeeds(t)
	if len(seeds) == 0 {
		t.Fatal("no exchange recorded")
	}
	if !*writeSeeds {
		for name := range seeds {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("seed %s of a recorded exchange is not in %s (run with -write-fuzz-seeds): %v", name, dir, err)
			}
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, in := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// seedConn records what is written to it.
type seedConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *seedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *seedConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

// recordSeeds runs real exchanges over pipes and returns each side's
// bytes, prefixed with the role that reads them.
func recordSeeds(t *testing.T) map[string][]byte {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mux := fuzzMux()
	seeds := map[string][]byte{}
	// exchange runs client against serve; the client's bytes are read by
	// the role reqRole, the server's by respRole.
	exchange := func(name string, reqRole, respRole byte, client func(conn net.Conn), serve func(conn net.Conn)) {
		c, s := net.Pipe()
		rc, rs := &seedConn{Conn: c}, &seedConn{Conn: s}
		done := make(chan struct{})
		go func() { defer close(done); serve(rs) }()
		client(rc)
		rc.Close()
		<-done
		seeds[name+"-request"] = append([]byte{reqRole}, rc.bytes()...)
		seeds[name+"-response"] = append([]byte{respRole}, rs.bytes()...)
	}
	srv := NewServer(fuzzConfig(), mux)
	serve := func(conn net.Conn) { srv.ServeConn(ctx, conn) }
	exchange("unary", roleServeConn, roleCallerUnary, func(conn net.Conn) {
		ncfg, _ := fuzzConfig().normalize()
		var reply echoReply
		if err := unaryCall(ctx, time.Now().Add(time.Second), conn, nil, ncfg, "Fuzz.Echo", 1,
			&echoArgs{Msg: "hi", Data: []byte{1, 2}, Meta: map[string]*string{"a": nil}, When: time.Unix(1, 2)}, &reply, true); err != nil {
			t.Fatal(err)
		}
	}, serve)
	exchange("unary-json", roleServeConn, roleCallerUnary, func(conn net.Conn) {
		ncfg, _ := fuzzConfig().normalize()
		var reply JSON
		if err := unaryCall(ctx, time.Now().Add(time.Second), conn, nil, ncfg, "Fuzz.Echo", 1, &echoArgs{Msg: "hi"}, &reply, true); err != nil {
			t.Fatal(err)
		}
	}, serve)
	exchange("stream", roleServeConn, roleCallerStream, func(conn net.Conn) {
		ncfg, _ := fuzzConfig().normalize()
		br, err := streamHandshake(ctx, conn, nil, ncfg, "Fuzz.Stream", &echoArgs{Msg: "x"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := startCallerStream(ctx, conn, br, nil, ncfg, "Fuzz.Stream", nil, true)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if err := st.Send(&frame{Seq: i, Data: []byte("abc")}); err != nil {
				t.Fatal(err)
			}
			if err := st.Recv(&frame{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.SendRaw([]byte("raw bytes")); err != nil {
			t.Fatal(err)
		}
		if _, err := st.RecvMsg(); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}, serve)
	exchange("session", roleServeConn, roleServeConn, func(conn net.Conn) {
		sess, err := NewClientSession(conn, fuzzConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		var reply echoReply
		if err := sess.Call(ctx, "Fuzz.Echo", &echoArgs{Msg: "over yamux"}, &reply); err != nil {
			t.Fatal(err)
		}
		var bad echoReply
		var re *RemoteError
		if err := sess.Call(ctx, "Fuzz.Nope", &echoArgs{}, &bad); !errors.As(err, &re) {
			t.Fatalf("unknown method: %v", err)
		}
	}, serve)
	exchange("datacall", roleDataCalls, roleCallerUnary, func(conn net.Conn) {
		var resp dataReadReply
		head, err := srv.CallData(ctx, conn, "Fuzz.Read", &dataReadArgs{Length: 16, Fill: 'z'}, &resp)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(conn, make([]byte, resp.Length-len(head)))
	}, func(conn net.Conn) { ServeDataCalls(ctx, conn, fuzzConfig(), mux) })
	delete(seeds, "session-response") // the yamux client's side: not a reader here
	return seeds
}
