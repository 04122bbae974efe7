package rpc

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestStream_Frames(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		cases := []struct {
			name     string
			args     echoArgs
			wantErr  error // nil means io.EOF
			wantCode int
		}{
			{"clean end", echoArgs{Frames: 5}, nil, 0},
			{"no frames", echoArgs{}, nil, 0},
			{"remote error at the end", echoArgs{Frames: 3, EndErr: "file truncated", Code: 404}, &RemoteError{Code: 404, Message: "file truncated"}, 404},
			{"remote error without code", echoArgs{Frames: 1, EndErr: "disk on fire"}, &RemoteError{Message: "disk on fire"}, 0},
		}
		for _, tc := range cases {
			for _, dir := range []struct {
				name string
				from *Session
				side string
			}{{"node to server", p.node, "server"}, {"server to node", p.server, "node"}} {
				t.Run(tc.name+"/"+dir.name, func(t *testing.T) {
					st, err := dir.from.OpenStream(context.Background(), "Test.Frames", &tc.args)
					if err != nil {
						t.Fatalf("OpenStream: %v", err)
					}
					defer st.Close()
					for i := 0; i < tc.args.Frames; i++ {
						var f frame
						if err := st.Recv(&f); err != nil {
							t.Fatalf("Recv %d: %v", i, err)
						}
						if f.Seq != i || string(f.Data) != dir.side {
							t.Fatalf("frame %d = %+v", i, f)
						}
					}
					err = st.Recv(&frame{})
					if tc.wantErr == nil {
						if err != io.EOF {
							t.Fatalf("final Recv = %v; want io.EOF", err)
						}
					} else {
						var re *RemoteError
						if !errors.As(err, &re) || *re != *tc.wantErr.(*RemoteError) {
							t.Fatalf("final Recv = %#v; want %#v", err, tc.wantErr)
						}
					}
					// The result sticks.
					if err2 := st.Recv(&frame{}); !errors.Is(err2, err) && err2 != err {
						t.Errorf("second final Recv = %v; want %v", err2, err)
					}
					if err := st.Send(&frame{}); err != io.EOF {
						t.Errorf("Send after end = %v; want io.EOF", err)
					}
				})
			}
		}
	})
}

func TestStream_Bidirectional(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		for _, endErr := range []string{"", "bye"} {
			st, err := p.server.OpenStream(context.Background(), "Test.EchoStream", &echoArgs{EndErr: endErr, Code: 409})
			if err != nil {
				t.Fatal(err)
			}
			// Sender and receiver in different goroutines.
			const n = 200
			sendErr := make(chan error, 1)
			go func() {
				for i := 0; i < n; i++ {
					if err := st.Send(&frame{Seq: i, Data: make([]byte, 1024)}); err != nil {
						sendErr <- err
						return
					}
				}
				sendErr <- st.Send(&frame{End: true})
			}()
			for i := 0; i < n; i++ {
				var f frame
				if err := st.Recv(&f); err != nil || f.Seq != i || len(f.Data) != 1024 {
					t.Fatalf("Recv %d = %+v, %v", i, f.Seq, err)
				}
			}
			if err := recvWithin(t, sendErr, 5*time.Second, "sender"); err != nil {
				t.Fatalf("Send: %v", err)
			}
			err = st.Recv(nil)
			if endErr == "" && err != io.EOF {
				t.Errorf("end = %v; want io.EOF", err)
			}
			var re *RemoteError
			if endErr != "" && (!errors.As(err, &re) || re.Code != 409 || re.Message != endErr) {
				t.Errorf("end = %v; want RemoteError 409 %q", err, endErr)
			}
			st.Close()
		}
		waitFor(t, 5*time.Second, "streams to close", func() bool {
			return p.busyStreams() == 0
		})
	})
}

func TestStream_UnknownMethod(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		for _, from := range []*Session{p.node, p.server} {
			_, err := from.OpenStream(context.Background(), "Nope.Nope", &echoArgs{})
			if !errors.Is(err, ErrUnknownMethod) {
				t.Fatalf("err = %v; want ErrUnknownMethod", err)
			}
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != 404 || re.Message != `rpc: unknown method "Nope.Nope"` {
				t.Errorf("err = %#v", err)
			}
			// A unary method is not a streaming one.
			if _, err := from.OpenStream(context.Background(), "Test.Echo", nil); !errors.Is(err, ErrUnknownMethod) {
				t.Errorf("OpenStream(unary method) = %v; want ErrUnknownMethod", err)
			}
		}
	})
}

