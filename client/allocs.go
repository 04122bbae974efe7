package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tether/internal/atomicfile"
	"tether/structs"
)

// allocManager owns the node's allocation runners: it pulls the node's
// allocations from the servers when told they changed, reports their
// status in batches, samples their stats, and persists them so an agent
// restart finds its allocation dirs.
//
// Nothing of it is parked. The servers push Client.AllocsChanged with the
// node's allocation index when they change its allocations; the same
// index rides on every heartbeat and registration answer (the backstop
// for a lost push), and the node pulls once after each registration. A
// pull (Node.GetClientAllocs with no wait), a status report and a stats
// sample each run in a goroutine that exists while it runs, started at
// once or from a timer: a node with nothing to do has no goroutine and no
// ticker (at 10,000 nodes in one fleet process, two tickers per node
// would be 60,000 wake-ups a second for nothing, and a parked blocking
// query costs every server a handler goroutine and a stream per node).
type allocManager struct {
	c        *Client
	stateDir string

	mu      sync.Mutex
	runners map[string]*allocRunner
	dirty   map[string]bool

	// Status reports: one flush at a time (flushing), started at once by
	// markDirty, or later by retryTmr (not connected, or a failed send).
	flushing bool
	retryTmr *time.Timer

	// statsTmr samples the tasks' stats every StatsInterval while the
	// node has allocations.
	statsTmr *time.Timer

	// Pulls of the node's allocations: one at a time (pulling), started
	// by announce or pullNow, or later by pullTmr (not connected, or a
	// failed pull). haveIndex is the allocation index of the last
	// applied pull, wantIndex the highest announced (push, heartbeat,
	// registration); forcePull asks for a pull whatever the indexes say.
	pulling   bool
	pullTmr   *time.Timer
	haveIndex uint64
	wantIndex uint64
	forcePull bool
	pulls     uint64 // pulls made (tests)

	// running is set (under mu) between start and stop: reports, pulls
	// and samples start only then. bg counts those in flight, which stop
	// waits for once it clears running.
	running bool
	started bool // start was called: stop stops the runners
	bg      sync.WaitGroup
}

// How soon a status report or a pull is retried: while the node has no
// session, and after a send failed.
const (
	allocUpdateWaitConn = 200 * time.Millisecond
	allocUpdateRetry    = time.Second
)

// allocPullTimeout bounds one pull of the node's allocations.
const allocPullTimeout = 15 * time.Second

func newAllocManager(c *Client) *allocManager {
	return &allocManager{
		c:        c,
		stateDir: filepath.Join(c.cfg.StateDir, "allocs"),
		runners:  map[string]*allocRunner{},
		dirty:    map[string]bool{},
	}
}

func (m *allocManager) get(id string) *allocRunner {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runners[id]
}

func (m *allocManager) all() []*allocRunner {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*allocRunner, 0, len(m.runners))
	for _, ar := range m.runners {
		out = append(out, ar)
	}
	return out
}

// markDirty queues the allocation's status for the servers: a flush
// starts now unless one runs or waits for its retry already (it will
// report this one too).
func (m *allocManager) markDirty(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirty[id] = true
	m.kickLocked()
}

// kickLocked starts a flush unless one runs or waits for its retry (it
// will report what is queued), or nothing is; m.mu is held.
func (m *allocManager) kickLocked() {
	if !m.running || m.flushing || m.retryTmr != nil || len(m.dirty) == 0 {
		return
	}
	m.flushing = true
	m.bg.Add(1)
	go m.flush()
}

// persistedAlloc is what the state dir keeps per allocation.
type persistedAlloc struct {
	Alloc      *structs.Allocation
	TaskStates map[string]*structs.TaskState
	Pids       map[string]int
	Destroyed  bool
}

func (m *allocManager) persist(ar *allocRunner) {
	if m.c.ctx.Err() != nil {
		return
	}
	p := persistedAlloc{Alloc: ar.alloc(), TaskStates: ar.taskStates(), Pids: map[string]int{}, Destroyed: ar.isDestroyed()}
	for name, tr := range ar.tasks {
		if pid := tr.pid(); pid > 0 {
			p.Pids[name] = pid
		}
	}
	b, err := json.Marshal(&p)
	if err == nil {
		err = os.MkdirAll(m.stateDir, 0o700)
	}
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(m.stateDir, ar.id+".json"), b, 0o600)
	}
	if err != nil {
		m.c.logger.Error("persisting allocation state", "alloc_id", ar.id, "error", err)
	}
}

