package integration

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// rrProxy is a round-robin TCP proxy: a load balancer in front of the
// servers' RPC ports, as operators run one.
type rrProxy struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	closed   bool

	// served counts the bytes each backend connection has sent towards
	// its client, keyed by the backend conn.
	served sync.Map // net.Conn -> *atomic.Int64
}

// servedBytes is a snapshot of served.
func (p *rrProxy) servedBytes() map[net.Conn]int64 {
	m := make(map[net.Conn]int64)
	p.served.Range(func(k, v any) bool {
		m[k.(net.Conn)] = v.(*atomic.Int64).Load()
		return true
	})
	return m
}

// countingWriter counts what passes through to w.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func startRRProxy(t *testing.T, backends ...string) *rrProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rrProxy{ln: ln, backends: backends}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *rrProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		addr := p.backends[p.next.Add(1)%uint64(len(p.backends))]
		b, err := net.Dial("tcp", addr)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, b) {
			return
		}
		n := new(atomic.Int64)
		p.served.Store(b, n)
		p.wg.Add(2)
		go p.pipe(countingWriter{c, n}, c, b)
		go p.pipe(b, b, c)
	}
}

// track records a connection pair for close; false once closed.
func (p *rrProxy) track(c ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, x := range c {
			x.Close()
		}
		return false
	}
	p.conns = append(p.conns, c...)
	return true
}

// pipe copies src to w, which writes to dst, and half-closes dst after.
func (p *rrProxy) pipe(w io.Writer, dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(w, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func (p *rrProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns, p.closed = nil, true
	p.mu.Unlock()
	p.wg.Wait()
}

// TestCluster_BulkReadsBehindProxy: a node whose servers are a round-robin
// load balancer in front of three servers. Its data connections land on
// the wrong server two times in three and are refused; bulk reads through
// every server still read byte for byte what the file holds, and the node
// dials back through the balancer at most once: a refused dial is
// remembered (rpc.Config.DataRedialDelay) and the bytes take the stream,
// an accepted one stays pooled and carries the later reads as data calls.
func TestCluster_BulkReadsBehindProxy(t *testing.T) {
	c := startCluster(t, 3)
	var rpcs []string
	for _, s := range c.servers {
		rpcs = append(rpcs, s.RPCAddr())
	}
	lb := startRRProxy(t, rpcs...)
	node := startNode(t, "lbnode", withServers(lb.ln.Addr().String()), withRawExec())
	api := c.servers[0].API(t)
	job := &nomad.Job{ID: ptr("bulk"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{shellTask("web", "while :; do sleep 1; done")}}}}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	alloc := waitAllocsStatus(t, api, "bulk", 1, "running")[0]
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i*7 + i/4096)
	}
	path := filepath.Join(node.cfg.DataDir, "alloc", alloc.ID, "alloc", "data", "big.bin")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}

	connsBefore := lb.next.Load()
	for round := 0; round < 4; round++ {
		for si, s := range c.servers {
			for _, tc := range []struct {
				op    string
				off   int
				limit int // -1: cat
			}{{"readat", 1 + round, 300_000}, {"readat", 1 << 20, 64 << 10}, {"readat", 5, 100}, {"cat", 0, -1}} {
				q := fmt.Sprintf("path=alloc/data/big.bin&offset=%d&limit=%d", tc.off, tc.limit)
				want := big[tc.off:]
				if tc.op == "cat" {
					q = "path=alloc/data/big.bin"
				} else if tc.limit < len(want) {
					want = want[:tc.limit]
				}
				code, body, _ := do(t, "GET", s.URL()+"/v1/client/fs/"+tc.op+"/"+alloc.ID+"?"+q, nil)
				if code != 200 || !bytes.Equal([]byte(body), want) {
					t.Fatalf("round %d, srv%d, %s %s: %d, %d bytes; want %d", round, si, tc.op, q, code, len(body), len(want))
				}
			}
		}
	}
	var calls uint64
	for _, s := range c.servers {
		calls += s.Server().Stats()["data_calls"]
	}
	if dials := lb.next.Load() - connsBefore; dials > 1 {
		t.Fatalf("%d connections through the balancer during the reads (%d data calls); want at most one dial-back", dials, calls)
	}
}
