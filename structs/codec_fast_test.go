package structs

import (
	"bytes"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"tether/internal/msgpack"
)

// fastMsg is rpc.FastMsg, which this package may not import; the server
// package's tests check the real interface is met.
type fastMsg interface {
	AppendMsgpack(b []byte) []byte
	DecodeMsgpack(body []byte) bool
}

var handle = msgpack.NewHandle()

// codecBytes encodes v with go-msgpack only.
func codecBytes(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, handle).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

// codecDecode decodes with go-msgpack only.
func codecDecode(b []byte, v any) error {
	return codec.NewDecoderBytes(b, handle).Decode(v)
}

func fastValues(rng *rand.Rand) []fastMsg {
	strs := []string{"", "a", strings.Repeat("x", 31), strings.Repeat("y", 32), strings.Repeat("z", 255),
		strings.Repeat("w", 256), strings.Repeat("v", 65535), strings.Repeat("u", 65536), "global", "héllo"}
	pick := func() string { return strs[rng.Intn(len(strs))] }
	var out []fastMsg
	for i := 0; i < 300; i++ {
		out = append(out,
			&NodeSpecificRequest{NodeID: pick(), QueryOptions: QueryOptions{Region: pick(), Namespace: pick(), AuthToken: pick()}},
		)
	}
	return out
}

// TestFastCodec_SameBytes: the hand-coded encodings are go-msgpack's, byte
// for byte, and each path decodes the other's output to the same value.
func TestFastCodec_SameBytes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, v := range fastValues(rng) {
		fast := v.AppendMsgpack(nil)
		want := codecBytes(t, v)
		if !bytes.Equal(fast, want) {
			t.Fatalf("%T %+v:\nfast  %x\ncodec %x", v, v, fast, want)
		}
		fromFast := reflect.New(reflect.TypeOf(v).Elem()).Interface().(fastMsg)
		if !fromFast.DecodeMsgpack(want) {
			t.Fatalf("%T: fast decode refused go-msgpack's bytes %x", v, want)
		}
		fromCodec := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := codecDecode(fast, fromCodec); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromFast, fromCodec) {
			t.Fatalf("%T: fast decoded %+v, go-msgpack %+v", v, fromFast, fromCodec)
		}
	}
}

// TestFastCodec_OtherShapes: the fast decoders take what go-msgpack
// writes and what a newer peer writes for the same values, and leave the
// message unchanged on anything else.
func TestFastCodec_OtherShapes(t *testing.T) {
	type extraField struct {
		NodeID string
		Extra  string
	}
	withStr8 := func() []byte { // a newer peer writing str8 keys and values
		b := []byte{0x81, 0xd9, 6}
		b = append(b, "NodeID"...)
		return append(append(b, 0xd9, 3), "abc"...)
	}()
	withBin8 := append([]byte{0x81, 0xa6}, append([]byte("NodeID"), 0xc4, 2, 'h', 'i')...)
	tests := []struct {
		name string
		body []byte
		into fastMsg
		fast bool // the fast path takes it
		want fastMsg
	}{
		{"str8", withStr8, &NodeSpecificRequest{}, true, &NodeSpecificRequest{NodeID: "abc"}},
		{"bin8", withBin8, &NodeSpecificRequest{}, true, &NodeSpecificRequest{NodeID: "hi"}},
		{"unknown key", codecBytes(t, &extraField{NodeID: "x", Extra: "y"}), &NodeSpecificRequest{NodeID: "old"}, false, &NodeSpecificRequest{NodeID: "old"}},
		{"number where a string goes", []byte{0x81, 0xa6, 'N', 'o', 'd', 'e', 'I', 'D', 0x07}, &NodeSpecificRequest{NodeID: "n"}, false, &NodeSpecificRequest{NodeID: "n"}},
		{"truncated", codecBytes(t, &NodeSpecificRequest{NodeID: "abcdef"})[:20], &NodeSpecificRequest{}, false, &NodeSpecificRequest{}},
		{"trailing bytes", append(codecBytes(t, &NodeSpecificRequest{NodeID: "x"}), 0x01), &NodeSpecificRequest{}, false, &NodeSpecificRequest{}},
		{"empty", nil, &NodeSpecificRequest{}, false, &NodeSpecificRequest{}},
		{"keeps fields the map does not name", []byte{0x81, 0xa6, 'R', 'e', 'g', 'i', 'o', 'n', 0xa1, 'g'}, &NodeSpecificRequest{NodeID: "n"}, true,
			&NodeSpecificRequest{NodeID: "n", QueryOptions: QueryOptions{Region: "g"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.into.DecodeMsgpack(tt.body); got != tt.fast {
				t.Fatalf("fast path took it: %v, want %v", got, tt.fast)
			}
			if !reflect.DeepEqual(tt.into, tt.want) {
				t.Fatalf("decoded %+v, want %+v", tt.into, tt.want)
			}
		})
	}
}

func BenchmarkFastCodec(b *testing.B) {
	vals := []fastMsg{
		&NodeSpecificRequest{NodeID: "b37bd56d-ac4a-4bf6-9b14-08db95c9cf25", QueryOptions: QueryOptions{Region: "global"}},
	}
	for _, v := range vals {
		name := reflect.TypeOf(v).Elem().Name()
		enc := codecBytes(b, v)
		b.Run("encode/"+name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 2048)
			for i := 0; i < b.N; i++ {
				buf = v.AppendMsgpack(buf[:0])
			}
		})
		b.Run("decode/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				reflect.New(reflect.TypeOf(v).Elem()).Interface().(fastMsg).DecodeMsgpack(enc)
			}
		})
	}
}

// FuzzDecodeFast: the fast readers never panic, and whatever they accept
// go-msgpack decodes to the same value.
func FuzzDecodeFast(f *testing.F) {
	rng := rand.New(rand.NewSource(2))
	for _, v := range fastValues(rng)[:40] {
		if b := v.AppendMsgpack(nil); len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Add([]byte{0xde, 0xff, 0xff})
	f.Add([]byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xa6, 'N', 'o', 'd', 'e', 'I', 'D', 0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, newV := range []func() fastMsg{
			func() fastMsg { return &NodeSpecificRequest{} },
		} {
			fast := newV()
			if !fast.DecodeMsgpack(b) {
				continue
			}
			slow := newV()
			if err := codecDecode(b, slow); err != nil {
				t.Fatalf("fast path accepted %x as %T, go-msgpack refused it: %v", b, fast, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%x: fast %+v, go-msgpack %+v", b, fast, slow)
			}
		}
	})
}