// restore loads the allocations a previous run of the agent left. Leftover
// task process groups are killed; running allocations start again when the
// servers confirm them.
func (m *allocManager) restore() {
	if err := atomicfile.RemoveTempsIn(m.stateDir); err != nil {
		m.c.logger.Warn("removing temp files of allocation state", "error", err)
	}
	entries, err := os.ReadDir(m.stateDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.stateDir, e.Name()))
		if err != nil {
			continue
		}
		var p persistedAlloc
		if err := json.Unmarshal(b, &p); err != nil || p.Alloc == nil || !structs.IsUUID(p.Alloc.ID) {
			m.c.logger.Warn("skipping unreadable allocation state", "file", e.Name())
			continue
		}
		for _, pid := range p.Pids {
			killLeftoverGroup(pid)
		}
		ar := newAllocRunner(m.c, p.Alloc, p.TaskStates)
		ar.destroyed = p.Destroyed
		ar.changed()
		m.mu.Lock()
		m.runners[p.Alloc.ID] = ar
		m.mu.Unlock()
	}
}

// killLeftoverGroup kills the process group led by pid if that process is
// still a group leader (so a reused pid of an unrelated process is spared).
func killLeftoverGroup(pid int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return
	}
	if st, ok := parseProcStat(b); !ok || st.pgrp != pid {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// start lets reports, pulls and samples run; it returns at once.
func (m *allocManager) start() {
	m.mu.Lock()
	m.running, m.started = true, true
	m.kickLocked() // what restore queued
	m.armStatsLocked()
	m.kickPullLocked()
	m.mu.Unlock()
}

// stop stops status reports, pulls and stats samples and waits for those
// in flight (the client's context is done, so they end soon), then stops
// every allocation.
func (m *allocManager) stop() {
	m.mu.Lock()
	started := m.started
	m.running = false
	for _, t := range []**time.Timer{&m.retryTmr, &m.statsTmr, &m.pullTmr} {
		if *t != nil {
			(*t).Stop()
			*t = nil
		}
	}
	m.mu.Unlock()
	m.bg.Wait()
	if !started {
		return // the runners restore made never ran
	}
	for _, ar := range m.all() {
		ar.stop()
	}
	for _, ar := range m.all() {
		ar.wait()
	}
}

// announce records that the servers' allocation index for this node is
// idx (a push, a heartbeat or a registration answer) and pulls if the
// node has applied less.
func (m *allocManager) announce(idx uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if idx > m.wantIndex {
		m.wantIndex = idx
	}
	m.kickPullLocked()
}

// pullNow pulls whatever the indexes say: after a (re)registration, the
// server may be another one, or one whose state was reset.
func (m *allocManager) pullNow() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forcePull = true
	m.kickPullLocked()
}

// kickPullLocked starts a pull if one is due and none runs or waits for
// its retry; m.mu is held.
func (m *allocManager) kickPullLocked() {
	if !m.running || m.pulling || m.pullTmr != nil || !m.pullDueLocked() {
		return
	}
	m.pulling = true
	m.bg.Add(1)
	go m.pull()
}

func (m *allocManager) pullDueLocked() bool {
	return m.forcePull || m.wantIndex > m.haveIndex
}

// pull fetches the node's allocations (no wait) and applies them, again
// while another pull became due meanwhile; kickPullLocked started it
// (m.pulling, m.bg). With no session, or after a failed pull, it arms
// pullTmr and keeps the pull due.
func (m *allocManager) pull() {
	defer m.bg.Done()
	for {
		m.mu.Lock()
		if !m.running || !m.pullDueLocked() {
			m.pulling = false
			m.mu.Unlock()
			return
		}
		if !m.c.Connected() {
			m.pulling = false
			m.retryPullLocked(allocUpdateWaitConn)
			m.mu.Unlock()
			return
		}
		m.forcePull = false
		want := m.wantIndex
		m.pulls++
		m.mu.Unlock()

		req := &structs.NodeClientAllocsRequest{NodeID: m.c.id.NodeID, SecretID: m.c.id.SecretID}
		var resp structs.NodeClientAllocsResponse
		cctx, cancel := context.WithTimeout(m.c.ctx, allocPullTimeout)
		// callOwn ends the pull when the node moves to another server;
		// the registration there pulls again.
		err := m.c.conn.callOwn(cctx, structs.MethodNodeGetClientAllocs, req, &resp)
		cancel()
		if err != nil {
			m.mu.Lock()
			if m.c.ctx.Err() == nil {
				m.c.logger.Debug("pulling allocations failed; retrying", "error", err)
			}
			m.forcePull = true
			m.pulling = false
			m.retryPullLocked(allocUpdateRetry)
			m.mu.Unlock()
			return
		}
		m.apply(resp.Allocs)
		m.mu.Lock()
		m.haveIndex = resp.Index
		if m.wantIndex == want {
			// Nothing announced while this pull ran: the answer is the
			// servers' view (it may be lower than announced, after a
			// purge or a reset state; do not chase the old figure).
			m.wantIndex = resp.Index
		}
		m.mu.Unlock()
	}
}

// retryPullLocked arms a pull after d; m.mu is held and no pull runs.
func (m *allocManager) retryPullLocked(d time.Duration) {
	if !m.running || m.pullTmr != nil {
		return
	}
	m.pullTmr = time.AfterFunc(d, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.pullTmr = nil
		m.kickPullLocked()
	})
}

