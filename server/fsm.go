package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"tether/internal/msgpack"
	"tether/structs"
)

// msgType tags a raft log entry: the first byte of every entry, followed
// by the msgpack encoding of the command. Values are part of the on-disk
// format: never renumber or reuse one.
type msgType uint8

// Raft log commands. Each maps to exactly one StateStore write method.
const (
	msgUpsertNode             msgType = 1
	msgUpdateNodeStatus       msgType = 2
	msgUpsertJob              msgType = 3
	msgSetJobStatus           msgType = 4
	msgDeleteJob              msgType = 5
	msgUpsertAllocs           msgType = 6
	msgUpdateAllocsFromClient msgType = 7
	msgDeleteAllocs           msgType = 8
	msgUpdateJobStatus        msgType = 9

	msgACLBootstrap      msgType = 20
	msgUpsertACLPolicies msgType = 21
	msgDeleteACLPolicies msgType = 22
	msgUpsertACLTokens   msgType = 23
	msgDeleteACLTokens   msgType = 24

	// One-time tokens (onetime.go), written with msgIgnoreUnknown: nothing
	// an older server reads depends on their table.
	msgUpsertOneTimeToken   msgType = 25
	msgExchangeOneTimeToken msgType = 26
	msgExpireOneTimeTokens  msgType = 27

	// ACL roles (acl_roles.go), written with msgIgnoreUnknown: a server
	// that skips them has no roles, so a token's role links grant nothing
	// there; it refuses rights, never grants them. (28, 29: keyring.go;
	// 30: eval_state.go.)
	msgUpsertACLRoles msgType = 31
	msgDeleteACLRoles msgType = 32

	// Scaling events (scaling.go), written with msgIgnoreUnknown: a
	// server that skips them answers a job's scale status with fewer
	// events, nothing else.
	msgUpsertScalingEvent msgType = 33
)

// msgIgnoreUnknown, set in a command's type, tells a server that does not
// know the command that skipping it is safe (it only adds something older
// servers would not read). A command without the flag that a server does
// not know stops that server's FSM: applying the rest of the log without
// it would leave its state silently different from its peers'.
const msgIgnoreUnknown msgType = 0x80

// Command payloads. Everything a write depends on (timestamps included)
// is in the command, so every server applies it identically.
type (
	upsertNodeCmd struct{ Node *structs.Node }

	nodeStatusCmd struct {
		NodeID, Status, Description string
		At                          int64
	}

	upsertJobCmd struct{ Job *structs.Job }

	jobStatusCmd struct {
		Namespace, JobID, Status, Description string
	}

	deleteJobCmd struct{ Namespace, JobID string }

	upsertAllocsCmd struct{ Allocs []*structs.Allocation }

	allocClientUpdateCmd struct {
		NodeID string
		Allocs []*structs.Allocation
		At     int64
	}

	deleteAllocsCmd struct{ IDs []string }

	aclPoliciesCmd struct{ Policies []*structs.ACLPolicy }

	aclTokensCmd struct{ Tokens []*structs.ACLToken }

	// aclDeleteCmd names policies (by name) or tokens (by accessor ID).
	aclDeleteCmd struct{ Names []string }
)

// command applies one decoded log entry to the store.
type command func(st *StateStore, dec *codec.Decoder) (uint64, error)

// cmd adapts a typed apply function to a command.
func cmd[T any](fn func(st *StateStore, c *T) (uint64, error)) command {
	return func(st *StateStore, dec *codec.Decoder) (uint64, error) {
		var c T
		if err := dec.Decode(&c); err != nil {
			return 0, fmt.Errorf("decoding %T: %w", c, err)
		}
		return fn(st, &c)
	}
}

