package rpc

import (
	"bytes"
	"math"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// codecBytes encodes v with go-msgpack and msgpackHandle, never the fast
// path.
func codecBytes(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

// codecDecode decodes with go-msgpack only.
func codecDecode(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := codec.NewDecoderBytes(b, msgpackHandle).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func fastValues(rng *rand.Rand) []any {
	strs := []string{"", "a", strings.Repeat("x", 31), strings.Repeat("y", 32), strings.Repeat("z", 255),
		strings.Repeat("w", 256), strings.Repeat("v", 65535), strings.Repeat("u", 65536), "ClientStats.Stats", "héllo"}
	uints := []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64, math.MaxUint64}
	ints := []int64{0, 1, -1, -32, -33, 127, 128, -128, -129, 32767, 32768, -32768, -32769,
		math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxInt64, math.MinInt64, 29999999999}
	pick := func(xs []string) string { return xs[rng.Intn(len(xs))] }
	var out []any
	for i := 0; i < 300; i++ {
		body := []byte(pick(strs))
		switch rng.Intn(4) {
		case 0:
			body = nil
		case 1:
			body = []byte{}
		}
		out = append(out,
			&JSON{Body: body},
			&JSON{Body: body, Via: pick(strs), Hops: int(ints[rng.Intn(len(ints))] % math.MaxInt32)},
			&requestHeader{Method: pick(strs), Seq: uints[rng.Intn(len(uints))], Timeout: ints[rng.Intn(len(ints))], JSON: rng.Intn(2) == 0},
			&responseHeader{Seq: uints[rng.Intn(len(uints))], Error: pick(strs), Code: int(ints[rng.Intn(len(ints))] % math.MaxInt32)},
		)
	}
	return out
}

// TestFastCodec_SameBytes: the hand-coded header encodings are go-msgpack's, byte
// for byte, and each path decodes the other's output to the same value.
func TestFastCodec_SameBytes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, v := range fastValues(rng) {
		fast, ok := appendFast(nil, v)
		if !ok {
			t.Fatalf("%T has no fast path", v)
		}
		want := codecBytes(t, v)
		if !bytes.Equal(fast, want) {
			t.Fatalf("%T %+v:\nfast  %x\ncodec %x", v, v, fast, want)
		}
		fromFast := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if !decodeFast(want, fromFast) {
			t.Fatalf("%T: fast decode refused go-msgpack's bytes %x", v, want)
		}
		fromCodec := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		codecDecode(t, fast, fromCodec)
		if !reflect.DeepEqual(fromFast, fromCodec) {
			t.Fatalf("%T: fast decoded %+v, go-msgpack %+v", v, fromFast, fromCodec)
		}
	}
}

// TestFastCodec_OtherShapes: bytes the fast decoder does not know are
// left to go-msgpack, which decodes them as before; broken bytes fail.
func TestFastCodec_OtherShapes(t *testing.T) {
	type extraField struct {
		Seq   uint64
		Extra string
	}
	type asString struct {
		Seq string
	}
	withStr8 := func() []byte { // a newer peer writing str8 keys and values
		b := []byte{0x81, 0xd9, 6}
		b = append(b, "Method"...)
		return append(append(b, 0xd9, 3), "abc"...)
	}()
	jsonStr8 := append([]byte{0x81, 0xd9, 4}, append([]byte("Body"), 0xd9, 3, 'a', 'b', 'c')...)
	jsonBin8 := append([]byte{0x81, 0xa4}, append([]byte("Body"), 0xc4, 2, 'h', 'i')...)
	type asMap32 struct{ Seq uint64 }
	map32 := append([]byte{0xdf, 0, 0, 0, 1}, codecBytes(t, &asMap32{Seq: 7})[1:]...)
	tests := []struct {
		name    string
		body    []byte
		into    any
		fast    bool // the fast path takes it
		want    any
		wantErr bool
	}{
		{"unknown key", codecBytes(t, &extraField{Seq: 7, Extra: "x"}), &responseHeader{}, false, &responseHeader{Seq: 7}, false},
		{"string where a number goes", codecBytes(t, &asString{Seq: "7"}), &responseHeader{}, false, nil, true},
		{"str8", withStr8, &requestHeader{}, true, &requestHeader{Method: "abc"}, false},
		{"map32", map32, &responseHeader{}, false, &responseHeader{Seq: 7}, false},
		{"keeps fields the map does not name", codecBytes(t, &responseHeader{Seq: 7}), &responseHeader{Error: "kept"}, true, &responseHeader{Seq: 7, Error: "kept"}, false},
		{"truncated", codecBytes(t, &responseHeader{Seq: 7, Error: "boom"})[:5], &responseHeader{}, false, nil, true},
		{"trailing bytes", append(codecBytes(t, &responseHeader{Seq: 7}), 0x01), &responseHeader{}, false, &responseHeader{Seq: 7}, false},
		{"empty", nil, &responseHeader{}, false, nil, true},
		{"negative seq", []byte{0x81, 0xa3, 'S', 'e', 'q', 0xff}, &responseHeader{}, false, nil, true},
		{"JSON flag", codecBytes(t, &requestHeader{Method: "m", JSON: true}), &requestHeader{}, true, &requestHeader{Method: "m", JSON: true}, false},
		{"JSON flag not a bool", []byte{0x81, 0xa4, 'J', 'S', 'O', 'N', 0x01}, &requestHeader{}, false, nil, false},
		{"JSON str8 body", jsonStr8, &JSON{}, true, &JSON{Body: []byte("abc")}, false},
		{"JSON bin8 body", jsonBin8, &JSON{}, true, &JSON{Body: []byte("hi")}, false},
		{"JSON trailing bytes", append(codecBytes(t, &JSON{Body: []byte("x")}), 0x01), &JSON{}, false, &JSON{Body: []byte("x")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probe := reflect.New(reflect.TypeOf(tt.into).Elem()).Interface()
			if got := decodeFast(tt.body, probe); got != tt.fast {
				t.Fatalf("fast path took it: %v, want %v", got, tt.fast)
			}
			err := decode(tt.body, tt.into)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decode error %v, want error %v", err, tt.wantErr)
			}
			if tt.want != nil && !reflect.DeepEqual(tt.into, tt.want) {
				t.Fatalf("decoded %+v, want %+v", tt.into, tt.want)
			}
		})
	}
}