// apply starts, updates or stops runners to match the servers' view.
func (m *allocManager) apply(allocs []*structs.Allocation) {
	for _, a := range allocs {
		ar := m.get(a.ID)
		if ar != nil {
			ar.update(a)
			if a.DesiredStatus == structs.AllocDesiredStatusRun && !ar.terminal() && !ar.isDestroyed() {
				ar.run()
			}
			continue
		}
		if a.DesiredStatus != structs.AllocDesiredStatusRun || a.ClientTerminal() {
			continue
		}
		ar = newAllocRunner(m.c, a, nil)
		m.mu.Lock()
		m.runners[a.ID] = ar
		m.armStatsLocked()
		m.mu.Unlock()
		m.c.logger.Info("starting allocation", "alloc_id", a.ID, "name", a.Name)
		ar.persist()
		ar.run()
	}
}

// flush sends the queued status updates, in batches, until none is left;
// markDirty started it (m.flushing, m.bg). With no session, or after a
// failed send, it leaves the updates queued and arms retryTmr.
func (m *allocManager) flush() {
	defer m.bg.Done()
	for {
		m.mu.Lock()
		if !m.running || len(m.dirty) == 0 {
			m.flushing = false
			m.mu.Unlock()
			return
		}
		if !m.c.Connected() {
			m.flushing = false
			m.retryLocked(allocUpdateWaitConn)
			m.mu.Unlock()
			return
		}
		batch := make([]*allocRunner, 0, len(m.dirty))
		for id := range m.dirty {
			if ar := m.runners[id]; ar != nil {
				batch = append(batch, ar)
			}
		}
		clear(m.dirty)
		m.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		req := &structs.AllocUpdateRequest{NodeID: m.c.id.NodeID, SecretID: m.c.id.SecretID}
		for _, ar := range batch {
			req.Allocs = append(req.Allocs, ar.report())
		}
		cctx, cancel := context.WithTimeout(m.c.ctx, 10*time.Second)
		err := m.c.ServerRPC(cctx, structs.MethodNodeUpdateAlloc, req, &structs.GenericResponse{})
		cancel()
		if err != nil {
			m.c.logger.Debug("allocation update failed; will retry", "error", err)
			m.mu.Lock()
			for _, ar := range batch {
				m.dirty[ar.id] = true
			}
			m.flushing = false
			m.retryLocked(allocUpdateRetry)
			m.mu.Unlock()
			return
		}
	}
}

// retryLocked arms the retry of a flush after d; m.mu is held and no
// flush runs.
func (m *allocManager) retryLocked(d time.Duration) {
	if !m.running || m.retryTmr != nil {
		return
	}
	m.retryTmr = time.AfterFunc(d, func() {
		m.mu.Lock()
		m.retryTmr = nil
		if !m.running || m.flushing || len(m.dirty) == 0 {
			m.mu.Unlock()
			return
		}
		m.flushing = true
		m.bg.Add(1)
		m.mu.Unlock()
		m.flush()
	})
}

// armStatsLocked arms the next stats sample if the node has allocations
// and none is armed; m.mu is held.
func (m *allocManager) armStatsLocked() {
	if !m.running || m.statsTmr != nil || len(m.runners) == 0 {
		return
	}
	m.statsTmr = time.AfterFunc(m.c.cfg.StatsInterval, m.sampleStats)
}

// sampleStats samples every running task's usage, then arms the next
// sample.
func (m *allocManager) sampleStats() {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return
	}
	m.bg.Add(1)
	m.mu.Unlock()
	defer m.bg.Done()
	for _, ar := range m.all() {
		for _, tr := range ar.tasks {
			tr.sampleStats()
		}
	}
	m.mu.Lock()
	m.statsTmr = nil
	m.armStatsLocked()
	m.mu.Unlock()
}

// errNotEligibleForGC is the answer to a GC of an allocation still running.
var errNotEligibleForGC = structs.NewError(http.StatusConflict, "allocation is not terminal and cannot be garbage collected; stop it first")

// gc destroys one terminal allocation's directory.
func (m *allocManager) gc(id string) error {
	ar := m.get(id)
	if ar == nil {
		return structs.NotFound("No such allocation on client")
	}
	if !ar.terminal() {
		return errNotEligibleForGC
	}
	ar.wait()
	if err := ar.destroy(); err != nil {
		return fmt.Errorf("destroying allocation directory: %w", err)
	}
	ar.persist()
	m.c.logger.Info("garbage collected allocation", "alloc_id", id)
	return nil
}

// gcAll destroys every terminal allocation's directory.
func (m *allocManager) gcAll() error {
	var errs []error
	for _, ar := range m.all() {
		if ar.terminal() && !ar.isDestroyed() {
			if err := m.gc(ar.id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