// commands is the FSM's dispatch table.
var commands = map[msgType]command{
	msgUpsertNode: cmd(func(st *StateStore, c *upsertNodeCmd) (uint64, error) {
		if c.Node == nil {
			return 0, errors.New("upsert node: missing node")
		}
		return st.UpsertNode(c.Node)
	}),
	msgUpdateNodeStatus: cmd(func(st *StateStore, c *nodeStatusCmd) (uint64, error) {
		return st.UpdateNodeStatus(c.NodeID, c.Status, c.Description, c.At)
	}),
	msgUpsertJob: cmd(func(st *StateStore, c *upsertJobCmd) (uint64, error) {
		if c.Job == nil {
			return 0, errors.New("upsert job: missing job")
		}
		return st.UpsertJob(c.Job)
	}),
	msgSetJobStatus: cmd(func(st *StateStore, c *jobStatusCmd) (uint64, error) {
		return st.SetJobStatus(c.Namespace, c.JobID, c.Status)
	}),
	msgUpdateJobStatus: cmd(func(st *StateStore, c *jobStatusCmd) (uint64, error) {
		return st.UpdateJobStatus(c.Namespace, c.JobID, c.Status, c.Description)
	}),
	msgDeleteJob: cmd(func(st *StateStore, c *deleteJobCmd) (uint64, error) {
		return st.DeleteJob(c.Namespace, c.JobID)
	}),
	msgUpsertAllocs: cmd(func(st *StateStore, c *upsertAllocsCmd) (uint64, error) {
		return st.UpsertAllocs(c.Allocs)
	}),
	msgUpdateAllocsFromClient: cmd(func(st *StateStore, c *allocClientUpdateCmd) (uint64, error) {
		return st.UpdateAllocsFromClient(c.NodeID, c.Allocs, c.At)
	}),
	msgDeleteAllocs: cmd(func(st *StateStore, c *deleteAllocsCmd) (uint64, error) {
		return st.DeleteAllocs(c.IDs)
	}),
	msgACLBootstrap: cmd(func(st *StateStore, c *aclTokensCmd) (uint64, error) {
		if len(c.Tokens) != 1 {
			return 0, errors.New("acl bootstrap: want one token")
		}
		return st.BootstrapACLTokens(c.Tokens[0])
	}),
	msgUpsertACLPolicies: cmd(func(st *StateStore, c *aclPoliciesCmd) (uint64, error) {
		return st.UpsertACLPolicies(c.Policies)
	}),
	msgDeleteACLPolicies: cmd(func(st *StateStore, c *aclDeleteCmd) (uint64, error) {
		return st.DeleteACLPolicies(c.Names)
	}),
	msgUpsertACLTokens: cmd(func(st *StateStore, c *aclTokensCmd) (uint64, error) {
		return st.UpsertACLTokens(c.Tokens)
	}),
	msgDeleteACLTokens: cmd(func(st *StateStore, c *aclDeleteCmd) (uint64, error) {
		return st.DeleteACLTokens(c.Names)
	}),
}

// msgpackHandle encodes raft log entries and snapshots with the settings
// of RPC bodies (msgpack.NewHandle), so one time format is used
// everywhere: time.Time as MarshalBinary.
var msgpackHandle = msgpack.NewHandle()

// encodeCommand returns the log entry for a command.
func encodeCommand(t msgType, c any) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, 256))
	buf.WriteByte(byte(t))
	if err := codec.NewEncoder(buf, msgpackHandle).Encode(c); err != nil {
		return nil, fmt.Errorf("encoding raft command %d: %w", t, err)
	}
	return buf.Bytes(), nil
}

// unknownCommandError is the panic value of an FSM that met a command it
// does not know and may not skip.
type unknownCommandError struct {
	Type  msgType
	Index uint64
}

func (e *unknownCommandError) Error() string {
	return fmt.Sprintf("raft log entry %d has unknown command type %d: this server cannot apply the log and must be upgraded", e.Index, e.Type)
}

// fsmResponse is what FSM.Apply returns to raft.Apply's future.
type fsmResponse struct {
	Index uint64
	Err   error
}

// fsm applies raft log entries to the state store. raft calls Apply,
// Snapshot and Restore from one goroutine at a time.
type fsm struct {
	store  *StateStore
	logger hclog.Logger

	// restored, if set, is called after a successful Restore (a snapshot
	// replaced the state without the writes that hooks see).
	restored func()
}

var _ raft.FSM = (*fsm)(nil)

// Apply applies one committed command at its log index.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return fsmResponse{Index: l.Index}
	}
	t := msgType(l.Data[0])
	c, ok := commands[t&^msgIgnoreUnknown]
	if !ok {
		if t&msgIgnoreUnknown == 0 {
			// An entry a newer server wrote that this one cannot apply.
			// raft offers an FSM no way to refuse an entry: it would go
			// on applying the log after it and serve state its peers do
			// not have. Stop here, as loudly as possible; the operator
			// upgrades this server and it replays the log.
			f.logger.Error("unknown raft command; stopping the FSM so this server does not diverge from its peers",
				"type", uint8(t), "index", l.Index)
			panic(&unknownCommandError{Type: t, Index: l.Index})
		}
		// Safe to skip by its writer's word; applying nothing keeps the
		// indexes in step.
		f.logger.Warn("unknown raft command marked ignorable; skipped", "type", uint8(t), "index", l.Index)
		idx, _ := f.store.applyAt(l.Index, func() (uint64, error) { return 0, nil })
		return fsmResponse{Index: idx}
	}
	dec := codec.NewDecoderBytes(l.Data[1:], msgpackHandle)
	idx, err := f.store.applyAt(l.Index, func() (uint64, error) { return c(f.store, dec) })
	if err != nil {
		// A refusal (a 4xx such as an ACL bootstrap done twice) is the
		// caller's answer, not a fault.
		if structs.StatusCode(err) < 500 {
			f.logger.Debug("raft command refused", "type", t, "index", l.Index, "error", err)
		} else {
			f.logger.Error("applying raft command failed", "type", t, "index", l.Index, "error", err)
		}
	}
	return fsmResponse{Index: idx, Err: err}
}

