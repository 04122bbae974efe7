package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// testNet is a private network of hosts for the scenarios that cut links
// between processes (a partition): each host is a network namespace with
// one veth on a bridge in the test's own namespace, which holds the
// bridge's address, so the test and the processes it runs outside the
// hosts reach every host. It needs root and iproute2 (.ci/run installs
// it); the namespaces, the bridge and the veths go with the test.
type testNet struct {
	t      *testing.T
	id     string // random, in every name, so runs do not meet
	bridge string
	hosts  []*netHost

	mu  sync.Mutex
	cut [][2]int // rules in place: host i drops what comes from host j
}

// netHost is one host of a testNet.
type netHost struct {
	ns string // network namespace
	ip string // its address on the bridge
}

// netSubnetBase is the first two octets of the hosts' addresses:
// 198.18.0.0/15 is set aside for network tests (RFC 2544), so no real
// network is shadowed.
const netSubnetBase = "198.18"

// newTestNet makes a network of n hosts, 198.18.X.11, .12, ... with the
// bridge at 198.18.X.1, X random. It skips the test when not root, except
// under CI, where it fails: CI runs as root and must run the scenario.
func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("network namespaces need root, and CI runs as root")
		}
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2's ip is needed for network namespaces: %v", err)
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	tn := &testNet{t: t, id: hex.EncodeToString(b[:2])}
	subnet := fmt.Sprintf("%s.%d", netSubnetBase, b[2])
	tn.bridge = "ttb" + tn.id
	t.Cleanup(tn.destroy)
	tn.ip("link", "add", tn.bridge, "type", "bridge")
	tn.ip("addr", "add", subnet+".1/24", "dev", tn.bridge)
	tn.ip("link", "set", tn.bridge, "up")
	for i := 0; i < n; i++ {
		h := &netHost{ns: fmt.Sprintf("tt%s-%d", tn.id, i), ip: fmt.Sprintf("%s.%d", subnet, 11+i)}
		veth := fmt.Sprintf("ttv%s%d", tn.id, i)
		tn.ip("netns", "add", h.ns)
		tn.hosts = append(tn.hosts, h)
		tn.ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		tn.ip("link", "set", veth, "master", tn.bridge, "up")
		tn.ip("-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		tn.ip("-n", h.ns, "link", "set", "eth0", "up")
		tn.ip("-n", h.ns, "link", "set", "lo", "up")
		// Drop rules go before the local table, which otherwise takes
		// every packet addressed to the host first.
		tn.ip("-n", h.ns, "rule", "add", "pref", "100", "table", "local")
		tn.ip("-n", h.ns, "rule", "del", "pref", "0")
	}
	return tn
}

// ip runs ip(8) and fails the test on an error.
func (tn *testNet) ip(args ...string) {
	tn.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tn.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// destroy removes the hosts (their veths go with them) and the bridge.
func (tn *testNet) destroy() {
	for _, h := range tn.hosts {
		_ = exec.Command("ip", "netns", "del", h.ns).Run()
	}
	_ = exec.Command("ip", "link", "del", tn.bridge).Run()
}

// command is name run with args inside host i's namespace. ip netns exec
// execs it in place, so the process is name itself (a signal to it
// reaches it).
func (tn *testNet) command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", tn.hosts[i].ns, name}, args...)...)
}

// partition cuts the hosts into groups: a host drops, silently, every
// packet that comes from a host of another group, as a network that
// loses them does (no reset, no ICMP). Hosts in no group, and the test's
// own namespace, still reach everyone.
func (tn *testNet) partition(groups ...[]int) {
	tn.t.Helper()
	group := map[int]int{}
	for g, hs := range groups {
		for _, h := range hs {
			group[h] = g + 1
		}
	}
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for i := range tn.hosts {
		for j := range tn.hosts {
			if i == j || group[i] == 0 || group[j] == 0 || group[i] == group[j] {
				continue
			}
			tn.ip("-n", tn.hosts[i].ns, "rule", "add", "pref", "10", "from", tn.hosts[j].ip, "blackhole")
			tn.cut = append(tn.cut, [2]int{i, j})
		}
	}
}

// heal lifts every partition.
func (tn *testNet) heal() {
	tn.t.Helper()
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for _, c := range tn.cut {
		tn.ip("-n", tn.hosts[c[0]].ns, "rule", "del", "pref", "10", "from", tn.hosts[c[1]].ip, "blackhole")
	}
	tn.cut = nil
}