func BenchmarkFastCodec(b *testing.B) {
	vals := []any{
		&requestHeader{Method: "ClientStats.Stats", Seq: 12345, Timeout: 29999999999, JSON: true},
		&responseHeader{Seq: 12345},
		&JSON{Body: make([]byte, 931)},
	}
	for _, v := range vals {
		name := reflect.TypeOf(v).Elem().Name()
		enc := codecBytes(b, v)
		b.Run("encode/"+name, func(b *testing.B) {
			e := getEncoder()
			defer putEncoder(e)
			for i := 0; i < b.N; i++ {
				e.reset()
				e.appendFrame(kindData, v, 1<<20)
			}
		})
		b.Run("decode/"+name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				decode(enc, reflect.New(reflect.TypeOf(v).Elem()).Interface())
			}
		})
	}
}

// FuzzDecodeFast: the fast header readers never panic, and whatever it accepts
// go-msgpack decodes to the same value.
func FuzzDecodeFast(f *testing.F) {
	rng := rand.New(rand.NewSource(2))
	for _, v := range fastValues(rng)[:40] {
		b, _ := appendFast(nil, v)
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Add([]byte{0x81, 0xa3, 'S', 'e', 'q', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xde, 0xff, 0xff})
	f.Add([]byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, newV := range []func() any{
			func() any { return &requestHeader{} },
			func() any { return &responseHeader{} },
			func() any { return &JSON{} },
		} {
			fast := newV()
			if !decodeFast(b, fast) {
				continue
			}
			slow := newV()
			if err := codec.NewDecoderBytes(b, msgpackHandle).Decode(slow); err != nil {
				t.Fatalf("fast path accepted %x as %T, go-msgpack refused it: %v", b, fast, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%x: fast %+v, go-msgpack %+v", b, fast, slow)
			}
		}
	})
}

// TestFastCodec_JSONBodyIsCopied: a decoded JSON body does not alias the
// frame buffer, which is reused.
func TestFastCodec_JSONBodyIsCopied(t *testing.T) {
	b := (&JSON{Body: []byte("hello")}).AppendMsgpack(nil)
	var out JSON
	if !out.DecodeMsgpack(b) {
		t.Fatal("fast path refused its own bytes")
	}
	for i := range b {
		b[i] = 0
	}
	if string(out.Body) != "hello" {
		t.Fatalf("Body changed with the buffer: %q", out.Body)
	}
}
