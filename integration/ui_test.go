package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	nomad "github.com/hashicorp/nomad/api"
)

var uiScreenshots = flag.String("ui-screenshots", "", "directory for the web UI test's screenshots (a temporary one by default)")

// chromiumPath finds the browser: Debian's chromium, as .ci/run installs
// it. Missing, the test is skipped on a developer's machine and fails in
// CI (CI=true), where it must run.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not installed; .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// browser is one headless Chromium tab with what its pages logged.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu     sync.Mutex
	errors []string // console errors, exceptions and failed loads since the last take
}

// startBrowser starts Chromium on a fresh profile and stops it when the
// test ends. The flags keep it off the network: this machine's closed
// network refuses the connections it would make on its own.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	// The first call starts the browser; it takes no deadline, which
	// would end the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() { // owned by the test: ends when the cleanup cancels ctx
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.note(fmt.Sprintf("%s (%s) %s", m, m.Source, m.URL))
			}
		}
	}()
	t.Cleanup(func() {
		cancel() // closes the tab and ends the browser process
		<-done
		cancelAlloc()
	})
	return b
}

func (b *browser) note(s string) {
	b.mu.Lock()
	b.errors = append(b.errors, s)
	b.mu.Unlock()
}

// take returns and forgets what was logged.
func (b *browser) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errors
	b.errors = nil
	return e
}

