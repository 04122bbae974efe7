package structs

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

func TestAppendFrameJSON_MatchesEncodingJSON(t *testing.T) {
	cases := []StreamFrame{
		{},
		{Offset: 8, Data: []byte(`{"a":1}` + "\n"), File: "alloc/x.json"},
		{File: "alloc/logs/web.stdout.0", FileEvent: FileEventDeleted, Offset: 42},
		{File: "alloc/logs/web.stdout.0", FileEvent: FileEventTruncated},
		{Data: bytes.Repeat([]byte{0, 1, 2, 250}, 1000), Offset: 4000, File: "a/b"},
		{Data: []byte("x"), File: "we\"ird\\na<me>\x01é"},
		{Data: []byte("y"), DataConn: true}, // never on the HTTP API
	}
	// Every tail length of the vectorised base64, and a large block.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range append(seq(1, 200), 4095, 4096, 4097, 128<<10) {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		cases = append(cases, StreamFrame{Data: data, Offset: int64(n)})
	}
	for i, f := range cases {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&f); err != nil {
			t.Fatal(err)
		}
		got := AppendFrameJSON(nil, &f)
		if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
			t.Errorf("case %d: got %s; want %s", i, got, w)
		}
	}
}

// seq returns lo..hi.
func seq(lo, hi int) []int {
	var out []int
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out
}

func BenchmarkAppendFrameJSON(b *testing.B) {
	f := &StreamFrame{Offset: 65536, Data: bytes.Repeat([]byte("0123456789abcdef"), 4096), File: "alloc/logs/writer.stdout.3"}
	buf := make([]byte, 0, 100<<10)
	b.SetBytes(int64(len(f.Data)))
	for i := 0; i < b.N; i++ {
		buf = AppendFrameJSON(buf[:0], f)
	}
}
