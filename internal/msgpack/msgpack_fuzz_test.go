package msgpack

import (
	"bytes"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// refDecode decodes b, one value and nothing after it, into v with
// go-msgpack.
func refDecode(b []byte, v any) error {
	return codec.NewDecoderBytes(b, NewHandle()).Decode(v)
}

// FuzzReader: every primitive Reader takes a value with agrees with
// go-msgpack, the reference decoder, on that value, and what the Append
// functions write for it reads back the same.
func FuzzReader(f *testing.F) {
	for _, seed := range [][]byte{
		{0x00}, {0x7f}, {0xe0}, {0xcc, 0xff}, {0xcd, 0x01, 0x00}, {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, {0xc2}, {0xc3}, {0xc0},
		{0xa3, 'a', 'b', 'c'}, {0xd9, 0x01, 'x'}, {0xc4, 0x02, 1, 2}, {0xdb, 0, 0, 0, 1, 'z'},
		{0xdb, 0xff, 0xff, 0xff, 0xff},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var (
			u  uint64
			i  int64
			bl bool
			s  string
			p  []byte
		)
		if r := (Reader{b: body}); r.Uint(&u) && len(r.b) == 0 {
			var ref uint64
			if err := refDecode(body, &ref); err != nil || ref != u {
				t.Fatalf("Uint %x: fast %d, go-msgpack %d (%v)", body, u, ref, err)
			}
			if r := (Reader{b: AppendUint(nil, u)}); !r.Uint(&ref) || ref != u {
				t.Fatalf("AppendUint(%d) read back as %d", u, ref)
			}
		}
		if r := (Reader{b: body}); r.Int(&i) && len(r.b) == 0 {
			var ref int64
			if err := refDecode(body, &ref); err != nil || ref != i {
				t.Fatalf("Int %x: fast %d, go-msgpack %d (%v)", body, i, ref, err)
			}
			if r := (Reader{b: AppendInt(nil, i)}); !r.Int(&ref) || ref != i {
				t.Fatalf("AppendInt(%d) read back as %d", i, ref)
			}
		}
		if r := (Reader{b: body}); r.Bool(&bl) && len(r.b) == 0 {
			var ref bool
			if err := refDecode(body, &ref); err != nil || ref != bl {
				t.Fatalf("Bool %x: fast %v, go-msgpack %v (%v)", body, bl, ref, err)
			}
		}
		if r := (Reader{b: body}); r.Str(&s) && len(r.b) == 0 {
			var ref string
			if err := refDecode(body, &ref); err != nil || ref != s {
				t.Fatalf("Str %x: fast %q, go-msgpack %q (%v)", body, s, ref, err)
			}
			if r := (Reader{b: AppendRaw(nil, s)}); !r.Str(&ref) || ref != s {
				t.Fatalf("AppendRaw(%q) read back as %q", s, ref)
			}
		}
		if r := (Reader{b: body}); r.Bytes(&p) && len(r.b) == 0 {
			var ref []byte
			if err := refDecode(body, &ref); err != nil || !bytes.Equal(ref, p) || (ref == nil) != (p == nil) {
				t.Fatalf("Bytes %x: fast %x (nil %v), go-msgpack %x (nil %v, %v)", body, p, p == nil, ref, ref == nil, err)
			}
			if len(p) > 0 && len(body) > 0 && &p[0] == &body[len(body)-len(p)] {
				t.Fatalf("Bytes aliases its input")
			}
			if r := (Reader{b: AppendBytes(nil, p)}); !r.Bytes(&ref) || !bytes.Equal(ref, p) {
				t.Fatalf("AppendBytes(%x) read back as %x", p, ref)
			}
		}
		// A map of raw keys: DecodeMap takes it only whole, and go-msgpack
		// reads the same keys in the same order.
		var keys []string
		if DecodeMap(body, func(key []byte, r *Reader) bool {
			var v string
			keys = append(keys, string(key))
			return r.Str(&v)
		}) {
			var ref map[string]string
			if err := refDecode(body, &ref); err != nil {
				t.Fatalf("DecodeMap took %x, go-msgpack refused it: %v", body, err)
			}
			for _, k := range keys {
				if _, ok := ref[k]; !ok {
					t.Fatalf("DecodeMap %x: key %q, go-msgpack %v", body, k, ref)
				}
			}
		}
	})
}
