package rpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func strPtr(s string) *string { return &s }

func TestSession_CallBothDirections(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		when := time.Date(2024, 5, 1, 12, 30, 0, 123, time.FixedZone("X", 3600))
		args := &echoArgs{
			Msg:    "hello",
			Data:   []byte{0, 1, 2, 0xff},
			Meta:   map[string]*string{"set": strPtr("v"), "unset": nil},
			Dur:    1500 * time.Millisecond,
			When:   when,
			Nested: &inner{Name: "n", Count: 3, Tags: []string{"a", "b"}},
		}
		cases := []struct {
			name string
			from *Session
			want string
			sess *Session // the session the handler should see
		}{
			{"node calls server", p.node, "server:hello", p.server},
			{"server calls node", p.server, "node:hello", p.node},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var reply echoReply
				if err := tc.from.Call(context.Background(), "Test.Echo", args, &reply); err != nil {
					t.Fatalf("Call: %v", err)
				}
				if reply.Msg != tc.want {
					t.Errorf("Msg = %q; want %q", reply.Msg, tc.want)
				}
				if !bytes.Equal(reply.Data, args.Data) {
					t.Errorf("Data = %v; want %v", reply.Data, args.Data)
				}
				if v, ok := reply.Meta["unset"]; !ok || v != nil {
					t.Errorf(`Meta["unset"] = %v, %v; want nil, true`, v, ok)
				}
				if v := reply.Meta["set"]; v == nil || *v != "v" {
					t.Errorf(`Meta["set"] = %v; want "v"`, v)
				}
				if reply.Dur != args.Dur || !reply.When.Equal(when) {
					t.Errorf("Dur, When = %v, %v; want %v, %v", reply.Dur, reply.When, args.Dur, when)
				}
				if reply.Nested == nil || reply.Nested.Count != 3 || len(reply.Nested.Tags) != 2 {
					t.Errorf("Nested = %+v", reply.Nested)
				}
				if reply.SessionID != tc.sess.ID() {
					t.Errorf("handler saw session %d; want %d", reply.SessionID, tc.sess.ID())
				}
				if !reply.HasDL {
					t.Errorf("handler ctx has no deadline; want the default call timeout")
				}
			})
		}
		if p.node.ID() == p.server.ID() {
			t.Errorf("both ends have session ID %d", p.node.ID())
		}
	})
}

func TestSession_Errors(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		cases := []struct {
			name     string
			method   string
			args     echoArgs
			wantCode int
			wantMsg  string
			wantIs   error
		}{
			{"coded error", "Test.Error", echoArgs{Code: 404, Msg: `Unknown node "x"`}, 404, `Unknown node "x"`, nil},
			{"wrapped coded error", "Test.Error", echoArgs{Code: 403, Msg: "Permission denied", Wrap: true}, 403, "wrapped: Permission denied", nil},
			{"plain error", "Test.Error", echoArgs{Msg: "no cluster leader"}, 0, "no cluster leader", nil},
			{"unknown method", "Test.Nope", echoArgs{}, 404, `rpc: unknown method "Test.Nope"`, ErrUnknownMethod},
			{"panic", "Test.Panic", echoArgs{}, 500, `rpc: handler for "Test.Panic" panicked`, nil},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				for _, from := range []*Session{p.node, p.server} {
					err := from.Call(context.Background(), tc.method, &tc.args, &echoReply{})
					var re *RemoteError
					if !errors.As(err, &re) {
						t.Fatalf("err = %v (%T); want *RemoteError", err, err)
					}
					if re.StatusCode() != tc.wantCode || re.Error() != tc.wantMsg {
						t.Errorf("err = %d %q; want %d %q", re.Code, re.Message, tc.wantCode, tc.wantMsg)
					}
					if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
						t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
					}
				}
			})
		}
		// The session survives all of that.
		var reply echoReply
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "x"}, &reply); err != nil {
			t.Fatalf("Call after errors: %v", err)
		}
		// A rebuilt error matches the caller's own error value with the
		// same code and message.
		err := p.node.Call(context.Background(), "Test.Error", &echoArgs{Code: 403, Msg: "Permission denied"}, nil)
		if !errors.Is(err, &codedError{code: 403, msg: "Permission denied"}) {
			t.Errorf("errors.Is(%v, codedError 403) = false", err)
		}
	})
}