func TestStream_CallerEndsEarly(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		cases := []string{"close", "cancel", "deadline"}
		for _, how := range cases {
			t.Run(how, func(t *testing.T) {
				p := newTestPair(t, kind, pairOpts{})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if how == "deadline" {
					ctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
					defer cancel()
				}
				st, err := p.server.OpenStream(ctx, "Test.BlockStream", &echoArgs{Msg: how})
				if err != nil {
					t.Fatal(err)
				}
				recvWithin(t, p.hooks.started, 5*time.Second, "handler start")
				recvDone := make(chan error, 1)
				go func() { recvDone <- st.Recv(nil) }()
				switch how {
				case "close":
					st.Close()
				case "cancel":
					cancel()
				}
				err = recvWithin(t, recvDone, 5*time.Second, "blocked Recv to return")
				switch how {
				case "close":
					if !errors.Is(err, ErrStreamClosed) {
						t.Errorf("Recv = %v; want ErrStreamClosed", err)
					}
				case "cancel":
					if !errors.Is(err, context.Canceled) {
						t.Errorf("Recv = %v; want context.Canceled", err)
					}
				case "deadline":
					// The handler has the same deadline (plus transit), so
					// its own report may arrive first.
					var re *RemoteError
					if errors.As(err, &re) {
						if re.Message != context.DeadlineExceeded.Error() {
							t.Errorf("Recv = %v; want the handler's deadline error", err)
						}
					} else if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
						t.Errorf("Recv = %v; want DeadlineExceeded and ErrTimeout", err)
					}
				}
				recvWithin(t, p.hooks.cancelled, 5*time.Second, "handler ctx cancelled")
				if st.Context().Err() == nil {
					t.Errorf("caller Stream.Context not cancelled")
				}
				st.Close() // idempotent
				waitFor(t, 5*time.Second, "streams to close", func() bool {
					return p.busyStreams() == 0
				})
			})
		}
	})
}

func TestStream_Deadline(t *testing.T) {
	p := newTestPair(t, "tcp", pairOpts{})
	st, err := p.node.OpenStream(context.Background(), "Test.BlockStream", &echoArgs{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recvWithin(t, p.hooks.started, 5*time.Second, "handler start")
	st.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if err := st.Recv(nil); !errors.Is(err, ErrTimeout) || !isTimeout(err) {
		t.Fatalf("Recv = %v; want ErrTimeout", err)
	}
	// Clearing the deadline makes the stream usable again.
	st.SetDeadline(time.Time{})
	errCh := make(chan error, 1)
	go func() { errCh <- st.Recv(nil) }()
	select {
	case err := <-errCh:
		t.Fatalf("Recv after clearing deadline = %v; want it to block", err)
	case <-time.After(100 * time.Millisecond):
	}
	st.Close()
	if err := recvWithin(t, errCh, 5*time.Second, "Recv"); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("Recv = %v; want ErrStreamClosed", err)
	}
	if err := st.SetDeadline(time.Now()); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("SetDeadline after Close = %v", err)
	}
}

func TestStream_MaxMessageSize(t *testing.T) {
	const small = 64 << 10
	testConnTypes(t, func(t *testing.T, kind string) {
		t.Run("send too large stays usable", func(t *testing.T) {
			p := newTestPair(t, kind, pairOpts{clientCfg: func(c *Config) { c.MaxMessageSize = small }})
			st, err := p.node.OpenStream(context.Background(), "Test.EchoStream", &echoArgs{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := st.Send(&frame{Data: make([]byte, small+1)}); !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("Send = %v; want ErrMessageTooLarge", err)
			}
			if err := st.Send(&frame{Seq: 7}); err != nil {
				t.Fatalf("Send after: %v", err)
			}
			var f frame
			if err := st.Recv(&f); err != nil || f.Seq != 7 {
				t.Fatalf("Recv = %+v, %v", f, err)
			}
		})
		t.Run("handler receives too large", func(t *testing.T) {
			p := newTestPair(t, kind, pairOpts{serverCfg: func(c *Config) { c.MaxMessageSize = small }})
			st, err := p.node.OpenStream(context.Background(), "Test.EchoStream", &echoArgs{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := st.Send(&frame{Data: make([]byte, 1<<20)}); err != nil {
				t.Fatalf("Send: %v", err)
			}
			err = st.Recv(nil)
			var re *RemoteError
			if !errors.Is(err, ErrMessageTooLarge) || !errors.As(err, &re) || re.Code != 413 {
				t.Fatalf("Recv = %v; want RemoteError 413 matching ErrMessageTooLarge", err)
			}
		})
		t.Run("caller receives too large", func(t *testing.T) {
			p := newTestPair(t, kind, pairOpts{clientCfg: func(c *Config) { c.MaxMessageSize = small }})
			st, err := p.node.OpenStream(context.Background(), "Test.Frames", &echoArgs{Frames: 1, ReplySize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := st.Recv(nil); !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("Recv = %v; want ErrMessageTooLarge", err)
			}
			if err := st.Send(&frame{}); err == nil {
				t.Errorf("Send on a reset stream succeeded")
			}
			waitFor(t, 5*time.Second, "streams to close", func() bool {
				return p.busyStreams() == 0
			})
		})
	})
}

func TestStream_HandlerPanic(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		st, err := p.node.OpenStream(context.Background(), "Test.PanicStream", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var f frame
		if err := st.Recv(&f); err != nil || f.Seq != 1 {
			t.Fatalf("Recv = %+v, %v", f, err)
		}
		err = st.Recv(nil)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != 500 || re.Message != `rpc: handler for "Test.PanicStream" panicked` {
			t.Fatalf("end = %#v; want RemoteError 500", err)
		}
		// The server lives on.
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{}, nil); err != nil {
			t.Fatal(err)
		}
	})
}
