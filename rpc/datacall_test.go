package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// dataReadArgs and dataReadReply are a bulk read's call and its header.
type dataReadArgs struct {
	Fill   byte
	Length int
	Fail   string // the handler's error, if set
	Short  bool   // send fewer bytes than announced
	Panic  bool
	Silent bool // return without a reply
}

type dataReadReply struct{ Length int }

// testBulkMux serves "Test.Read", Length bytes of Fill, and "Test.Block",
// which waits for the call's own timeout, as bulk methods.
func testBulkMux() *Mux {
	m := NewMux()
	HandleBulk(m, "Test.Read", func(ctx context.Context, args *dataReadArgs, resp *dataReadReply, reply *BulkReply) error {
		if args.Panic {
			panic("boom")
		}
		if args.Silent {
			return nil
		}
		if args.Fail != "" {
			return &codedError{code: 404, msg: args.Fail}
		}
		resp.Length = args.Length
		w, err := reply.Send()
		if err != nil {
			return err
		}
		n := args.Length
		if args.Short {
			n /= 2
		}
		if _, err := WriteData(w, bytes.Repeat([]byte{args.Fill}, n)); err != nil {
			return err
		}
		if args.Short {
			return errors.New("file shrank")
		}
		return nil
	})
	HandleBulk(m, "Test.Block", func(ctx context.Context, _ *dataReadArgs, _ *dataReadReply, _ *BulkReply) error {
		<-ctx.Done()
		return ctx.Err()
	})
	// A unary method of the same name is not served on data connections.
	HandleUnary(m, "Test.Unary", func(context.Context, *dataReadArgs, *dataReadReply) error { return nil })
	return m
}

// dataCallPair makes a data connection over kind ("tcp", "tls") whose
// node end serves data calls; it returns the server's end.
func dataCallPair(t *testing.T, kind string) (*testPair, net.Conn, chan struct{}) {
	t.Helper()
	p := newTestPair(t, kind, pairOpts{})
	token, conns, cancel, err := p.srv.ExpectData()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	dc, err := DialData(context.Background(), p.serverLn.Addr().String(), token, p.clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		ServeDataCalls(ctx, dc, p.clientCfg, testBulkMux())
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	sc := recvWithin(t, conns, 5*time.Second, "data connection")
	t.Cleanup(func() { sc.Close() })
	return p, sc, done
}

// readBody reads a data call's bytes: head, then the rest from conn.
func readBody(conn net.Conn, head []byte, length int) ([]byte, error) {
	rest := make([]byte, length-len(head))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	_, err := io.ReadFull(conn, rest)
	return append(head, rest...), err
}

func TestDataCalls(t *testing.T) {
	for _, kind := range []string{"tcp", "tls"} {
		t.Run(kind, func(t *testing.T) {
			p, sc, done := dataCallPair(t, kind)
			ctx := context.Background()
			cases := []struct {
				name    string
				args    dataReadArgs
				wantErr string // "": the bytes arrive; every case leaves the connection usable
			}{
				{"small", dataReadArgs{Fill: 'a', Length: 100}, ""},
				{"large", dataReadArgs{Fill: 'b', Length: 3 << 20}, ""},
				{"handler error", dataReadArgs{Fail: "no such file"}, "no such file"},
				{"empty", dataReadArgs{Fill: 'c'}, ""},
				{"handler panic", dataReadArgs{Panic: true}, "panicked"},
				{"handler without a reply", dataReadArgs{Silent: true}, "sent no reply"},
				{"again after errors", dataReadArgs{Fill: 'd', Length: 70000}, ""},
			}
			for _, tc := range cases {
				var reply dataReadReply
				head, err := p.srv.CallData(ctx, sc, "Test.Read", &tc.args, &reply)
				if tc.wantErr != "" {
					var re *RemoteError
					if !errors.As(err, &re) || !bytes.Contains([]byte(re.Message), []byte(tc.wantErr)) {
						t.Fatalf("%s: CallData = %v; want a RemoteError with %q", tc.name, err, tc.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: CallData: %v", tc.name, err)
				}
				if reply.Length != tc.args.Length || len(head) > reply.Length {
					t.Fatalf("%s: reply %+v with %d bytes of head", tc.name, reply, len(head))
				}
				got, err := readBody(sc, head, reply.Length)
				if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{tc.args.Fill}, tc.args.Length)) {
					t.Fatalf("%s: body of %d bytes, %v", tc.name, len(got), err)
				}
			}

			// A short transfer ends the connection on the node's side.
			var reply dataReadReply
			head, err := p.srv.CallData(ctx, sc, "Test.Read", &dataReadArgs{Fill: 'e', Length: 1 << 20, Short: true}, &reply)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := readBody(sc, head, reply.Length); err == nil {
				t.Fatal("a short transfer read as complete")
			}
			recvWithin(t, done, 5*time.Second, "the node to close the connection")
			// The next call on it is lost, not answered.
			if _, err := p.srv.CallData(ctx, sc, "Test.Read", &dataReadArgs{Length: 1}, &reply); !errors.Is(err, ErrDataConnLost) {
				t.Fatalf("CallData on a connection the node closed = %v; want ErrDataConnLost", err)
			}
		})
	}
}

func TestDataCalls_Deadline(t *testing.T) {
	p, sc, _ := dataCallPair(t, "tcp")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var reply dataReadReply
	start := time.Now()
	_, err := p.srv.CallData(ctx, sc, "Test.Block", &dataReadArgs{}, &reply)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("CallData past its deadline = %v; want ErrTimeout", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("CallData took %v; want it to end at its deadline", elapsed)
	}
	// An unknown method is the node's answer, not a lost connection (on a
	// new connection: a call that failed leaves its connection closed).
	_, sc2, _ := dataCallPair(t, "tcp")
	_, err = p.srv.CallData(context.Background(), sc2, "Test.Nope", &dataReadArgs{}, &reply)
	if !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("CallData of an unknown method = %v; want ErrUnknownMethod", err)
	}
	// Nor is a unary method a bulk one; the connection still serves.
	if _, err = p.srv.CallData(context.Background(), sc2, "Test.Unary", &dataReadArgs{}, &reply); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("CallData of a unary method = %v; want ErrUnknownMethod", err)
	}
	// Arguments of another type are the caller's fault: 400.
	var re *RemoteError
	if _, err = p.srv.CallData(context.Background(), sc2, "Test.Read", "not a struct", &reply); !errors.As(err, &re) || re.Code != 400 {
		t.Fatalf("CallData with bad args = %v; want a 400", err)
	}
	head, err := p.srv.CallData(context.Background(), sc2, "Test.Read", &dataReadArgs{Fill: 'x', Length: 10}, &reply)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readBody(sc2, head, reply.Length); err != nil || string(got) != "xxxxxxxxxx" {
		t.Fatalf("body %q, %v", got, err)
	}
}

