package server

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"tether/structs"
)

// What the server decodes from its peers, as far as Tether frames it:
// memberlist messages and tags (memberlist's own wire is memberlist's),
// raft log entries (raft's own wire is hashicorp/raft's; the entries are
// Tether's commands) and snapshots.

// FuzzMembershipMessages: a gossiped message or a member's tags of any
// content are applied or dropped, never a panic; a force-leave intent
// never removes a member that is alive.
func FuzzMembershipMessages(f *testing.F) {
	intent := append([]byte{intentForceLeave}, encodeGossip(f, &forceLeaveIntent{Name: "s2.global", Prune: true})...)
	tags := encodeGossip(f, map[string]string{"role": "nomad", "region": "global", "id": structs.GenerateUUID(), "rpc_addr": "127.0.0.1:4647"})
	f.Add(intent, tags)
	f.Add([]byte{intentForceLeave, 0xc0}, []byte{0x80})
	f.Add([]byte{intentForceLeave}, []byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, msg, meta []byte) {
		m := &membership{logger: hclog.NewNullLogger(), members: map[string]*Member{}, forced: map[string]bool{}, eventCh: make(chan struct{}, 1)}
		m.update(&memberlist.Node{Name: "s1.global", Addr: net.IPv4(127, 0, 0, 1), Port: 4648, Meta: meta}, MemberAlive)
		m.update(&memberlist.Node{Name: "s2.global", Addr: net.IPv4(127, 0, 0, 2), Port: 4648, Meta: meta}, MemberFailed)
		m.NotifyMsg(msg)
		if mem := m.members["s1.global"]; mem == nil || mem.Status != MemberAlive {
			t.Fatalf("message %x: the alive member is now %+v", msg, mem)
		}
	})
}

// encodeGossip encodes v as the membership code does.
func encodeGossip(f *testing.F, v any) []byte {
	var b []byte
	if err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(v); err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzFSMApply: a raft log entry of any content is applied, refused or,
// only for an unknown command not marked ignorable, stops the FSM on
// purpose; every command entry advances the store's index to its own.
func FuzzFSMApply(f *testing.F) {
	for typ, c := range map[msgType]any{
		msgUpsertNode: &upsertNodeCmd{Node: testNode(structs.GenerateUUID())},
		msgUpsertJob:  &upsertJobCmd{Job: testJob("web")},
	} {
		b, err := encodeCommand(typ, c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{byte(msgIgnoreUnknown | 0x7f), 1, 2})
	f.Add([]byte{byte(msgDeleteAllocs), 0x91, 0xc0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 {
			if _, ok := commands[msgType(data[0])&^msgIgnoreUnknown]; !ok && msgType(data[0])&msgIgnoreUnknown == 0 {
				return // the FSM stops on purpose (unknownCommandError)
			}
		}
		st, err := NewStateStore()
		if err != nil {
			t.Fatal(err)
		}
		fm := &fsm{store: st, logger: hclog.NewNullLogger()}
		fm.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: data})
		if idx := st.LatestIndex(); idx != 5 && len(data) > 0 { // an empty entry is no command
			t.Fatalf("entry %x: store index %d after applying index 5", data, idx)
		}
	})
}

// FuzzFSMRestore: a snapshot of any content restores or fails, never a
// panic.
func FuzzFSMRestore(f *testing.F) {
	st, err := NewStateStore()
	if err != nil {
		f.Fatal(err)
	}
	fm := &fsm{store: st, logger: hclog.NewNullLogger()}
	b, _ := encodeCommand(msgUpsertJob, &upsertJobCmd{Job: testJob("web")})
	fm.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: b})
	snap, err := fm.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&bufSink{Buffer: &buf}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := NewStateStore()
		if err != nil {
			t.Fatal(err)
		}
		fm := &fsm{store: st, logger: hclog.NewNullLogger()}
		_ = fm.Restore(io.NopCloser(bytes.NewReader(data)))
	})
}

// bufSink is a raft.SnapshotSink into a buffer.
type bufSink struct{ *bytes.Buffer }

func (s *bufSink) ID() string    { return "fuzz" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }
