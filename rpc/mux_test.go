package rpc

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestMux_DuplicatePanics(t *testing.T) {
	cases := []struct {
		name string
		reg  func(m *Mux)
	}{
		{"unary twice", func(m *Mux) {
			HandleUnary(m, "A.B", func(context.Context, *echoArgs, *echoReply) error { return nil })
		}},
		{"stream over unary", func(m *Mux) {
			m.HandleStream("A.B", func(context.Context, *Stream) error { return nil })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMux()
			HandleUnary(m, "A.B", func(context.Context, *echoArgs, *echoReply) error { return nil })
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("no panic on duplicate registration")
				}
			}()
			tc.reg(m)
		})
	}
}

// TestMux_BulkNames: bulk methods have their own namespace: a bulk method
// may carry the name of a streaming or unary method (the read whose bytes
// it moves), not of another bulk method, and is not served as either.
func TestMux_BulkNames(t *testing.T) {
	bulk := func(context.Context, *echoArgs, *echoReply, *BulkReply) error { return nil }
	m := NewMux()
	m.HandleStream("Fs.Read", func(context.Context, *Stream) error { return nil })
	HandleUnary(m, "Fs.Stat", func(context.Context, *echoArgs, *echoReply) error { return nil })
	HandleBulk(m, "Fs.Read", bulk)
	HandleBulk(m, "Fs.Stat", bulk)
	if m.lookupBulk("Fs.Read") == nil || m.lookupStream("Fs.Read") == nil || m.lookupBulk("Fs.Stat") == nil {
		t.Fatal("a bulk method and its namesake are not both registered")
	}
	if err := m.CallLocal(context.Background(), "Fs.Read", &echoArgs{}, &echoReply{}); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("CallLocal of a bulk method = %v; want ErrUnknownMethod", err)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("no panic on a bulk method registered twice")
		}
	}()
	HandleBulk(m, "Fs.Read", bulk)
}

func TestMux_CallLocal(t *testing.T) {
	m := NewMux()
	m.Logger = testLogger(t)
	h := newHooks()
	registerTestMethods(m, "local", h)

	meta := map[string]*string{"unset": nil}
	var reply echoReply
	if err := m.CallLocal(context.Background(), "Test.Echo", &echoArgs{Msg: "hi", Meta: meta}, &reply); err != nil {
		t.Fatalf("CallLocal: %v", err)
	}
	if reply.Msg != "local:hi" || reply.SessionID != 0 {
		t.Errorf("reply = %+v", reply)
	}
	if v, ok := reply.Meta["unset"]; !ok || v != nil {
		t.Errorf("Meta lost its nil entry")
	}

	cases := []struct {
		name    string
		method  string
		args    any
		reply   any
		check   func(error) bool
		wantMsg string
	}{
		{"unknown method", "Nope.Nope", &echoArgs{}, &echoReply{},
			func(err error) bool { return errors.Is(err, ErrUnknownMethod) }, `rpc: unknown method "Nope.Nope"`},
		{"args of the wrong type", "Test.Echo", echoArgs{}, &echoReply{},
			func(err error) bool { return err != nil }, "args has type rpc.echoArgs"},
		{"reply of the wrong type", "Test.Echo", &echoArgs{}, &echoArgs{},
			func(err error) bool { return err != nil }, "reply has type *rpc.echoArgs"},
		{"nil args", "Test.Echo", (*echoArgs)(nil), &echoReply{},
			func(err error) bool { return err != nil }, "nil args"},
		{"handler error unchanged", "Test.Error", &echoArgs{Code: 404, Msg: "gone"}, &echoReply{},
			func(err error) bool {
				var ce *codedError
				return errors.As(err, &ce) && ce.code == 404
			}, "gone"},
		{"panic", "Test.Panic", &echoArgs{}, &echoReply{},
			func(err error) bool {
				var re *RemoteError
				return errors.As(err, &re) && re.Code == 500
			}, "panicked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := m.CallLocal(context.Background(), tc.method, tc.args, tc.reply)
			if !tc.check(err) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %v; want one containing %q", err, tc.wantMsg)
			}
		})
	}
}

func TestMux_OpenLocal(t *testing.T) {
	base := numGoroutines()
	m := NewMux()
	m.Logger = testLogger(t)
	h := newHooks()
	registerTestMethods(m, "local", h)

	t.Run("frames then remote error", func(t *testing.T) {
		st, err := m.OpenLocal(context.Background(), "Test.Frames", &echoArgs{Frames: 3, EndErr: "nope", Code: 403})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for i := 0; i < 3; i++ {
			var f frame
			if err := st.Recv(&f); err != nil || f.Seq != i {
				t.Fatalf("Recv %d = %+v, %v", i, f, err)
			}
		}
		var re *RemoteError
		if err := st.Recv(nil); !errors.As(err, &re) || re.Code != 403 || re.Message != "nope" {
			t.Fatalf("end = %v; want RemoteError 403", err)
		}
	})
	t.Run("echo then clean end", func(t *testing.T) {
		st, err := m.OpenLocal(context.Background(), "Test.EchoStream", &echoArgs{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for i := 0; i < 10; i++ {
			if err := st.Send(&frame{Seq: i}); err != nil {
				t.Fatal(err)
			}
			var f frame
			if err := st.Recv(&f); err != nil || f.Seq != i {
				t.Fatalf("Recv = %+v, %v", f, err)
			}
		}
		if err := st.Send(&frame{End: true}); err != nil {
			t.Fatal(err)
		}
		if err := st.Recv(nil); err != io.EOF {
			t.Fatalf("end = %v; want io.EOF", err)
		}
	})
	t.Run("cancel ends the handler", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := m.OpenLocal(ctx, "Test.BlockStream", &echoArgs{})
		if err != nil {
			t.Fatal(err)
		}
		recvWithin(t, h.started, 5*time.Second, "handler start")
		cancel()
		recvWithin(t, h.cancelled, 5*time.Second, "handler ctx cancelled")
		if err := st.Recv(nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Recv = %v; want context.Canceled", err)
		}
		st.Close()
	})
	t.Run("close ends the handler", func(t *testing.T) {
		st, err := m.OpenLocal(context.Background(), "Test.BlockStream", &echoArgs{})
		if err != nil {
			t.Fatal(err)
		}
		recvWithin(t, h.started, 5*time.Second, "handler start")
		st.Close()
		recvWithin(t, h.cancelled, 5*time.Second, "handler ctx cancelled")
	})
	t.Run("unknown method", func(t *testing.T) {
		if _, err := m.OpenLocal(context.Background(), "Test.Echo", nil); !errors.Is(err, ErrUnknownMethod) {
			t.Errorf("err = %v; want ErrUnknownMethod", err)
		}
	})
	goroutinesSettle(t, base)
}
