package rpc

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// recordingConn records each Write as one element.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

// TestFrameCoalescer_JoinsDataFrames: a data header and its body go out in
// one write; window updates, pings and empty data frames pass through.
func TestFrameCoalescer_JoinsDataFrames(t *testing.T) {
	rec := &recordingConn{}
	c := coalesceFrames(rec)
	steps := [][]byte{
		yamuxHeader(0, 5), []byte("hello"), // data frame: joined
		yamuxHeader(1, 1024), // window update: alone
		yamuxHeader(2, 7),    // ping: alone
		yamuxHeader(0, 0),    // data frame with only flags (FIN): alone
		yamuxHeader(0, 3), []byte("abc"),
	}
	for i, p := range steps {
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d = %d, %v; want %d, nil", i, n, err, len(p))
		}
	}
	want := [][]byte{
		append(yamuxHeader(0, 5), "hello"...),
		yamuxHeader(1, 1024),
		yamuxHeader(2, 7),
		yamuxHeader(0, 0),
		append(yamuxHeader(0, 3), "abc"...),
	}
	if len(rec.writes) != len(want) {
		t.Fatalf("got %d writes; want %d", len(rec.writes), len(want))
	}
	for i := range want {
		if !bytes.Equal(rec.writes[i], want[i]) {
			t.Errorf("write %d = %x; want %x", i, rec.writes[i], want[i])
		}
	}
}