func TestDataPool(t *testing.T) {
	srv := NewServer(testConfig(t), nil)
	var mu sync.Mutex
	var ends []net.Conn
	conn := func() net.Conn {
		a, b := net.Pipe()
		mu.Lock()
		ends = append(ends, b)
		mu.Unlock()
		return a
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
	}

	if srv.TakeData("n1") != nil {
		t.Fatal("an empty pool gave a connection")
	}
	a, b := conn(), conn()
	srv.PoolData("n1", a)
	srv.PoolData("n1", b)
	if got := srv.TakeData("n1"); got != b {
		t.Fatal("TakeData did not return the most recently pooled connection")
	}
	if srv.PooledData("n1") != 1 || srv.PooledData("n2") != 0 {
		t.Fatalf("pooled = %d, %d", srv.PooledData("n1"), srv.PooledData("n2"))
	}
	// A full pool closes what comes over its bound.
	perNode := srv.cfg.MaxPooledDataPerNode
	for i := 0; i < perNode+3; i++ {
		srv.PoolData("n2", conn())
	}
	if n := srv.PooledData("n2"); n != perNode {
		t.Fatalf("pooled %d; want the bound %d", n, perNode)
	}
	if n := srv.AllPooledData(); n != perNode+1 {
		t.Fatalf("%d pooled in all; want %d", n, perNode+1)
	}
	// DropData closes a node's connections.
	srv.DropData("n1")
	if srv.TakeData("n1") != nil {
		t.Fatal("TakeData after DropData gave a connection")
	}
	if !closed(ends[0]) {
		t.Fatal("DropData left a connection open")
	}
	// Closing the pool closes the rest, and what is pooled later.
	srv.pool.close()
	late := conn()
	srv.PoolData("n3", late)
	mu.Lock()
	defer mu.Unlock()
	for i, e := range ends[2:] {
		if !closed(e) {
			t.Fatalf("connection %d left open after close", i+2)
		}
	}
}

