package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds of the partition scenario.
const (
	// partitionElectBound: the majority side has a leader of its own.
	partitionElectBound = 10 * time.Second
	// partitionNodeBound: a node registered with the cut-off server
	// answers through the majority: its next heartbeat (TTL 2-4 s here)
	// is refused, it fails over after client HeartbeatFailover (5 s) of
	// refusals, retried every 2 s, and the majority's routes find it.
	partitionNodeBound = 25 * time.Second
	// partitionCutCallBound: a call through the cut-off server to a node
	// on the other side fails: a wait for a session to the cached holder
	// (the server pool's DialWait, PeerQueryTimeout 2 s), a peer query
	// without it (2 s), the no-path grace (0.25 s) and a last peer query
	// (2 s) at most.
	partitionCutCallBound = 10 * time.Second
	// partitionHold is how long the partition lasts in all, long enough
	// for memberlist to mark the other side failed (so the heal goes
	// through a rejoin).
	partitionHold = 30 * time.Second
	// healBound: raft has one leader and every server every acknowledged
	// write again.
	healBound = 20 * time.Second
	// routeBound: every node answers through every server, past the
	// route cache's TTL (server RouteCacheTTL, 10 s) for any route learnt
	// before the heal.
	routeBound = 10*time.Second + faultNoticeBound
)

// partitionWriter registers jobs through one server, one after another,
// and keeps those acknowledged.
type partitionWriter struct {
	url  string
	name string

	mu     sync.Mutex
	acked  []string
	failed []string // status and body of each failure
}

func (w *partitionWriter) run(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	hc := http.Client{Timeout: 15 * time.Second}
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("pw-%s-%d", w.name, n)
		job := fmt.Sprintf(`{"Job":{"ID":%q,"Type":"batch","Datacenters":["dc1"],
			"TaskGroups":[{"Name":"g","Count":0,"Tasks":[{"Name":"t","Driver":"raw_exec",
			"Config":{"command":"/bin/true"}}]}]}}`, id)
		req, _ := http.NewRequest("PUT", w.url+"/v1/jobs", strings.NewReader(job))
		resp, err := hc.Do(req)
		var status string
		if err != nil {
			status = err.Error()
		} else {
			var b strings.Builder
			_, _ = fmt.Fprint(&b, resp.StatusCode, " ")
			buf := make([]byte, 256)
			k, _ := resp.Body.Read(buf)
			b.Write(buf[:k])
			resp.Body.Close()
			status = b.String()
			if resp.StatusCode == 200 {
				status = ""
			}
		}
		w.mu.Lock()
		if status == "" {
			w.acked = append(w.acked, id)
		} else {
			w.failed = append(w.failed, status)
		}
		w.mu.Unlock()
		if status != "" {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond): // pace retries after a refusal
			}
		}
	}
}

func (w *partitionWriter) counts() (acked, failed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked), len(w.failed)
}

