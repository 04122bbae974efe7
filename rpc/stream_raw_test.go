package rpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestStream_RawMessages: raw messages arrive byte for byte beside msgpack
// ones, directly and through a relay that never decodes them, and the
// handler's error still ends the stream.
func TestStream_RawMessages(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		payload := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
		cases := []struct {
			name    string
			method  string
			args    echoArgs
			wantErr string
		}{
			{"direct", "Test.Raw", echoArgs{Frames: 6, Data: payload}, ""},
			{"direct small", "Test.Raw", echoArgs{Frames: 3, Data: []byte("x")}, ""},
			{"relayed", "Test.RelayRaw", echoArgs{Frames: 6, Data: payload}, ""},
			{"relayed error", "Test.RelayRaw", echoArgs{Frames: 2, Data: payload, EndErr: "disk on fire", Code: 500}, "disk on fire"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				st, err := p.node.OpenStream(context.Background(), tc.method, &tc.args)
				if err != nil {
					t.Fatalf("OpenStream: %v", err)
				}
				defer st.Close()
				var f frame
				if err := st.Recv(&f); err != nil || f.Seq != -1 {
					t.Fatalf("first Recv = %+v, %v", f, err)
				}
				for i := 0; i < tc.args.Frames; i++ {
					m, err := st.RecvMsg()
					if err != nil {
						t.Fatalf("RecvMsg %d: %v", i, err)
					}
					want := append([]byte{byte(i)}, tc.args.Data...)
					if !m.Raw() || !bytes.Equal(m.Bytes(), want) {
						t.Fatalf("message %d: raw=%v, %d bytes; want raw, %d bytes", i, m.Raw(), len(m.Bytes()), len(want))
					}
					m.Release()
					m.Release() // idempotent
				}
				_, err = st.RecvMsg()
				if tc.wantErr == "" {
					if err != io.EOF {
						t.Fatalf("end = %v; want io.EOF", err)
					}
					return
				}
				var re *RemoteError
				if !errors.As(err, &re) || re.Message != tc.wantErr {
					t.Fatalf("end = %v; want remote error %q", err, tc.wantErr)
				}
			})
		}
	})
}

// TestStream_RawDecode: Recv copies a raw message into a *[]byte, discards
// it for nil, and refuses to decode it into a value.
func TestStream_RawDecode(t *testing.T) {
	p := newTestPair(t, "pipe", pairOpts{})
	st, err := p.node.OpenStream(context.Background(), "Test.Raw", &echoArgs{Frames: 3, Data: []byte("abc")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Recv(nil); err != nil {
		t.Fatal(err)
	}
	var b []byte
	if err := st.Recv(&b); err != nil || string(b) != "\x00abc" {
		t.Fatalf("Recv(*[]byte) = %q, %v", b, err)
	}
	if err := st.Recv(nil); err != nil {
		t.Fatalf("Recv(nil) = %v", err)
	}
	if err := st.Recv(&frame{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Recv(*frame) of a raw message = %v; want ErrProtocol", err)
	}
}

// TestStream_RawLimits: a raw message over the sender's limit fails before
// anything is written and leaves the stream usable; a frame without room
// for its header is refused.
func TestStream_RawLimits(t *testing.T) {
	p := newTestPair(t, "tcp", pairOpts{clientCfg: func(c *Config) { c.MaxMessageSize = 1 << 10 }})
	st, err := p.node.OpenStream(context.Background(), "Test.EchoStream", &echoArgs{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.SendRaw(make([]byte, 2<<10)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized SendRaw = %v; want ErrMessageTooLarge", err)
	}
	if err := st.SendRawFrame([]byte{1, 2}); err == nil {
		t.Fatal("SendRawFrame without headroom succeeded")
	}
	if err := st.Send(&frame{Seq: 7}); err != nil {
		t.Fatalf("Send after refused raw message: %v", err)
	}
	var f frame
	if err := st.Recv(&f); err != nil || f.Seq != 7 {
		t.Fatalf("echo = %+v, %v", f, err)
	}
}

// TestFrameCoalescer_VectoredOverTCP: on a TCP connection a bulk body goes
// out with its header in one writev, byte for byte.
func TestFrameCoalescer_VectoredOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := coalesceFrames(conn, nil)
	if !c.vectored {
		t.Fatal("TCP connection not written vectored")
	}
	body := bytes.Repeat([]byte{0xab}, 64<<10)
	hdr := yamuxHeader(0, uint32(len(body)))
	if n, err := c.Write(hdr); err != nil || n != len(hdr) {
		t.Fatalf("header write = %d, %v", n, err)
	}
	if n, err := c.Write(body); err != nil || n != len(body) {
		t.Fatalf("body write = %d, %v; want %d", n, err, len(body))
	}
	conn.Close()
	b := recvWithin(t, got, 10*time.Second, "bytes")
	if want := append(hdr, body...); !bytes.Equal(b, want) {
		t.Fatalf("peer read %d bytes; want %d, header+body", len(b), len(want))
	}
}
