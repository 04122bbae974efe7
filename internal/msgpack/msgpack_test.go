package msgpack

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

func encode(t *testing.T, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, NewHandle()).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAppendSameBytes: each primitive writes what go-msgpack writes for
// the same value, at every size boundary, and Reader reads it back.
func TestAppendSameBytes(t *testing.T) {
	for _, u := range []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64, math.MaxUint64} {
		got, want := AppendUint(nil, u), encode(t, u)
		if !bytes.Equal(got, want) {
			t.Errorf("AppendUint(%d) = %x; go-msgpack %x", u, got, want)
		}
		var back uint64
		if r := (Reader{b: got}); !r.Uint(&back) || back != u || len(r.b) != 0 {
			t.Errorf("Uint read %x as %d", got, back)
		}
	}
	for _, i := range []int64{0, 1, -1, -32, -33, 127, 128, -128, -129, 32767, 32768, -32768, -32769,
		math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxInt64, math.MinInt64} {
		got, want := AppendInt(nil, i), encode(t, i)
		if !bytes.Equal(got, want) {
			t.Errorf("AppendInt(%d) = %x; go-msgpack %x", i, got, want)
		}
		var back int64
		if r := (Reader{b: got}); !r.Int(&back) || back != i || len(r.b) != 0 {
			t.Errorf("Int read %x as %d", got, back)
		}
	}
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		s := strings.Repeat("x", n)
		got, want := AppendRaw(nil, s), encode(t, s)
		if !bytes.Equal(got, want) {
			t.Errorf("AppendRaw(%d bytes) = %x...; go-msgpack %x...", n, got[:min(8, len(got))], want[:min(8, len(want))])
		}
		var back string
		if r := (Reader{b: got}); !r.Str(&back) || back != s || len(r.b) != 0 {
			t.Errorf("Str did not read back %d bytes", n)
		}
		if got, want := AppendBytes(nil, []byte(s)), encode(t, []byte(s)); !bytes.Equal(got, want) {
			t.Errorf("AppendBytes(%d bytes) differs from go-msgpack", n)
		}
	}
	if got, want := AppendBytes(nil, nil), encode(t, []byte(nil)); !bytes.Equal(got, want) {
		t.Errorf("AppendBytes(nil) = %x; go-msgpack %x", got, want)
	}
	for _, n := range []int{0, 1, 15, 16, 65535, 65536} {
		m := make(map[int]bool, n)
		for i := range n {
			m[i] = true
		}
		got, want := AppendMapLen(nil, n), encode(t, m)
		if !bytes.HasPrefix(want, got) {
			t.Errorf("AppendMapLen(%d) = %x; go-msgpack's map starts %x", n, got, want[:min(5, len(want))])
		}
	}
}
