package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestDataConn: a node dials a data connection with the token a server
// handed out and the server gets it, once; unknown, reused or cancelled
// tokens are refused, and a TLS server offers none.
func TestDataConn(t *testing.T) {
	p := newTestPair(t, "tcp", pairOpts{})
	addr := p.serverLn.Addr().String()
	ctx := context.Background()

	t.Run("accepted", func(t *testing.T) {
		token, conns, cancel, err := p.srv.ExpectData()
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		before := p.srv.DataConns()
		dc, err := DialData(ctx, addr, token, p.clientCfg)
		if err != nil {
			t.Fatalf("DialData: %v", err)
		}
		payload := bytes.Repeat([]byte("data"), 64<<10)
		go func() {
			dc.Write(payload)
			dc.Close()
		}()
		sc := recvWithin(t, conns, 5*time.Second, "data connection")
		defer sc.Close()
		got, err := io.ReadAll(sc)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("server read %d bytes, %v; want %d", len(got), err, len(payload))
		}
		if n := p.srv.DataConns(); n != before+1 {
			t.Fatalf("DataConns = %d; want %d", n, before+1)
		}
		// A token is good once.
		if _, err := DialData(ctx, addr, token, p.clientCfg); err == nil {
			t.Fatal("a used token was accepted again")
		}
	})

	refused := []struct {
		name  string
		token func(t *testing.T) []byte
	}{
		{"unknown token", func(*testing.T) []byte { return bytes.Repeat([]byte{7}, DataTokenSize) }},
		{"cancelled token", func(t *testing.T) []byte {
			token, _, cancel, err := p.srv.ExpectData()
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			return token
		}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DialData(ctx, addr, tc.token(t), p.clientCfg); err == nil {
				t.Fatal("DialData succeeded")
			}
		})
	}

	t.Run("bad token size", func(t *testing.T) {
		if _, err := DialData(ctx, addr, []byte("short"), p.clientCfg); err == nil {
			t.Fatal("DialData with a short token succeeded")
		}
	})

	t.Run("cancel closes an untaken connection", func(t *testing.T) {
		token, _, cancel, err := p.srv.ExpectData()
		if err != nil {
			t.Fatal(err)
		}
		dc, err := DialData(ctx, addr, token, p.clientCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		cancel()
		dc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := dc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("read from a connection nobody took = %v; want EOF", err)
		}
	})

	t.Run("inside TLS", func(t *testing.T) {
		tp := newTestPair(t, "tls", pairOpts{})
		token, conns, cancel, err := tp.srv.ExpectData()
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		dc, err := DialData(ctx, tp.serverLn.Addr().String(), token, tp.clientCfg)
		if err != nil {
			t.Fatalf("DialData over TLS: %v", err)
		}
		if BatcherOf(dc) == nil {
			t.Fatal("TLS data connection without a record batcher")
		}
		payload := bytes.Repeat([]byte("tls!"), 100<<10)
		go func() {
			CopyData(dc, bytes.NewReader(payload), nil)
			dc.Close()
		}()
		sc := recvWithin(t, conns, 5*time.Second, "data connection")
		defer sc.Close()
		if _, ok := DataNetConn(sc).(*tls.Conn); !ok {
			t.Fatalf("server got %T; want the TLS connection", sc)
		}
		got, err := io.ReadAll(sc)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("server read %d bytes, %v; want %d", len(got), err, len(payload))
		}
		// A plaintext data connection to a server that requires TLS is
		// refused like any plaintext connection.
		token2, _, cancel2, _ := tp.srv.ExpectData()
		defer cancel2()
		if _, err := DialData(ctx, tp.serverLn.Addr().String(), token2, testConfig(t)); err == nil {
			t.Fatal("plaintext data connection accepted by a TLS server")
		}
	})

	t.Run("a peer that sends half a token does not hold the server", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{ByteData, 1, 2, 3})
		// The rest never comes: the handshake deadline ends it; meanwhile
		// other data connections work.
		token, conns, cancel, err := p.srv.ExpectData()
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		dc, err := DialData(ctx, addr, token, p.clientCfg)
		if err != nil {
			t.Fatal(err)
		}
		dc.Close()
		recvWithin(t, conns, 5*time.Second, "data connection").Close()
	})
}

