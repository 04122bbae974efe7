package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"tether/rpc"
	"tether/structs"
)

// TestAgent_RPCMaxConnsPerClient: limits.rpc_max_conns_per_client caps
// the RPC connections a server takes from one IP.
func TestAgent_RPCMaxConnsPerClient(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name = "s1"
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.Ports.HTTP, cfg.Ports.RPC, cfg.Ports.Serf = 0, 0, 0
	cfg.Server.Enabled = true
	cfg.Server.BootstrapExpect = 1
	cfg.Limits.RPCMaxConnsPerClient = 2
	a, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		sess, err := rpc.Dial(ctx, a.RPCAddr(), rpc.DefaultConfig())
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		defer sess.Close()
		if err := sess.Call(ctx, structs.MethodStatusPeers, &structs.QueryOptions{}, &structs.StatusResponse{}); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	if sess, err := rpc.Dial(ctx, a.RPCAddr(), rpc.DefaultConfig()); !errors.Is(err, rpc.ErrRefused) {
		if sess != nil {
			sess.Close()
		}
		t.Fatalf("third session = %v; want it refused", err)
	}
}
