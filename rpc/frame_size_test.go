package rpc

import (
	"bytes"
	"net"
	"testing"
)

// writeRecorder is a net.Conn that records the size of every write and,
// if next is set, passes the bytes on to it.
type writeRecorder struct {
	net.Conn
	sizes []int
	buf   bytes.Buffer
	next  net.Conn
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	w.buf.Write(p)
	if w.next != nil {
		return w.next.Write(p)
	}
	return len(p), nil
}

func patterned(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}

func TestWriteMessage_FrameSizes(t *testing.T) {
	cases := []struct {
		size   int
		writes int // how many writes (frames) the message takes
		max    int // the largest write
	}{
		{0, 1, 0},
		{100, 1, 100},
		{smallFrameBody, 1, smallFrameBody},
		{smallFrameBody + 1, 2, smallFrameBody},
		{4 << 10, 4, smallFrameBody},
		{smallMessage, smallMessage / smallFrameBody, smallFrameBody},
		{smallMessage + 1, 1, smallMessage + 1}, // bulk: one write, large frames
		{256 << 10, 1, 256 << 10},
	}
	for _, tc := range cases {
		w := &writeRecorder{}
		p := patterned(tc.size)
		n, err := writeMessage(w, p)
		if err != nil || n != len(p) {
			t.Fatalf("size %d: writeMessage = %d, %v", tc.size, n, err)
		}
		if len(w.sizes) != tc.writes || max(0, maxOf(w.sizes)) != tc.max {
			t.Errorf("size %d: writes %v; want %d writes of at most %d", tc.size, w.sizes, tc.writes, tc.max)
		}
		if !bytes.Equal(w.buf.Bytes(), p) {
			t.Errorf("size %d: bytes differ", tc.size)
		}
	}
}

func TestWriteRecords_SmallRecordsOneSocketWrite(t *testing.T) {
	for _, size := range []int{smallRecord + 1, 3000, 8 << 10, smallMessage} {
		sink := &writeRecorder{}
		b := NewRecordBatcher(sink)
		tlsSide := &writeRecorder{next: b} // stands for the tls.Conn over b
		p := patterned(size)
		n, err := writeRecords(tlsSide, b, p)
		if err != nil || n != size {
			t.Fatalf("size %d: writeRecords = %d, %v", size, n, err)
		}
		if m := maxOf(tlsSide.sizes); m > smallRecord {
			t.Errorf("size %d: a record of %d bytes; want at most %d", size, m, smallRecord)
		}
		if len(sink.sizes) != 1 || !bytes.Equal(sink.buf.Bytes(), p) {
			t.Errorf("size %d: socket writes %v; want one write of the whole message", size, sink.sizes)
		}
	}
}

func maxOf(s []int) int {
	m := -1
	for _, v := range s {
		m = max(m, v)
	}
	return m
}