// TestDataDialer: a failed data connection is remembered per address for
// the redial delay, during which Dial connects nowhere; a success, another
// address, a cancelled read and the delay passing are not held against a
// later dial.
func TestDataDialer(t *testing.T) {
	p := newTestPair(t, "tcp", pairOpts{})
	addr := p.serverLn.Addr().String()
	// A second server: it expects no token of the first.
	other := newTestPair(t, "tcp", pairOpts{})
	otherAddr := other.serverLn.Addr().String()
	unknown := bytes.Repeat([]byte{9}, DataTokenSize)
	offer := func(t *testing.T, srv *Server) []byte {
		token, _, cancel, err := srv.ExpectData()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cancel) // closes the connection, once accepted
		return token
	}
	ctx := context.Background()

	cases := []struct {
		name  string
		delay time.Duration
		steps []dialStep
	}{
		{"a refusal is remembered, then forgotten after the delay", time.Minute, []dialStep{
			{addr: "a", token: "unknown", want: "refused", dials: 1},
			{addr: "a", token: "offered", want: "skipped", dials: 0},
			{addr: "b", token: "offered", want: "ok", dials: 1},
			{advance: 59 * time.Second, addr: "a", token: "offered", want: "skipped", dials: 0},
			{advance: 2 * time.Second, addr: "a", token: "offered", want: "ok", dials: 1},
		}},
		{"a success forgets the failure", time.Minute, []dialStep{
			{addr: "a", token: "unknown", want: "refused", dials: 1},
			{advance: time.Minute, addr: "a", token: "offered", want: "ok", dials: 1},
			{addr: "a", token: "offered", want: "ok", dials: 1},
		}},
		{"a cancelled read is not held against the address", time.Minute, []dialStep{
			{addr: "a", token: "offered", cancelled: true, want: "refused", dials: 0},
			{addr: "a", token: "offered", want: "ok", dials: 1},
		}},
		{"-1 dials every time", -1, []dialStep{
			{addr: "a", token: "unknown", want: "refused", dials: 1},
			{addr: "a", token: "offered", want: "ok", dials: 1},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := *p.clientCfg
			cfg.DataRedialDelay = tc.delay
			d := NewDataDialer(&cfg)
			now := time.Now()
			d.now = func() time.Time { return now }
			for i, st := range tc.steps {
				now = now.Add(st.advance)
				srv, a, ln := p.srv, otherAddr, other.serverLn
				if st.addr == "a" {
					a, ln = addr, p.serverLn
				} else {
					srv = other.srv
				}
				token := unknown
				if st.token == "offered" {
					token = offer(t, srv)
				}
				dctx := ctx
				if st.cancelled {
					c, cancel := context.WithCancel(ctx)
					cancel()
					dctx = c
				}
				before := ln.count()
				dc, err := d.Dial(dctx, a, token)
				got := "ok"
				switch {
				case errors.Is(err, ErrDataDialSkipped):
					got = "skipped"
				case err != nil:
					got = "refused"
				default:
					dc.Close()
				}
				if got != st.want {
					t.Fatalf("step %d: Dial = %v (%s); want %s", i, err, got, st.want)
				}
				if n := ln.count() - before; n != st.dials {
					t.Fatalf("step %d: %d connections reached the server; want %d", i, n, st.dials)
				}
			}
		})
	}
}

// dialStep is one Dial of TestDataDialer: after moving the clock by
// advance, to server "a" or "b" with an "unknown" or "offered" token.
type dialStep struct {
	advance     time.Duration
	addr, token string
	cancelled   bool
	want        string // "ok", "refused", "skipped"
	dials       int    // connections the server sees
}
