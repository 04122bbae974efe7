package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestReadProbe(t *testing.T) {
	cases := []struct {
		name string
		// act runs while a one-byte read waits on b; peer is the other end.
		act     func(b *RecordBatcher, peer net.Conn)
		wantErr error // nil: the read returns the byte "x"
		// delay is the probe's: long enough that the test sees the read
		// wait (and, but for the byte case, that only act ends it).
		delay time.Duration
	}{
		{"deadline in the past aborts it", func(b *RecordBatcher, peer net.Conn) {
			b.SetReadDeadline(time.Unix(1, 0))
		}, os.ErrDeadlineExceeded, time.Minute},
		{"past SetDeadline aborts it", func(b *RecordBatcher, peer net.Conn) {
			b.SetDeadline(time.Unix(1, 0))
		}, os.ErrDeadlineExceeded, time.Minute},
		{"a byte is read after the delay", func(b *RecordBatcher, peer net.Conn) {
			b.SetReadDeadline(time.Now().Add(time.Minute)) // future: no abort
			peer.Write([]byte("x"))
		}, nil, 500 * time.Millisecond},
		{"close reaches the connection", func(b *RecordBatcher, peer net.Conn) {
			b.Close()
		}, net.ErrClosed, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c1, c2 := tcpPair(t)
			b := &RecordBatcher{Conn: c1, probe: &readProbe{delay: tc.delay}}
			done := make(chan error, 1)
			var got [1]byte
			go func() {
				_, err := b.Read(got[:])
				done <- err
			}()
			waitFor(t, 5*time.Second, "the read to wait", func() bool {
				b.probe.mu.Lock()
				defer b.probe.mu.Unlock()
				return b.probe.waiting
			})
			tc.act(b, c2)
			err := recvWithin(t, done, 5*time.Second, "the read to end")
			switch {
			case tc.wantErr == nil && (err != nil || got[0] != 'x'):
				t.Fatalf("Read = %q, %v; want x", got[:], err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Read = %v; want %v", err, tc.wantErr)
			}
			if errors.Is(tc.wantErr, os.ErrDeadlineExceeded) {
				// net/http tells its abort from a failure this way.
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("Read error %v is not a net.Error timeout", err)
				}
				// A deadline set before the read fails it at once, and
				// clearing it lets a later read through (after a short
				// delay now: the test waits for it).
				b.probe.mu.Lock()
				b.probe.delay = time.Millisecond
				b.probe.mu.Unlock()
				if _, err := b.Read(got[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Read with a past deadline = %v", err)
				}
				b.SetReadDeadline(time.Time{})
				c2.Write([]byte("x"))
				if _, err := b.Read(got[:]); err != nil || got[0] != 'x' {
					t.Errorf("Read after clearing the deadline = %q, %v", got[:], err)
				}
			}
		})
	}

	t.Run("larger reads are not deferred", func(t *testing.T) {
		c1, c2 := tcpPair(t)
		// A deferred read would wait a minute; the test gives up sooner.
		b := &RecordBatcher{Conn: c1, probe: &readProbe{delay: time.Minute}}
		c2.Write([]byte("hello"))
		buf := make([]byte, 16)
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := b.Read(buf)
			done <- result{n, err}
		}()
		r := recvWithin(t, done, 5*time.Second, "the larger read")
		if r.err != nil || string(buf[:r.n]) != "hello" {
			t.Fatalf("Read = %q, %v", buf[:r.n], r.err)
		}
	})
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2 := recvWithin(t, accepted, 5*time.Second, "accept")
	if c2 == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return c2, c1
}

// TestBatchingListener_HTTP runs net/http over BatchingListener: keep-alive
// and pipelined requests are answered, and a client that goes away while
// its handler runs is still noticed (the deferred read reaches the socket).
func TestBatchingListener_HTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	started := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s", r.URL.Query().Get("v"))
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			close(gone)
		case <-time.After(30 * time.Second):
		}
	})
	srv := &http.Server{Handler: mux, ConnContext: BatcherContext}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(BatchingListener(ln, nil)) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-serveDone
	})
	addr := ln.Addr().String()

	t.Run("keep-alive", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		defer hc.CloseIdleConnections()
		for i := range 50 {
			resp, err := hc.Get(fmt.Sprintf("http://%s/echo?v=%d", addr, i))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != fmt.Sprint(i) {
				t.Fatalf("request %d answered %q", i, body)
			}
		}
	})

	t.Run("pipelined", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var reqs strings.Builder
		for i := range 3 {
			fmt.Fprintf(&reqs, "GET /echo?v=p%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		}
		if _, err := io.WriteString(c, reqs.String()); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for i := range 3 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("p%d", i); string(body) != want {
				t.Fatalf("response %d = %q; want %q", i, body, want)
			}
		}
	})

	t.Run("client goes away", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		recvWithin(t, started, 5*time.Second, "handler start")
		c.Close()
		recvWithin(t, gone, 5*time.Second, "handler context cancelled")
	})
}
