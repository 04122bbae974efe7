package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// What an idle node session costs a server, measured with the node ends in
// a child process (the test binary re-executed as TestIdleCostHelper), so
// that only the server's end is in this process's heap and stacks.
//
//	go test -run '^$' -bench IdleSessionCost -benchtime 1x ./rpc/
//
// TETHER_IDLE_N sets the number of sessions (default 2000);
// TETHER_IDLE_PROFILE=DIR writes a heap profile (every allocation
// sampled) and a goroutine profile of each case into DIR.
//
// The cases:
//   - idle: dialled (one ping each way), nothing else;
//   - used: the node made a call to the server (a registration), holds a
//     blocking call on it (the allocation watch), and the server made a
//     call to the node (a forwarded stats call);
//   - burst: used, then the server made 16 concurrent calls to the node
//     (streams it may keep for reuse).
const (
	idleHelperEnv  = "TETHER_IDLE_HELPER"
	idleReadyLine  = "IDLE-READY"
	idleDefaultN   = 2000
	idleBurstCalls = 16
	idleGCs        = 6
)

// idleArgs is the body of the harness's calls: a registration and a stats
// answer are a few KiB.
type idleArgs struct {
	Data []byte
}

func registerIdleMethods(m *Mux, blocked *atomic.Int64) {
	HandleUnary(m, "Idle.Echo", func(ctx context.Context, req *idleArgs, resp *idleArgs) error {
		resp.Data = req.Data
		return nil
	})
	HandleUnary(m, "Idle.Block", func(ctx context.Context, req *idleArgs, resp *idleArgs) error {
		if blocked != nil {
			blocked.Add(1)
			defer blocked.Add(-1)
		}
		<-ctx.Done()
		return ctx.Err()
	})
	m.EndWithSession("Idle.Block") // as the server's allocation watch
}

func BenchmarkIdleSessionCost(b *testing.B) {
	n := idleDefaultN
	if v := os.Getenv("TETHER_IDLE_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("TETHER_IDLE_N=%q", v)
		}
	}
	profDir := os.Getenv("TETHER_IDLE_PROFILE")
	if profDir != "" {
		runtime.MemProfileRate = 1
		defer func() { runtime.MemProfileRate = 512 * 1024 }()
	}
	for _, kind := range []string{"tcp", "tls"} {
		for _, mode := range []string{"idle", "used", "burst"} {
			b.Run(kind+"/"+mode, func(b *testing.B) {
				for range b.N {
					measureIdleSessions(b, kind, mode, n, profDir)
				}
			})
		}
	}
}

