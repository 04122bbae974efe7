package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestPathCount makes the calls whose code path scripts/path-count.sh
// counts: a forwarded GET /v1/client/stats and a cat of a 1 MiB file,
// each sent to server A for a node whose session is on server B (one peer
// hop). It is a measurement, not a check: TETHER_PATH_COUNT names the call
// (stats, cat, or none) and TETHER_PATH_CALLS how many to make after one
// warm-up of each (none idles TETHER_PATH_IDLE instead); the script
// compares coverage profiles of runs with and without the calls.
func TestPathCount(t *testing.T) {
	which := os.Getenv("TETHER_PATH_COUNT")
	if which == "" {
		t.Skip("measurement only: run scripts/path-count.sh")
	}
	calls, _ := strconv.Atoi(os.Getenv("TETHER_PATH_CALLS"))
	c := startCluster(t, 2)
	node := startNode(t, "node", withServers(c.servers[1].RPCAddr()), withRawExec())
	api := c.servers[0].API(t)
	job := &nomad.Job{
		ID: ptr("pc"), Name: ptr("pc"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{
			shellTask("t", `head -c 1048576 /dev/zero > "$NOMAD_ALLOC_DIR/data/f"; echo ready; while :; do sleep 1; done`),
		}}},
	}
	if _, _, err := api.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	alloc := waitAllocsStatus(t, api, "pc", 1, "running")[0]
	base := c.servers[0].URL()
	urls := map[string]string{
		"stats": base + "/v1/client/stats?node_id=" + node.Client().NodeID(),
		"cat":   base + "/v1/client/fs/cat/" + alloc.ID + "?path=alloc/data/f",
	}
	waitFor(t, 20*time.Second, "file written", func() (bool, error) {
		code, body, err := tryGet(urls["cat"])
		return code == 200 && len(body) == 1<<20, err
	})
	get(t, urls["stats"])
	get(t, urls["cat"])
	if which == "none" {
		// As long as the calls of the other runs took, so that background
		// work (heartbeats, stats sampling) runs at least as often here.
		idle, _ := time.ParseDuration(os.Getenv("TETHER_PATH_IDLE"))
		<-time.After(idle)
		return
	}
	start := time.Now()
	for i := 0; i < calls; i++ {
		get(t, urls[which])
	}
	fmt.Printf("path-count elapsed %s\n", time.Since(start).Round(time.Millisecond))
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
}
