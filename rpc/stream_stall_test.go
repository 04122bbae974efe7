package rpc

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestStream_StalledMessage opens a streaming call from a raw stream that
// sends the header and arguments, then the header of a 100-byte message
// and nothing more: the handler's Recv fails once HandshakeTimeout has
// passed, the stream is closed, and the session goes on serving calls.
// A stream that is merely quiet (no byte of a next message) is not
// bounded.
func TestStream_StalledMessage(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{serverCfg: func(c *Config) {
			c.HandshakeTimeout = 300 * time.Millisecond
		}})
		e := getEncoder()
		defer putEncoder(e)
		e.reset()
		e.out = append(e.out, ByteStreaming)
		if err := e.appendFrame(kindData, &streamHeader{Method: "Test.EchoStream"}, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := e.appendFrame(kindData, &echoArgs{Msg: "hi"}, 1<<20); err != nil {
			t.Fatal(err)
		}
		quiet := append([]byte(nil), e.bytes()...)
		stalled := append(append([]byte(nil), quiet...), 0, 0, 0, 100, kindData, 0x93) // 100 bytes: HandshakeTimeout + 1.5 ms

		open := func(b []byte) (closed chan error) {
			ys, err := p.node.ys.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ys.Close() })
			if _, err := ys.Write(b); err != nil {
				t.Fatal(err)
			}
			closed = make(chan error, 1)
			go func() {
				buf := make([]byte, 256)
				for {
					if _, err := ys.Read(buf); err != nil {
						closed <- err
						return
					}
				}
			}()
			return closed
		}
		quietClosed := open(quiet)
		stalledClosed := open(stalled)
		select {
		case err := <-stalledClosed:
			if isTimeout(err) {
				t.Fatalf("stalled stream: %v; want it closed by the server", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the stream with half a message is still open after 10s")
		}
		var reply echoReply
		if err := p.node.Call(context.Background(), "Test.Echo", &echoArgs{Msg: "ok"}, &reply); err != nil || p.node.IsClosed() {
			t.Fatalf("call after the stalled stream: %v (session closed: %v)", err, p.node.IsClosed())
		}
		select {
		case err := <-quietClosed:
			if !errors.Is(err, ErrStreamClosed) {
				t.Fatalf("the quiet stream was closed: %v", err)
			}
		default:
		}
	})
}
