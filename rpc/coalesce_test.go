package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn records each Write as one element. A write blocks while
// gate is non-nil and open, and fails with failWith once set.
type recordingConn struct {
	net.Conn
	mu       sync.Mutex
	writes   [][]byte
	gate     chan struct{}
	failWith error
	closed   bool
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	gate, fail := r.gate, r.failWith
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return 0, fail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (r *recordingConn) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

// snapshot returns the writes so far and their concatenation.
func (r *recordingConn) snapshot() ([][]byte, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := append([][]byte(nil), r.writes...)
	return ws, bytes.Join(ws, nil)
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

// wholeFrames reports whether w holds only whole yamux frames: every data
// header with its body.
func wholeFrames(w []byte) bool {
	for len(w) > 0 {
		if len(w) < yamuxHeaderSize {
			return false
		}
		n := 0
		if w[1] == 0 {
			n = int(binary.BigEndian.Uint32(w[8:12]))
		}
		if len(w) < yamuxHeaderSize+n {
			return false
		}
		w = w[yamuxHeaderSize+n:]
	}
	return true
}

// TestFrameCoalescer_WholeFramesInOrder: every byte goes out in order, and
// no write splits a data frame from its header, small or bulk.
func TestFrameCoalescer_WholeFramesInOrder(t *testing.T) {
	bulk := bytes.Repeat([]byte{0xab}, 64<<10)
	steps := [][]byte{
		yamuxHeader(0, 5), []byte("hello"), // data frame
		yamuxHeader(1, 1024),                    // window update
		yamuxHeader(2, 7),                       // ping
		yamuxHeader(0, 0),                       // data frame with only flags (FIN)
		yamuxHeader(0, uint32(len(bulk))), bulk, // bulk data frame
		yamuxHeader(0, 3), []byte("abc"),
	}
	rec := &recordingConn{}
	c := coalesceFrames(rec, nil)
	defer c.Close()
	for i, p := range steps {
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d = %d, %v; want %d, nil", i, n, err, len(p))
		}
	}
	want := bytes.Join(steps, nil)
	waitFor(t, 5*time.Second, "every byte written", func() bool {
		_, got := rec.snapshot()
		return len(got) >= len(want)
	})
	writes, got := rec.snapshot()
	if !bytes.Equal(got, want) {
		t.Fatalf("wrote %d bytes out of order or altered; want %d", len(got), len(want))
	}
	for i, w := range writes {
		if !wholeFrames(w) {
			t.Fatalf("write %d (%d bytes) splits a frame", i, len(w))
		}
	}
}

// TestFrameCoalescer_GathersWhileWriting: small frames queued while a
// write is in progress leave together in the next write.
func TestFrameCoalescer_GathersWhileWriting(t *testing.T) {
	gate := make(chan struct{})
	rec := &recordingConn{gate: gate}
	c := coalesceFrames(rec, nil)
	defer c.Close()
	for i := 0; i < 4; i++ {
		if _, err := c.Write(yamuxHeader(2, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	close(gate) // the first write (holding at least the first ping) completes
	waitFor(t, 5*time.Second, "all pings written", func() bool {
		_, got := rec.snapshot()
		return len(got) == 4*yamuxHeaderSize
	})
	if writes, _ := rec.snapshot(); len(writes) > 2 {
		t.Fatalf("%d writes for 4 pings queued behind one write; want at most 2", len(writes))
	}
}

// TestFrameCoalescer_WriteErrorSticks: a failed write closes the
// connection, and the next Write reports the error.
func TestFrameCoalescer_WriteErrorSticks(t *testing.T) {
	boom := errors.New("boom")
	rec := &recordingConn{failWith: boom}
	c := coalesceFrames(rec, nil)
	defer c.Close()
	c.Write(yamuxHeader(2, 1))
	waitFor(t, 5*time.Second, "the connection closed after the failed write", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.closed
	})
	if _, err := c.Write(yamuxHeader(2, 2)); !errors.Is(err, boom) {
		t.Fatalf("Write after a failed write = %v; want %v", err, boom)
	}
	if _, err := c.Write(bytes.Repeat([]byte{1}, 32<<10)); !errors.Is(err, boom) {
		t.Fatalf("bulk Write after a failed write = %v; want %v", err, boom)
	}
}

// TestFrameCoalescer_CloseUnblocks: a writer blocked on a full queue
// returns once the coalescer is closed.
func TestFrameCoalescer_CloseUnblocks(t *testing.T) {
	rec := &recordingConn{gate: make(chan struct{})} // never opens
	c := coalesceFrames(rec, nil)
	done := make(chan error, 1)
	go func() {
		small := make([]byte, 8<<10)
		for {
			if _, err := c.Write(small); err != nil {
				done <- err
				return
			}
		}
	}()
	waitFor(t, 5*time.Second, "the queue to fill", func() bool {
		fc := c
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return len(fc.queue) >= fc.maxQueued
	})
	c.Close()
	if err := recvWithin(t, done, 5*time.Second, "blocked writer"); !errors.Is(err, errCoalescerClosed) {
		t.Fatalf("blocked Write after Close = %v; want errCoalescerClosed", err)
	}
	close(rec.gate) // let the flusher's stuck write return
}