func TestSession_CallContext(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		// Calls without a deadline of their own get Config.CallTimeout.
		callTimeout := func(c *Config) { c.CallTimeout = 300 * time.Millisecond }
		p := newTestPair(t, kind, pairOpts{serverCfg: callTimeout, clientCfg: callTimeout})
		cases := []struct {
			name   string
			ctx    string // "deadline" (200ms), "cancel" (once started) or "none"
			wantIs []error
		}{
			{"deadline", "deadline", []error{context.DeadlineExceeded, ErrTimeout}},
			{"cancel", "cancel", []error{context.Canceled}},
			{"call timeout", "none", []error{context.DeadlineExceeded, ErrTimeout}},
		}
		for _, tc := range cases {
			for _, dir := range []struct {
				name string
				from *Session
			}{{"node to server", p.node}, {"server to node", p.server}} {
				t.Run(tc.name+"/"+dir.name, func(t *testing.T) {
					ctx, cancel := context.WithCancel(context.Background())
					switch tc.ctx {
					case "cancel":
						go func() {
							<-p.hooks.started
							cancel()
						}()
					case "deadline":
						ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
					}
					defer cancel()
					start := time.Now()
					err := dir.from.Call(ctx, "Test.Block", &echoArgs{Msg: tc.name}, &echoReply{})
					if elapsed := time.Since(start); elapsed > 3*time.Second {
						t.Errorf("Call took %v; want prompt return", elapsed)
					}
					for _, want := range tc.wantIs {
						if !errors.Is(err, want) {
							t.Errorf("err = %v; want errors.Is %v", err, want)
						}
					}
					if tc.ctx == "cancel" {
						// The goroutine consumed started.
					} else {
						recvWithin(t, p.hooks.started, 5*time.Second, "handler start")
						var ne net.Error
						if !errors.As(err, &ne) || !ne.Timeout() {
							t.Errorf("err = %v; want a net.Error with Timeout()", err)
						}
					}
					got := recvWithin(t, p.hooks.cancelled, 5*time.Second, "handler ctx cancelled")
					if got == nil {
						t.Errorf("handler ctx.Err() = nil")
					}
					waitFor(t, 5*time.Second, "streams to close", func() bool {
						return p.busyStreams() == 0
					})
				})
			}
		}
		// An already-ended context fails before anything is sent.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.node.Call(ctx, "Test.Echo", &echoArgs{}, &echoReply{}); !errors.Is(err, context.Canceled) {
			t.Errorf("Call with cancelled ctx = %v; want context.Canceled", err)
		}
	})
}

func TestSession_LossMidCall(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		for _, mode := range []string{"unary", "stream"} {
			t.Run(mode, func(t *testing.T) {
				p := newTestPair(t, kind, pairOpts{})
				errCh := make(chan error, 1)
				go func() {
					switch mode {
					case "unary":
						errCh <- p.node.Call(context.Background(), "Test.Block", &echoArgs{}, &echoReply{})
					case "stream":
						st, err := p.node.OpenStream(context.Background(), "Test.BlockStream", &echoArgs{})
						if err != nil {
							errCh <- err
							return
						}
						defer st.Close()
						errCh <- st.Recv(&frame{})
					}
				}()
				recvWithin(t, p.hooks.started, 5*time.Second, "handler start")
				start := time.Now()
				p.dropConn()
				err := recvWithin(t, errCh, 5*time.Second, "call to fail")
				if !errors.Is(err, ErrSessionClosed) {
					t.Errorf("err = %#v; want ErrSessionClosed", err)
				}
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("call failed after %v; want prompt", d)
				}
				recvWithin(t, p.hooks.cancelled, 5*time.Second, "handler ctx cancelled")
				// Calls on the dead session fail at once.
				if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{}, nil); !errors.Is(err, ErrSessionClosed) {
					t.Errorf("Call on dead session = %v; want ErrSessionClosed", err)
				}
				if err := recvWithin(t, p.nodeServeErr, 5*time.Second, "node Serve to return"); !errors.Is(err, ErrSessionClosed) {
					t.Errorf("Serve = %v; want ErrSessionClosed", err)
				}
			})
		}
	})
}

func TestSession_ConcurrentStreams(t *testing.T) {
	const n = 1000
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		t.Run("unary", func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					from := p.node
					if i%2 == 1 {
						from = p.server
					}
					var reply echoReply
					msg := strings.Repeat("x", i%64)
					if err := from.Call(context.Background(), "Test.Echo", &echoArgs{Msg: msg}, &reply); err != nil {
						errs <- err
						return
					}
					if !strings.HasSuffix(reply.Msg, ":"+msg) {
						errs <- errors.New("wrong reply " + reply.Msg)
					}
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
		t.Run("streams held open together", func(t *testing.T) {
			streams := make([]*Stream, n)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					st, err := p.node.OpenStream(context.Background(), "Test.EchoStream", &echoArgs{})
					if err != nil {
						errs <- err
						return
					}
					streams[i] = st
					if err := st.Send(&frame{Seq: i}); err != nil {
						errs <- err
						return
					}
					var f frame
					if err := st.Recv(&f); err != nil || f.Seq != i {
						errs <- errors.Join(err, errors.New("wrong echo"))
					}
				}(i)
			}
			wg.Wait()
			if got := p.node.NumStreams(); got < n {
				t.Errorf("NumStreams = %d with all streams open; want >= %d", got, n)
			}
			for i, st := range streams {
				if st == nil {
					continue
				}
				wg.Add(1)
				go func(i int, st *Stream) {
					defer wg.Done()
					defer st.Close()
					if err := st.Send(&frame{End: true}); err != nil {
						errs <- err
						return
					}
					if err := st.Recv(nil); err != io.EOF {
						errs <- errors.Join(err, errors.New("want io.EOF"))
					}
				}(i, st)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			waitFor(t, 10*time.Second, "streams to close", func() bool {
				return p.busyStreams() == 0
			})
		})
	})
}