// Snapshot returns a point-in-time copy of the whole store; memdb
// snapshots are O(1) (immutable radix trees), so raft can keep applying
// while Persist writes it out.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.store.writeMu.Lock()
	snap := &fsmSnapshot{db: f.store.db.Snapshot(), index: f.store.index}
	f.store.writeMu.Unlock()
	return snap, nil
}

// Restore replaces the store's contents with a snapshot.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.restore(rc); err != nil {
		return err
	}
	if f.restored != nil {
		f.restored()
	}
	return nil
}

// snapshotHeader starts every snapshot.
type snapshotHeader struct {
	Version int
	Index   uint64
}

const snapshotVersion = 1

// snapshotTypes gives the Go type of each table's objects, so a restore
// can decode them. Every table of the schema must have one (a test checks
// it): a table added without an entry here would not survive a restart.
var snapshotTypes = map[string]func() any{
	tableIndex:  func() any { return new(indexEntry) },
	tableNodes:  func() any { return new(structs.Node) },
	tableJobs:   func() any { return new(structs.Job) },
	tableAllocs: func() any { return new(structs.Allocation) },

	tableACLPolicies: func() any { return new(structs.ACLPolicy) },
	tableACLTokens:   func() any { return new(structs.ACLToken) },
}

// fsmSnapshot writes a memdb snapshot as: header, then for each object its
// table name and the object, then an empty table name.
type fsmSnapshot struct {
	db    *memdb.MemDB
	index uint64
}

// Persist writes the snapshot to sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	enc := codec.NewEncoder(w, msgpackHandle)
	if err := enc.Encode(&snapshotHeader{Version: snapshotVersion, Index: s.index}); err != nil {
		return fmt.Errorf("snapshot header: %w", err)
	}
	txn := s.db.Txn(false)
	tables := make([]string, 0, len(s.db.DBSchema().Tables))
	for name := range s.db.DBSchema().Tables {
		tables = append(tables, name)
	}
	sort.Strings(tables)
	for _, table := range tables {
		if _, ok := snapshotTypes[table]; !ok {
			return fmt.Errorf("snapshot: table %q has no registered type (add it to snapshotTypes)", table)
		}
		it, err := txn.Get(table, "id")
		if err != nil {
			return fmt.Errorf("snapshot: reading %s: %w", table, err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if err := enc.Encode(table); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			if err := enc.Encode(raw); err != nil {
				return fmt.Errorf("snapshot: encoding %s object: %w", table, err)
			}
		}
	}
	if err := enc.Encode(""); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// Release is a no-op: a memdb snapshot holds nothing to free.
func (s *fsmSnapshot) Release() {}

// restore reads a snapshot written by fsmSnapshot and swaps it in as one
// write transaction, so readers see the old state or the new, and blocked
// watchers wake up.
func (s *StateStore) restore(r io.Reader) error {
	dec := codec.NewDecoder(r, msgpackHandle)
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return fmt.Errorf("restore: reading header: %w", err)
	}
	if hdr.Version != snapshotVersion {
		return fmt.Errorf("restore: unsupported snapshot version %d", hdr.Version)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	txn := s.db.Txn(true)
	defer txn.Abort()
	for table := range s.db.DBSchema().Tables {
		if _, err := txn.DeleteAll(table, "id"); err != nil {
			return fmt.Errorf("restore: clearing %s: %w", table, err)
		}
	}
	for {
		var table string
		if err := dec.Decode(&table); err != nil {
			return fmt.Errorf("restore: reading table name: %w", err)
		}
		if table == "" {
			break
		}
		mk, ok := snapshotTypes[table]
		if !ok {
			return fmt.Errorf("restore: unknown table %q", table)
		}
		obj := mk()
		if err := dec.Decode(obj); err != nil {
			return fmt.Errorf("restore: decoding %s object: %w", table, err)
		}
		if err := txn.Insert(table, obj); err != nil {
			return fmt.Errorf("restore: inserting into %s: %w", table, err)
		}
	}
	txn.Commit()
	// A restore may move the index back (a follower installing the
	// leader's snapshot after a truncation never does, but a restart
	// restores into an empty store): take the snapshot's index as is.
	s.index = hdr.Index
	close(s.indexCh)
	s.indexCh = make(chan struct{})
	return nil
}