// TestFault_Partition runs 3 servers, each in a network namespace of its
// own, and 3 nodes outside (node i configured with server i only), with
// writers registering jobs through every server; then it cuts the leader
// off from the other two (1 | 2), silently, both ways, for 30 s, and
// heals:
//   - the two elect a leader within 10 s and take writes; writes through
//     the cut-off server fail with "No cluster leader", none acknowledged;
//   - calls through the cut-off server to nodes that are not on it fail
//     with a clear error within 10 s;
//   - the cut-off server's node fails over to the majority and answers
//     through both of its servers;
//   - after the heal the three have one leader and three alive members
//     within 20 s, every write acknowledged to a writer is on every
//     server, and every node answers through every server within the
//     route cache's TTL plus the fault bound.
func TestFault_Partition(t *testing.T) {
	tn := newTestNet(t, 3)
	c := startProcClusterOn(t, tn, `min_heartbeat_ttl = "2s"`)
	leader := c.waitStable(c.all())
	cut := c.serverIndex(leader)
	var maj []int
	for i := range c.serverRPCs {
		if i != cut {
			maj = append(maj, i)
		}
	}
	ids := c.nodeIDs(c.all())
	cutNode := ids[fmt.Sprintf("node%d", cut)]
	majNode := ids[fmt.Sprintf("node%d", maj[0])]
	for i, url := range c.serverURLs {
		for name, id := range ids {
			waitAnswered(t, url+"/v1/client/stats?node_id="+id, time.Now(), 10*time.Second, fmt.Sprintf("%s through srv%d", name, i))
		}
	}

	writers := make([]*partitionWriter, 3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, url := range c.serverURLs {
		writers[i] = &partitionWriter{url: url, name: fmt.Sprintf("srv%d", i)}
		wg.Add(1)
		go writers[i].run(stop, &wg)
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopWriters)
	waitFor(t, 20*time.Second, "writes through every server", func() (bool, error) {
		for i, w := range writers {
			if a, _ := w.counts(); a < 3 {
				return false, fmt.Errorf("srv%d: %d acknowledged", i, a)
			}
		}
		return true, nil
	})

	tn.partition([]int{cut}, maj)
	start := time.Now()
	t.Logf("partition: srv%d (the leader) | srv%d srv%d", cut, maj[0], maj[1])

	// The majority elects a leader of its own.
	var newLeader string
	waitFor(t, partitionElectBound, "a leader on the majority side", func() (bool, error) {
		newLeader = ""
		for _, i := range maj {
			code, body, err := tryGet(c.serverURLs[i] + "/v1/status/leader")
			var l string
			if code != 200 || json.Unmarshal([]byte(body), &l) != nil || l == "" || l == leader || (newLeader != "" && l != newLeader) {
				return false, fmt.Errorf("srv%d: %d %s %v", i, code, body, err)
			}
			newLeader = l
		}
		return true, nil
	})
	elected := time.Since(start)
	// Writes through it succeed, and through the cut-off server fail with
	// a clear error, within the fault bound.
	ackedMaj, _ := writers[maj[0]].counts()
	waitFor(t, faultNoticeBound, "a write through the majority", func() (bool, error) {
		a, _ := writers[maj[0]].counts()
		return a > ackedMaj, fmt.Errorf("%d acknowledged", a)
	})
	job := `{"Job":{"ID":"cut-off","Type":"batch","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Count":0,"Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`
	req, _ := http.NewRequest("PUT", c.serverURLs[cut]+"/v1/jobs", strings.NewReader(job))
	wstart := time.Now()
	resp, err := (&http.Client{Timeout: 3 * faultNoticeBound}).Do(req)
	if err != nil {
		t.Fatalf("write through the cut-off server: %v after %v", err, time.Since(wstart))
	}
	var body strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	body.Write(buf[:n])
	resp.Body.Close()
	refused := time.Since(wstart)
	if resp.StatusCode < 500 || !strings.Contains(body.String(), "No cluster leader") || refused > faultNoticeBound {
		t.Fatalf("write through the cut-off server: %d %q after %v; want No cluster leader within %v", resp.StatusCode, body.String(), refused, faultNoticeBound)
	}
	// A call through the cut-off server to a node on the majority side:
	// its pooled session to the peer holding the node may be gone (its
	// ping failed), and a new dial meets silence; the call stops waiting
	// for it after the pool's DialWait and asks the other peers, then
	// answers "No path to node".
	ccode, cbody, noPath := timedGet(c.serverURLs[cut]+"/v1/client/stats?node_id="+majNode, 3*partitionCutCallBound)
	if ccode != 404 || !strings.Contains(cbody, "No path to node") || noPath > partitionCutCallBound {
		t.Fatalf("call through the cut-off server: %d %q after %v; want No path to node within %v", ccode, cbody, noPath, partitionCutCallBound)
	}
	// The cut-off server's node moves to the majority.
	var nodeBack [3]time.Duration
	for _, i := range maj {
		nodeBack[i] = waitAnswered(t, c.serverURLs[i]+"/v1/client/stats?node_id="+cutNode, start, partitionNodeBound, fmt.Sprintf("node%d through srv%d during the partition", cut, i))
	}
	if rest := partitionHold - time.Since(start); rest > 0 {
		<-time.After(rest) // the partition's length is the scenario, not a wait for a condition
	}
	acked, failed := writers[cut].counts()
	t.Logf("partition: majority elected %s after %v; a write through srv%d was refused after %v; a call through it to node%d failed after %v; node%d answers through srv%d after %v, srv%d after %v; srv%d writer: %d acknowledged, %d refused",
		newLeader, elected.Round(time.Millisecond), cut, refused.Round(time.Millisecond), maj[0], noPath.Round(time.Millisecond),
		cut, maj[0], nodeBack[maj[0]].Round(time.Millisecond), maj[1], nodeBack[maj[1]].Round(time.Millisecond), cut, acked, failed)

	tn.heal()
	healed := time.Now()
	// Raft recovers: one leader, three voters, on every server.
	c.waitStableWithin(c.all(), healBound)
	raftBack := time.Since(healed)
	waitFor(t, healBound-time.Since(healed), "three alive members on every server", func() (bool, error) {
		for i, url := range c.serverURLs {
			code, body, err := tryGet(url + "/v1/agent/members")
			var out struct {
				Members []struct{ Name, Status string }
			}
			if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
				return false, fmt.Errorf("srv%d: %d %s %v", i, code, body, err)
			}
			alive := 0
			for _, m := range out.Members {
				if m.Status == "alive" {
					alive++
				}
			}
			if alive != 3 {
				return false, fmt.Errorf("srv%d members: %s", i, body)
			}
		}
		return true, nil
	})
	membersBack := time.Since(healed)
	// Every node through every server, within the route bound.
	var routesBack time.Duration
	for i, url := range c.serverURLs {
		for name, id := range ids {
			if d := waitAnswered(t, url+"/v1/client/stats?node_id="+id, healed, routeBound, fmt.Sprintf("%s through srv%d after the heal", name, i)); d > routesBack {
				routesBack = d
			}
		}
	}
	stopWriters()
	// No acknowledged write is lost: each is on every server.
	var all []string
	for _, w := range writers {
		all = append(all, w.acked...)
	}
	for i, url := range c.serverURLs {
		waitFor(t, healBound, fmt.Sprintf("every acknowledged write on srv%d", i), func() (bool, error) {
			code, body, err := tryGet(url + "/v1/jobs?prefix=pw-")
			var jobs []struct{ ID string }
			if code != 200 || json.Unmarshal([]byte(body), &jobs) != nil {
				return false, fmt.Errorf("%d %s %v", code, body, err)
			}
			have := map[string]bool{}
			for _, j := range jobs {
				have[j.ID] = true
			}
			for _, id := range all {
				if !have[id] {
					return false, fmt.Errorf("acknowledged job %s missing (%d of %d listed)", id, len(jobs), len(all))
				}
			}
			return true, nil
		})
	}
	t.Logf("heal: raft stable after %v, members alive after %v, every node through every server after %v; %d acknowledged writes on all three servers",
		raftBack.Round(time.Millisecond), membersBack.Round(time.Millisecond), routesBack.Round(time.Millisecond), len(all))
}