// mtlsFiles writes the test CA certificate and key as PEM files, for the
// helper process; the certificate serves as client certificate too.
func mtlsFiles(b *testing.B) string {
	dir := b.TempDir()
	cert, _ := testCerts()
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		b.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

// heapAndStacks returns HeapInuse+StackInuse, HeapAlloc and StackInuse
// after idleGCs collections: each may halve a stack that uses less than a
// quarter of it (the accept loop's grew in the TLS handshake), as a
// server's collections do over time.
func heapAndStacks() (inuse, live, stack uint64) {
	for range idleGCs {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse, ms.HeapAlloc, ms.StackInuse
}

// settleGoroutines waits until the goroutine count has not changed for a
// few polls (goroutines of the handshakes winding down), at most 10 s.
func settleGoroutines() int {
	last, same := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && same < 5; {
		time.Sleep(50 * time.Millisecond)
		if g := runtime.NumGoroutine(); g == last {
			same++
		} else {
			last, same = g, 0
		}
	}
	return last
}

func measureIdleSessions(b *testing.B, kind, mode string, n int, profDir string) {
	cfg := DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	cfg.MaxConnsPerIP = -1
	var tlsDir string
	if kind == "tls" {
		tlsDir = mtlsFiles(b)
		cert, pool := testCerts()
		cfg.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var blocked atomic.Int64
	mux := NewMux()
	registerIdleMethods(mux, &blocked)
	srv := NewServer(cfg, mux)
	var mu sync.Mutex
	sessions := make([]*Session, 0, n)
	srv.OnSession = func(s *Session) {
		mu.Lock()
		sessions = append(sessions, s)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	defer func() {
		cancel()
		<-done
	}()

	b.StopTimer()
	g0 := settleGoroutines()
	inuse0, live0, stack0 := heapAndStacks()

	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleCostHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		idleHelperEnv+"=1",
		"TETHER_IDLE_ADDR="+ln.Addr().String(),
		"TETHER_IDLE_N="+strconv.Itoa(n),
		"TETHER_IDLE_TLS="+tlsDir,
		"TETHER_IDLE_MODE="+mode,
	)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if !signalled && sc.Text() == idleReadyLine {
				close(ready)
				signalled = true
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		stdin.Close() // the helper exits when its stdin closes
		select {
		case err := <-exited:
			if err != nil {
				b.Errorf("helper: %v", err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			b.Error("helper did not exit")
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		b.Fatalf("helper exited early: %v", err)
	case <-time.After(5 * time.Minute):
		b.Fatal("helper not ready")
	}
	mu.Lock()
	got := len(sessions)
	mu.Unlock()
	if got != n {
		b.Fatalf("%d sessions accepted, want %d", got, n)
	}
	if mode != "idle" {
		data := make([]byte, 4096)
		calls := 1
		if mode == "burst" {
			calls = idleBurstCalls
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, s := range sessions {
			for range calls {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					var r idleArgs
					if err := s.Call(context.Background(), "Idle.Echo", &idleArgs{Data: data}, &r); err != nil {
						b.Error(err)
					}
				}()
			}
		}
		wg.Wait()
		waitFor(b, time.Minute, "blocking calls", func() bool { return blocked.Load() == int64(n) })
		// Idle means idle: streams kept for reuse give back their
		// buffers after idleShrinkAfter.
		time.Sleep(idleShrinkAfter + 200*time.Millisecond)
	}
	g1 := settleGoroutines()
	inuse1, live1, stack1 := heapAndStacks()
	perSession := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) / 1024 }
	b.ReportMetric(perSession(inuse0, inuse1), "KiB/session")
	b.ReportMetric(perSession(live0, live1), "liveKiB/session")
	b.ReportMetric(perSession(stack0, stack1), "stackKiB/session")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/session")
	if profDir != "" {
		writeIdleProfiles(b, profDir, kind+"-"+mode)
	}
}

func writeIdleProfiles(b *testing.B, dir, name string) {
	for _, p := range []struct {
		profile string
		debug   int
	}{{"heap", 0}, {"goroutine", 1}} {
		f, err := os.Create(filepath.Join(dir, name+"."+p.profile))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(p.profile).WriteTo(f, p.debug); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// TestIdleCostHelper is the node side of BenchmarkIdleSessionCost: it
// runs only in the helper process.
func TestIdleCostHelper(t *testing.T) {
	if os.Getenv(idleHelperEnv) != "1" {
		t.Skip("helper process of BenchmarkIdleSessionCost")
	}
	n, _ := strconv.Atoi(os.Getenv("TETHER_IDLE_N"))
	addr, mode := os.Getenv("TETHER_IDLE_ADDR"), os.Getenv("TETHER_IDLE_MODE")
	cfg := DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	if dir := os.Getenv("TETHER_IDLE_TLS"); dir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	mux := NewMux()
	registerIdleMethods(mux, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	sessions := make([]*Session, n)
	sem := make(chan struct{}, 16)
	var dialErr atomic.Value
	var dials sync.WaitGroup
	for i := range sessions {
		dials.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; dials.Done() }()
			s, err := Dial(ctx, addr, cfg)
			if err != nil {
				dialErr.Store(err)
				return
			}
			sessions[i] = s
			wg.Add(1)
			go func() { defer wg.Done(); s.Serve(ctx, mux) }()
			if mode == "idle" {
				return
			}
			var r idleArgs
			if err := s.Call(ctx, "Idle.Echo", &idleArgs{Data: make([]byte, 2048)}, &r); err != nil {
				dialErr.Store(err)
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				bctx, bcancel := context.WithTimeout(ctx, time.Hour)
				defer bcancel()
				s.Call(bctx, "Idle.Block", &idleArgs{}, nil)
			}()
		}()
	}
	dials.Wait()
	if err, _ := dialErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	fmt.Println(idleReadyLine)
	io.Copy(io.Discard, os.Stdin)
	cancel()
	for _, s := range sessions {
		s.Close()
	}
}
