package server

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/go-memdb"

	"tether/structs"
)

// Blocking query bounds, as Nomad's: a query that asks for no wait time
// waits DefaultQueryTime, none waits more than MaxQueryTime, and each gets
// up to 1/queryJitterFraction of its wait added at random so that many
// watchers woken together do not come back together.
const (
	DefaultQueryTime    = 5 * time.Minute
	MaxQueryTime        = 5 * time.Minute
	queryJitterFraction = 16
)

// Exported table names, for readers outside the package that name the
// table whose index they serve.
const (
	TableNodes  = tableNodes
	TableJobs   = tableJobs
	TableAllocs = tableAllocs
	TableEvals  = tableEvals
)

// QueryFunc is one run of a read: it reads the state, adds to ws what
// should wake it (TableIndex does for a table), and returns the index of
// what it read.
type QueryFunc func(ws memdb.WatchSet) (uint64, error)

// TableIndex returns the highest index at which one of tables was last
// written (0 for tables never written) and, when ws is not nil, adds their
// index entries to ws: a blocking read woken by them wakes on a write to
// one of those tables and on no other. Call it before reading the data, so
// the index served is never newer than the data.
func (s *StateStore) TableIndex(ws memdb.WatchSet, tables ...string) uint64 {
	txn := s.db.Txn(false)
	var idx uint64
	for _, t := range tables {
		idx = max(idx, tableIndexOf(txn, ws, t))
	}
	return idx
}

// Blocking runs fn, as a blocking query when opts.MinQueryIndex is set:
// until the index fn returns passes it, fn is run again each time what it
// watched changes. The wait ends at opts.MaxQueryTime (DefaultQueryTime
// when zero, at most MaxQueryTime, plus jitter) or when ctx ends; fn then
// runs once more, without watching, and its answer stands. It returns the
// index of fn's last run.
func (s *StateStore) Blocking(ctx context.Context, opts structs.BlockingOptions, fn QueryFunc) (uint64, error) {
	if opts.MinQueryIndex == 0 {
		return fn(nil)
	}
	ctx, cancel := context.WithTimeout(ctx, queryWait(opts.MaxQueryTime))
	defer cancel()
	for {
		ws := memdb.NewWatchSet()
		idx, err := fn(ws)
		if err != nil || idx > opts.MinQueryIndex {
			return idx, err
		}
		if ws.WatchCtx(ctx) != nil {
			return fn(nil)
		}
	}
}

// queryWait is how long a blocking query asking for wait may wait.
func queryWait(wait time.Duration) time.Duration {
	if wait <= 0 {
		wait = DefaultQueryTime
	}
	wait = min(wait, MaxQueryTime)
	if j := int64(wait / queryJitterFraction); j > 0 {
		wait += time.Duration(rand.Int64N(j))
	}
	return wait
}

// QueryMeta is what a read's answer says of the server: whether it knows
// a leader and how long ago it last heard from it (0 on the leader), as
// Nomad's X-Nomad-KnownLeader and X-Nomad-LastContact headers carry them.
func (s *Server) QueryMeta() (knownLeader bool, lastContact time.Duration) {
	if s.IsLeader() {
		return true, 0
	}
	knownLeader = s.Leader() != ""
	if last := s.raft.LastContact(); !last.IsZero() {
		lastContact = time.Since(last)
	}
	return knownLeader, lastContact
}