// TestSession_HostileStreams opens raw streams that misbehave and checks
// that the accept loop keeps serving and the bad streams are closed.
func TestSession_HostileStreams(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{serverCfg: func(c *Config) {
			c.HandshakeTimeout = 300 * time.Millisecond
		}})
		cases := []struct {
			name  string
			bytes []byte
		}{
			{"nothing", nil},
			{"mode byte then nothing", []byte{ByteRPC}},
			{"streaming mode byte then nothing", []byte{ByteStreaming}},
			{"unknown mode byte", []byte{0x42}},
			{"half a header", []byte{ByteRPC, 0, 0}},
			{"header length then nothing", []byte{ByteRPC, 0, 0, 0, 20, 0}},
			{"zero length", []byte{ByteRPC, 0, 0, 0, 0, 0}},
			{"huge length", []byte{ByteRPC, 0xff, 0xff, 0xff, 0xff, 0}},
			{"garbage header", append([]byte{ByteRPC, 0, 0, 0, 4, 0}, 0xc1, 0xc1, 0xc1, 0xc1)},
			{"garbage stream header", append([]byte{ByteStreaming, 0, 0, 0, 4, 0}, 0xc1, 0xc1, 0xc1, 0xc1)},
			{"bad frame kind", []byte{ByteRPC, 0, 0, 0, 1, 9, 0xc0}},
		}
		var raws []net.Conn
		for _, tc := range cases {
			ys, err := p.node.ys.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			raws = append(raws, ys)
			if len(tc.bytes) > 0 {
				if _, err := ys.Write(tc.bytes); err != nil {
					t.Fatalf("%s: write: %v", tc.name, err)
				}
			}
		}
		// While all of those are pending, real calls work.
		var reply echoReply
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "ok"}, &reply); err != nil {
			t.Fatalf("Call while hostile streams pending: %v", err)
		}
		// Each bad stream is closed by the server within the handshake
		// timeout (plus slack).
		for i, raw := range raws {
			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			for {
				_, err := raw.Read(buf)
				if err != nil {
					if errors.Is(err, ErrTimeout) || isTimeout(err) {
						t.Errorf("%s: stream not closed by server", cases[i].name)
					}
					break
				}
			}
			raw.Close()
		}
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "ok"}, &reply); err != nil {
			t.Fatalf("Call after hostile streams: %v", err)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestSession_MaxMessageSize(t *testing.T) {
	const small = 64 << 10
	testConnTypes(t, func(t *testing.T, kind string) {
		cases := []struct {
			name      string
			serverMax int
			clientMax int
			args      echoArgs
			method    string
			wantCode  int // 413 if the server reports it, 0 for a local error
		}{
			{"caller refuses to send", 0, small, echoArgs{Data: make([]byte, small+1)}, "Test.Echo", 0},
			{"server refuses request", small, 0, echoArgs{Data: make([]byte, 1<<20)}, "Test.Echo", 413},
			{"server refuses to send reply", small, 0, echoArgs{ReplySize: small + 1}, "Test.Big", 413},
			{"caller refuses reply", 0, small, echoArgs{ReplySize: 1 << 20}, "Test.Big", 0},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				p := newTestPair(t, kind, pairOpts{
					serverCfg: func(c *Config) { c.MaxMessageSize = tc.serverMax },
					clientCfg: func(c *Config) { c.MaxMessageSize = tc.clientMax },
				})
				start := time.Now()
				err := p.node.Call(context.Background(), tc.method, &tc.args, &echoReply{})
				if !errors.Is(err, ErrMessageTooLarge) {
					t.Fatalf("err = %v; want ErrMessageTooLarge", err)
				}
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("took %v; want prompt", d)
				}
				var re *RemoteError
				gotCode := 0
				if errors.As(err, &re) {
					gotCode = re.Code
				}
				if gotCode != tc.wantCode {
					t.Errorf("code = %d; want %d (err %v)", gotCode, tc.wantCode, err)
				}
				// The session is fine afterwards.
				if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "ok"}, &echoReply{}); err != nil {
					t.Errorf("Call after: %v", err)
				}
			})
		}
	})
}

func TestSession_ServeReturnsOnContext(t *testing.T) {
	p := newTestPair(t, "pipe", pairOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.server.Serve(ctx, NewMux()) }()
	cancel()
	if err := recvWithin(t, done, 5*time.Second, "Serve to return"); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve = %v; want context.Canceled", err)
	}
	if p.server.IsClosed() {
		t.Errorf("Serve closed the session on ctx end; want it left open")
	}
	if p.server.RemoteAddr() == nil || p.server.LocalAddr() == nil {
		t.Errorf("nil addresses")
	}
}