// run runs steps with a deadline, failing the test with what.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// evalJS evaluates a JavaScript expression in the page.
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript expression in the page until it is true.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 35*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitText waits until the element sel contains want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		got := evalJS[string](b, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || "(no element)"`, sel))
		b.t.Fatalf("waiting for %q in %s at %s: %v; it holds %q", want, sel, evalJS[string](b, "location.pathname"), err, got)
	}
}

// shot saves a PNG of the viewport as dir/name.png.
func (b *browser) shot(dir, name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// uiPage is one page of the tour: its address, an element that shows it
// has loaded and, if set, a text that element must contain.
type uiPage struct {
	name, path, ready, want string
	allow                   string // a failed load expected on the page (the not-found view's 404)
}

// settled is what the screenshots for docs/ui/ wait for on a page with
// live plots, so that they show a line rather than a dot; plain test runs
// do not wait.
var settled = map[string]string{
	"clients":    `document.querySelector('svg.spark polyline').points.length >= 10`,
	"client":     `+document.querySelector('#plot-cpu').dataset.points >= 20`,
	"allocation": `+document.querySelector('figure.plot').dataset.points >= 20`,
	"logs":       `document.querySelector('#log').textContent.includes('ready')`,
}

// TestUI_Browser drives the web page in headless Chromium against a real
// server and node agent with ACLs on and a real raw_exec task: every page
// loads without console errors at 1280x800 and has no horizontal scroll
// at 400 px; a plot gains points while watched; a log tail shows a line
// within a second of the task writing it; a metadata edit appears in the
// table and through /v1/client/metadata; a token without node:read sees
// "Permission denied"; the file browser opens a nested file; the tail of
// a task that ended says how; the keyboard focus survives a refresh; stop
// and GC work through their confirmation; the node agent serves the page
// too.
// A screenshot of each page goes to -ui-screenshots (docs/ui/ holds the
// current ones).
func TestUI_Browser(t *testing.T) {
	b := startBrowser(t)
	dir := *uiScreenshots
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	srv := startACLServer(t, "server1", time.Second)
	node := startNode(t, "node1", withServers(srv.RPCAddr()), withRawExec(), withACL(time.Second),
		withMeta(map[string]string{"rack": "r1"}))
	nodeID := node.Client().NodeID()
	mgmtSecret := bootstrap(t, srv)
	mgmt := apiWithToken(t, srv, mgmtSecret)
	jobsOnly := makeToken(t, mgmt, "jobs-only", `namespace "default" { policy = "read" }`)

	// The task makes a nested file, writes a marker line with its write
	// time whenever the test drops a trigger file, and ticks on stderr.
	script := `mkdir -p local/a/b && echo nested-content > local/a/b/nested.txt
echo "web: listening on 127.0.0.1:8080"
echo "web: ready"
i=0
while :; do
  if [ -f local/trigger ]; then rm -f local/trigger; echo "marker $(date +%s%N)"; fi
  i=$((i+1)); [ $((i % 20)) -eq 0 ] && echo "tick $i" >&2
  sleep 0.02
done`
	job := &nomad.Job{ID: ptr("web"), Name: ptr("web"), Type: ptr("service"), Datacenters: []string{"dc1"},
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1), Tasks: []*nomad.Task{shellTask("server", script)}}}}
	if _, _, err := mgmt.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	allocID := waitAllocsStatus(t, mgmt, "web", 1, "running")[0].ID
	taskDir := filepath.Join(node.cfg.DataDir, "alloc", allocID, "server")
	waitFor(t, 10*time.Second, "the nested file", func() (bool, error) {
		_, err := os.Stat(filepath.Join(taskDir, "local", "a", "b", "nested.txt"))
		return err == nil, nil
	})

	base := srv.URL()
	setToken := func(base, secret, want string) {
		t.Helper()
		b.run("token page", chromedp.Navigate(base+"/ui/settings/tokens"), chromedp.WaitVisible(chromedp.CSS("#token-secret")))
		b.run("set token", chromedp.SetValue(chromedp.CSS("#token-secret"), secret), chromedp.Click(chromedp.CSS("#token-save")))
		b.waitText("#token-info", want)
		b.take() // the page's calls before the token was set may have been denied
	}

	// A browser's / goes to the page; the page's / to the clients.
	b.run("open /", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("h1")))
	b.waitJS("the clients address", `location.pathname === "/ui/clients"`)
	b.waitText("main", "Permission denied") // anonymous with ACLs on: the denial, in place
	b.take()                                // the denied calls' failed loads
	setToken(base, mgmtSecret, "management")
	b.shot(dir, "tokens")

	pages := []uiPage{
		{"clients", "/ui/clients", "tr[data-node] svg.spark polyline", "", ""},
		{"client", "/ui/clients/" + nodeID, "#plot-cpu canvas", "", ""},
		{"client-monitor", "/ui/clients/" + nodeID + "/monitor", "#log-status", "Streaming", ""},
		{"jobs", "/ui/jobs", "main table", "web", ""},
		{"job", "/ui/jobs/web", "tr[data-alloc]", "running", ""},
		{"allocations", "/ui/allocations", "tr[data-alloc]", "web", ""},
		{"allocation", "/ui/allocations/" + allocID, "figure.plot canvas", "", ""},
		{"files", "/ui/allocations/" + allocID + "/fs/alloc/logs", "table.files", "server.stdout.0", ""},
		{"file", "/ui/allocations/" + allocID + "/server/fs/local/a/b/nested.txt", "#file-content", "nested-content", ""},
		{"logs", "/ui/allocations/" + allocID + "/server/logs", "#log-status", "Following", ""},
		{"not-found", "/ui/allocations/" + strings.Repeat("0", 8) + allocID[8:], ".notfound", "Not found", "status of 404"},
		{"unknown-address", "/ui/no/such/page", ".notfound", "Not found", ""},
	}
	for _, width := range []int64{1280, 400} {
		b.run("viewport", chromedp.EmulateViewport(width, 800))
		for _, p := range pages {
			b.run(p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.ready)))
			if p.want != "" {
				b.waitText(p.ready, p.want)
			}
			if expr, ok := settled[p.name]; ok && *uiScreenshots != "" && width > 600 {
				b.waitJS(p.name+" settled", expr)
			}
			overflow := evalJS[int](b, `document.documentElement.scrollWidth - document.documentElement.clientWidth`)
			if overflow > 0 {
				t.Errorf("%s at %d px: scrolls %d px sideways", p.name, width, overflow)
			}
			for _, e := range b.take() {
				if p.allow == "" || !strings.Contains(e, p.allow) {
					t.Errorf("%s at %d px logged: %s", p.name, width, e)
				}
			}
			name := p.name
			if width < 600 {
				name += "-narrow"
				if p.name != "clients" && p.name != "allocation" {
					continue // two narrow screenshots are enough
				}
			}
			b.shot(dir, name)
		}
	}
	b.run("viewport", chromedp.EmulateViewport(1280, 800))

	t.Run("plot gains points", func(t *testing.T) {
		b.run("client page", chromedp.Navigate(base+"/ui/clients/"+nodeID), chromedp.WaitVisible(chromedp.CSS("#plot-cpu canvas")))
		first := evalJS[int](b, `+document.querySelector('#plot-cpu').dataset.points`)
		b.waitJS("more CPU points", fmt.Sprintf(`+document.querySelector('#plot-cpu').dataset.points >= %d`, first+2))
		b.run("allocation page", chromedp.Navigate(base+"/ui/allocations/"+allocID), chromedp.WaitVisible(chromedp.CSS(`figure.plot[data-task="server"] canvas`)))
		first = evalJS[int](b, `+document.querySelector('figure.plot[data-task="server"]').dataset.points`)
		b.waitJS("more task points", fmt.Sprintf(`+document.querySelector('figure.plot[data-task="server"]').dataset.points >= %d`, first+2))
	})

	t.Run("keyboard focus survives a refresh", func(t *testing.T) {
		b.run("clients", chromedp.Navigate(base+"/ui/clients"), chromedp.WaitVisible(chromedp.CSS("tr[data-node] svg.spark polyline")))
		b.run("focus", chromedp.Focus(chromedp.CSS("tr[data-node] a")))
		first := evalJS[int](b, `document.querySelector('svg.spark polyline').points.length`)
		b.waitJS("a refresh", fmt.Sprintf(`document.querySelector('svg.spark polyline').points.length > %d`, first))
		if !evalJS[bool](b, `document.activeElement.matches('tr[data-node] a')`) {
			t.Error("the focused node link lost the focus when the table refreshed")
		}
	})

	t.Run("log tail within a second", func(t *testing.T) {
		b.run("logs page", chromedp.Navigate(base+"/ui/allocations/"+allocID+"/server/logs"), chromedp.WaitVisible(chromedp.CSS("#log-status")))
		b.waitText("#log-status", "Following")
		// The page notes when each marker line arrives, so the lag is the
		// page's and not the test's polling.
		evalJS[bool](b, `(() => {
			const log = document.querySelector('#log');
			window.markersSeen = [];
			new MutationObserver(() => {
				const m = log.textContent.match(/^marker \d+$/gm) || [];
				while (window.markersSeen.length < m.length) window.markersSeen.push([m[window.markersSeen.length], Date.now()]);
			}).observe(log, {childList: true, characterData: true, subtree: true});
			return true;
		})()`)
		for i := 0; i < 3; i++ {
			if err := os.WriteFile(filepath.Join(taskDir, "local", "trigger"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			b.waitJS("marker line", fmt.Sprintf(`window.markersSeen.length >= %d`, i+1))
			seen := evalJS[[]any](b, fmt.Sprintf(`window.markersSeen[%d]`, i))
			line, _ := seen[0].(string)
			at, _ := seen[1].(float64)
			ns, err := strconv.ParseInt(strings.TrimPrefix(line, "marker "), 10, 64)
			if err != nil {
				t.Fatalf("marker line %q: %v", line, err)
			}
			lag := time.UnixMilli(int64(at)).Sub(time.Unix(0, ns))
			t.Logf("marker %d shown %v after the task wrote it", i, lag)
			if lag > time.Second {
				t.Errorf("marker %d shown %v after the task wrote it; want within 1s", i, lag)
			}
		}
		// Pause, filter, stderr: the controls work.
		b.run("pause", chromedp.Click(chromedp.CSS("#log-pause")))
		b.waitText("#log-status", "Paused")
		b.run("stderr", chromedp.SetValue(chromedp.CSS("#log-type"), "stderr"))
		evalJS[bool](b, `document.querySelector('#log-type').dispatchEvent(new Event('change'))`)
		b.waitText("#log", "tick")
		if errs := b.take(); len(errs) > 0 {
			t.Errorf("logs logged errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("the tail says how the task ended", func(t *testing.T) {
		bye := &nomad.Job{ID: ptr("bye"), Name: ptr("bye"), Type: ptr("batch"), Datacenters: []string{"dc1"},
			TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Count: ptr(1),
				RestartPolicy:    &nomad.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")},
				ReschedulePolicy: &nomad.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)},
				Tasks:            []*nomad.Task{shellTask("t", `echo "last words"; exit 3`)}}}}
		if _, _, err := mgmt.Jobs().Register(bye, nil); err != nil {
			t.Fatal(err)
		}
		byeID := waitAllocsStatus(t, mgmt, "bye", 1, "failed")[0].ID
		b.run("logs of the ended task", chromedp.Navigate(base+"/ui/allocations/"+byeID+"/t/logs"), chromedp.WaitVisible(chromedp.CSS("#log-status")))
		b.waitText("#log", "last words")
		b.waitText("#log-status", "exit code 3")
		b.waitText("#log-status", "failed")
		b.shot(dir, "logs-ended")
		if errs := b.take(); len(errs) > 0 {
			t.Errorf("logs of the ended task logged errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("metadata edit", func(t *testing.T) {
		b.run("client page", chromedp.Navigate(base+"/ui/clients/"+nodeID), chromedp.WaitVisible(chromedp.CSS("#meta-key")))
		b.waitText(`tr[data-key="rack"]`, "r1")
		b.run("set meta", chromedp.SetValue(chromedp.CSS("#meta-key"), "owner"), chromedp.SetValue(chromedp.CSS("#meta-value"), "ui-test"),
			chromedp.Click(chromedp.CSS("#meta-set")))
		b.waitText(`tr[data-key="owner"]`, "ui-test")
		code, body, _ := do(t, "GET", base+"/v1/client/metadata?node_id="+nodeID, nil, "X-Nomad-Token", mgmtSecret)
		var m struct{ Meta, Dynamic map[string]*string }
		if err := json.Unmarshal([]byte(body), &m); code != 200 || err != nil {
			t.Fatalf("metadata = %d %q (%v)", code, body, err)
		}
		if v := m.Dynamic["owner"]; v == nil || *v != "ui-test" || m.Meta["owner"] == nil {
			t.Fatalf("metadata after the edit = %s; want Dynamic and Meta owner=ui-test", body)
		}
		b.shot(dir, "client-metadata")
		// Unset: null through the same call.
		b.run("unset", chromedp.Click(chromedp.CSS(`tr[data-key="owner"] button`)))
		b.waitJS("owner gone", `!document.querySelector('tr[data-key="owner"]')`)
		if errs := b.take(); len(errs) > 0 {
			t.Errorf("metadata logged errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("file browser opens a nested file", func(t *testing.T) {
		b.run("task files", chromedp.Navigate(base+"/ui/allocations/"+allocID+"/server/fs/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-file="local"] a`)))
		// Keyboard: focus the link and press Enter, then click the rest.
		b.run("local/", chromedp.Focus(chromedp.CSS(`tr[data-file="local"] a`)), chromedp.KeyEvent("\r"),
			chromedp.WaitVisible(chromedp.CSS(`tr[data-file="a"] a`)))
		b.run("a/", chromedp.Click(chromedp.CSS(`tr[data-file="a"] a`)), chromedp.WaitVisible(chromedp.CSS(`tr[data-file="b"] a`)))
		b.run("b/", chromedp.Click(chromedp.CSS(`tr[data-file="b"] a`)), chromedp.WaitVisible(chromedp.CSS(`tr[data-file="nested.txt"] a`)))
		b.run("nested.txt", chromedp.Click(chromedp.CSS(`tr[data-file="nested.txt"] a`)), chromedp.WaitVisible(chromedp.CSS("#file-content")))
		b.waitText("#file-content", "nested-content")
		b.waitJS("the address", `location.pathname.endsWith("/server/fs/local/a/b/nested.txt")`)
	})

	t.Run("node agent serves the page", func(t *testing.T) {
		b.run("node's clients", chromedp.Navigate(node.URL()+"/ui/clients"), chromedp.WaitVisible(chromedp.CSS("main .error")))
		// sessionStorage is per origin: the node's origin has no token yet.
		b.waitText("main", "Permission denied")
		b.take()
		setToken(node.URL(), mgmtSecret, "management")
		b.run("node's clients", chromedp.Navigate(node.URL()+"/ui/clients"), chromedp.WaitVisible(chromedp.CSS("tr[data-node] svg.spark polyline")))
		if errs := b.take(); len(errs) > 0 {
			t.Errorf("node agent's page logged errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("token without node:read sees the denial", func(t *testing.T) {
		setToken(base, jobsOnly, "jobs-only")
		b.run("clients", chromedp.Navigate(base+"/ui/clients"), chromedp.WaitVisible(chromedp.CSS(".nodes .error")))
		b.waitText(".nodes .error", "Permission denied")
		b.shot(dir, "denied")
		// The jobs the token may read still show.
		b.run("jobs", chromedp.Navigate(base+"/ui/jobs"), chromedp.WaitVisible(chromedp.CSS("main table")))
		b.waitText("main table", "web")
		for _, e := range b.take() {
			if !strings.Contains(e, "403") { // the denied calls' failed loads are expected
				t.Errorf("denied page logged: %s", e)
			}
		}
		setToken(base, mgmtSecret, "management")
	})

	t.Run("stop and gc with confirmation", func(t *testing.T) {
		b.run("allocation", chromedp.Navigate(base+"/ui/allocations/"+allocID), chromedp.WaitVisible(chromedp.CSS("#alloc-stop")))
		b.run("stop", chromedp.Click(chromedp.CSS("#alloc-stop")), chromedp.WaitVisible(chromedp.CSS("#confirm-yes")))
		b.shot(dir, "allocation-confirm")
		b.run("confirm", chromedp.Click(chromedp.CSS("#confirm-yes")))
		waitFor(t, 20*time.Second, "the allocation stopped", func() (bool, error) {
			a, _, err := mgmt.Allocations().Info(allocID, nil)
			if err != nil {
				return false, err
			}
			return a.DesiredStatus == "stop" && a.ClientStatus == "complete", nil
		})
		b.run("allocation", chromedp.Navigate(base+"/ui/allocations/"+allocID), chromedp.WaitVisible(chromedp.CSS("#alloc-gc")))
		b.run("gc", chromedp.Click(chromedp.CSS("#alloc-gc")), chromedp.WaitVisible(chromedp.CSS("#confirm-yes")),
			chromedp.Click(chromedp.CSS("#confirm-yes")))
		b.waitText("main .status", "Done.")
		waitFor(t, 10*time.Second, "the allocation's directory removed", func() (bool, error) {
			_, err := os.Stat(taskDir)
			return os.IsNotExist(err), nil
		})
		if errs := b.take(); len(errs) > 0 {
			t.Errorf("stop and gc logged errors:\n%s", strings.Join(errs, "\n"))
		}
	})
}