// TestDataPool_ServerWideBound: the pool over all nodes is bounded by
// MaxPooledData; connections over it are closed, and a slot freed by a
// take is usable again.
func TestDataPool_ServerWideBound(t *testing.T) {
	cases := []struct {
		name           string
		max, perNode   int
		nodes, perEach int
		wantAll        int
	}{
		{"server-wide bound", 5, 4, 3, 4, 5},
		{"per-node bound first", 100, 2, 3, 4, 6},
		{"unlimited", -1, 3, 4, 3, 12},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxPooledData, cfg.MaxPooledDataPerNode = tc.max, tc.perNode
			srv := NewServer(cfg, nil)
			defer srv.pool.close()
			var peers []net.Conn
			defer func() {
				for _, c := range peers {
					c.Close()
				}
			}()
			for n := 0; n < tc.nodes; n++ {
				for i := 0; i < tc.perEach; i++ {
					a, b := net.Pipe()
					peers = append(peers, b)
					srv.PoolData(fmt.Sprintf("node%d", n), a)
				}
			}
			if got := srv.AllPooledData(); got != tc.wantAll {
				t.Fatalf("%d pooled; want %d", got, tc.wantAll)
			}
			// Every connection is pooled or closed, none lost.
			open := 0
			for _, c := range peers {
				c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
					open++
				}
			}
			if open != tc.wantAll {
				t.Fatalf("%d connections open; want the %d pooled", open, tc.wantAll)
			}
			// A take frees a place for another node.
			for n := 0; n < tc.nodes; n++ {
				if c := srv.TakeData(fmt.Sprintf("node%d", n)); c != nil {
					c.Close()
					break
				}
			}
			a, b := net.Pipe()
			peers = append(peers, b)
			srv.PoolData("late", a)
			if srv.PooledData("late") != 1 || srv.AllPooledData() != tc.wantAll {
				t.Fatalf("after a take: late %d, all %d", srv.PooledData("late"), srv.AllPooledData())
			}
		})
	}
}

// TestDataPool_HoldsConnSlots: a data connection the server accepted holds
// its slot of MaxConnsPerIP while it is in use and pooled, and gives it
// back when closed.
func TestDataPool_HoldsConnSlots(t *testing.T) {
	for _, kind := range []string{"tcp", "tls"} {
		t.Run(kind, func(t *testing.T) {
			// One slot for the session, two for data connections.
			p := newTestPair(t, kind, pairOpts{serverCfg: func(c *Config) { c.MaxConnsPerIP = 3 }})
			addr := p.serverLn.Addr().String()
			ctx := context.Background()
			dataConn := func() (net.Conn, error) {
				token, conns, cancel, err := p.srv.ExpectData()
				if err != nil {
					t.Fatal(err)
				}
				defer cancel()
				dc, err := DialData(ctx, addr, token, p.clientCfg)
				if err != nil {
					return nil, err
				}
				t.Cleanup(func() { dc.Close() })
				sc := recvWithin(t, conns, 5*time.Second, "data connection")
				p.srv.PoolData("node", sc)
				return dc, nil
			}
			for i := 0; i < 2; i++ {
				if _, err := dataConn(); err != nil {
					t.Fatalf("data connection %d: %v", i, err)
				}
			}
			if n := p.srv.PooledData("node"); n != 2 {
				t.Fatalf("%d pooled; want 2", n)
			}
			// The limit is reached: the pooled connections hold their slots.
			if _, err := dataConn(); err == nil {
				t.Fatal("a data connection over MaxConnsPerIP was accepted")
			}
			// A taken connection still holds its slot; closing it frees it.
			sc := p.srv.TakeData("node")
			if _, err := dataConn(); err == nil {
				t.Fatal("a data connection was accepted while a taken one holds the slot")
			}
			sc.Close()
			waitFor(t, 5*time.Second, "the slot of a closed data connection", func() bool {
				_, err := dataConn()
				return err == nil
			})
			// Dropping the pool frees the rest.
			p.srv.DropData("node")
			for i := 0; i < 2; i++ {
				waitFor(t, 5*time.Second, "the slots of dropped data connections", func() bool {
					_, err := dataConn()
					return err == nil
				})
			}
		})
	}
}
