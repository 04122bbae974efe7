package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach it.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsOverBatcher returns the client end of a TLS connection made over a
// RecordBatcher, the writes under it, and the server end's reader.
func tlsOverBatcher(t *testing.T) (*tls.Conn, *countingConn, *tls.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cc := &countingConn{Conn: a}
	cfg := clientTLSConfig()
	cfg.ServerName = "127.0.0.1"
	client := tls.Client(NewRecordBatcher(cc), cfg)
	server := tls.Server(b, serverTLSConfig())
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := recvWithin(t, errc, 10*time.Second, "server handshake"); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return client, cc, server
}

// TestRecordBatcher_OneSocketWritePerBatch: the records of a 128 KiB write
// reach the socket as one write inside a batch, as several outside, and
// the peer reads the same bytes either way.
func TestRecordBatcher_OneSocketWritePerBatch(t *testing.T) {
	client, cc, server := tlsOverBatcher(t)
	b := BatcherOf(client)
	if b == nil {
		t.Fatal("BatcherOf found no batcher under the TLS connection")
	}
	payload := bytes.Repeat([]byte("tether!"), 128<<10/7)
	for _, tc := range []struct {
		name      string
		batch     bool
		maxWrites int64
		minWrites int64
	}{
		{"batched", true, 1, 1},
		{"unbatched", false, 1 << 20, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			go func() {
				buf := make([]byte, len(payload))
				_, err := io.ReadFull(server, buf)
				if err != nil {
					buf = nil
				}
				got <- buf
			}()
			before := cc.writes.Load()
			if tc.batch {
				b.Begin()
			}
			if _, err := client.Write(payload); err != nil {
				t.Fatal(err)
			}
			if tc.batch {
				if err := b.End(); err != nil {
					t.Fatal(err)
				}
			}
			if n := cc.writes.Load() - before; n < tc.minWrites || n > tc.maxWrites {
				t.Fatalf("%d socket writes; want %d to %d", n, tc.minWrites, tc.maxWrites)
			}
			if buf := recvWithin(t, got, 10*time.Second, "payload"); !bytes.Equal(buf, payload) {
				t.Fatalf("peer read %d bytes; want the %d written", len(buf), len(payload))
			}
		})
	}
}

// TestWithBatch: WithBatch gathers what its function writes on the
// request's connection, and just runs the function without a batcher.
func TestWithBatch(t *testing.T) {
	client, cc, server := tlsOverBatcher(t)
	ctx := BatcherContext(context.Background(), client)
	go io.Copy(io.Discard, server)
	before := cc.writes.Load()
	err := WithBatch(ctx, func() error {
		for i := 0; i < 4; i++ {
			if _, err := client.Write(make([]byte, 40<<10)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load() - before; n != 1 {
		t.Fatalf("%d socket writes for one batch; want 1", n)
	}
	ran := false
	if err := WithBatch(context.Background(), func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("WithBatch without a batcher: ran=%v err=%v", ran, err)
	}
	if BatcherContext(context.Background(), &countingConn{}) != context.Background() {
		t.Fatal("BatcherContext changed the context of a plain connection")
	}
}

// TestCoalesceFrames_SeesThroughDialConn: the session a node dials wraps
// its connection to watch reads; writes still go to the TCP connection
// itself, vectored.
func TestCoalesceFrames_SeesThroughDialConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fc := coalesceFrames(&dialConn{Conn: conn}, nil)
	if !fc.vectored || fc.w != conn {
		t.Fatalf("coalescer writes to %T (vectored=%v); want the TCP connection", fc.w, fc.vectored)
	}
}

// scriptedConn answers each Read with the next of its chunks (at most
// len(p) of it), then with err.
type scriptedConn struct {
	net.Conn
	chunks [][]byte
	err    error
	reads  int
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, c.err
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return n, c.err // the last bytes come with the error
	}
	return n, nil
}

func TestRecordBatcher_ReadAhead(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 2*readAheadSize/10)
	cases := []struct {
		name      string
		chunks    [][]byte
		readSize  int
		wantReads int // reads that reach the connection (the last bytes come with EOF)
	}{
		{"small reads share one socket read", [][]byte{[]byte("abcdefghijklmnopqrstuvwxy")}, 5, 1},
		{"one read per chunk", [][]byte{[]byte("abc"), []byte("defg"), []byte("h")}, 2, 3},
		{"large reads bypass the buffer", [][]byte{big}, readAheadSize, 2},
		{"small reads of a large chunk", [][]byte{big}, 5 << 10, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []byte
			for _, c := range tc.chunks {
				want = append(want, c...)
			}
			sc := &scriptedConn{chunks: append([][]byte(nil), tc.chunks...), err: io.EOF}
			b := NewRecordBatcher(sc)
			b.ReadAhead()
			var got []byte
			p := make([]byte, tc.readSize)
			for {
				n, err := b.Read(p)
				got = append(got, p[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, want %d", len(got), len(want))
			}
			if sc.reads != tc.wantReads {
				t.Fatalf("%d reads reached the connection, want %d", sc.reads, tc.wantReads)
			}
			if b.ra.buf != nil {
				t.Fatal("a drained connection still holds its read-ahead buffer")
			}
		})
	}
}
