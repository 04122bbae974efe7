// Package msgpack holds what every hand-written message codec of Tether
// is built from: the go-msgpack settings all message bodies use
// (NewHandle), and the primitives that write and read exactly the bytes
// those settings produce. The transport (rpc) and the wire types
// (structs) both build on it, so that neither imports the other.
//
// Encoding by hand exists because go-msgpack's reflection took 2.5 µs of
// a forwarded call on each side. A hand-written encoding must be
// byte for byte what the handle writes (struct fields as a map keyed by
// field name, in the order of the names; old-spec raw strings; the
// smallest integer form), and a hand-written decoder must accept only
// shapes it knows and leave the rest to go-msgpack, which decides.
package msgpack

import (
	"encoding/binary"
	"math"
	"reflect"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// NewHandle returns the encoding of every message body. The settings are
// Nomad's (spec/transport-and-cluster.md §2.1), so bodies are byte-for-byte
// what a Nomad peer would send:
//
//   - RawToString: raw strings decoded into interface{} become string;
//   - WriteExt false: old-spec msgpack, strings and []byte both written as
//     raw, no str8 or bin types;
//   - TimeNotBuiltin: time.Time goes through MarshalBinary, so the location
//     offset survives and old and new go-msgpack versions agree;
//   - MapType map[string]interface{} for maps decoded into interface{}.
//
// Structs encode as maps keyed by field name (codec tags rename), nil
// pointers as nil (so map[string]*string keeps its nil values),
// time.Duration as int64 nanoseconds, and unknown fields are ignored when
// decoding.
func NewHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.RawToString = true
	h.WriteExt = false
	h.TimeNotBuiltin = true
	h.MapType = reflect.TypeOf(map[string]interface{}(nil))
	return h
}

// AppendMapLen appends the header of a map of n entries.
func AppendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

// AppendRawLen appends an old-spec raw header for n bytes.
func AppendRawLen(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, 0xa0|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
}

// AppendRaw appends s as a raw string.
func AppendRaw(b []byte, s string) []byte {
	return append(AppendRawLen(b, len(s)), s...)
}

// AppendBytes appends p as a raw string, a nil p as nil (as go-msgpack
// writes a nil []byte).
func AppendBytes(b, p []byte) []byte {
	if p == nil {
		return append(b, 0xc0)
	}
	return append(AppendRawLen(b, len(p)), p...)
}

// AppendBool appends v.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// AppendUint appends i in its smallest form.
func AppendUint(b []byte, i uint64) []byte {
	switch {
	case i <= math.MaxInt8:
		return append(b, byte(i))
	case i <= math.MaxUint8:
		return append(b, 0xcc, byte(i))
	case i <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(i))
	case i <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(i))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), i)
	}
}

// AppendInt appends i in its smallest signed form, as go-msgpack writes a
// signed integer (positive ones too).
func AppendInt(b []byte, i int64) []byte {
	switch {
	case i > math.MaxInt32:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(i))
	case i > math.MaxInt16:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(i))
	case i > math.MaxInt8:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(i))
	case i >= -32:
		return append(b, byte(i))
	case i >= math.MinInt8:
		return append(b, 0xd0, byte(i))
	case i >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(i))
	case i >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(i))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(i))
	}
}

// DecodeStruct decodes body, one map, into a copy of *v with field, and
// stores the copy in *v if every field was read: as with go-msgpack,
// fields the map does not name keep their values. field reads the value
// of key from r, or reports false for a key or value it does not know,
// and then *v is unchanged.
func DecodeStruct[T any](body []byte, v *T, field func(out *T, key []byte, r *Reader) bool) bool {
	out := *v
	if !DecodeMap(body, func(key []byte, r *Reader) bool { return field(&out, key, r) }) {
		return false
	}
	*v = out
	return true
}

// DecodeMap reads body as one map with raw keys and nothing after it,
// handing each value to field, which reads it or reports false.
func DecodeMap(body []byte, field func(key []byte, r *Reader) bool) bool {
	r := Reader{b: body}
	n, ok := r.mapLen()
	if !ok {
		return false
	}
	for i := 0; i < n; i++ {
		key, ok := r.raw()
		if !ok || key == nil || !field(key, &r) {
			return false
		}
	}
	return len(r.b) == 0
}

// Reader reads msgpack values off the front of a body. Each method reads
// one value into its argument and reports whether the value had a shape
// it takes; after false the Reader is spent.
type Reader struct{ b []byte }

func (r *Reader) take(n int) ([]byte, bool) {
	if n < 0 || len(r.b) < n {
		return nil, false
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p, true
}

func (r *Reader) mapLen() (int, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f), true
	case c == 0xde:
		p, ok := r.take(2)
		if !ok {
			return 0, false
		}
		return int(binary.BigEndian.Uint16(p)), true
	}
	return 0, false // map32 and the rest: the codec's
}

// raw reads a raw string, str or bin value; nil is a nil slice with ok.
func (r *Reader) raw() ([]byte, bool) {
	if len(r.b) == 0 {
		return nil, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	var n int
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		p, ok := r.take(1)
		if !ok {
			return nil, false
		}
		n = int(p[0])
	case c == 0xda || c == 0xc5:
		p, ok := r.take(2)
		if !ok {
			return nil, false
		}
		n = int(binary.BigEndian.Uint16(p))
	case c == 0xdb || c == 0xc6:
		p, ok := r.take(4)
		if !ok {
			return nil, false
		}
		n = int(binary.BigEndian.Uint32(p))
	case c == 0xc0:
		return nil, true
	default:
		return nil, false
	}
	p, ok := r.take(n)
	if ok && p == nil {
		p = []byte{}
	}
	return p, ok
}

// Bool reads a boolean.
func (r *Reader) Bool(v *bool) bool {
	if len(r.b) == 0 || r.b[0]&0xfe != 0xc2 {
		return false
	}
	*v = r.b[0] == 0xc3
	r.b = r.b[1:]
	return true
}

// Str reads a raw string (or nil, as "").
func (r *Reader) Str(s *string) bool {
	p, ok := r.raw()
	if ok {
		*s = string(p)
	}
	return ok
}

// Bytes reads a raw value into a copy, so the result does not alias the
// body (frame buffers are reused); nil stays nil.
func (r *Reader) Bytes(b *[]byte) bool {
	p, ok := r.raw()
	if !ok {
		return false
	}
	if p == nil {
		*b = nil
	} else {
		*b = append(make([]byte, 0, len(p)), p...)
	}
	return true
}

// number reads any msgpack integer as an int64 or, past its range, a
// uint64.
func (r *Reader) number() (i int64, u uint64, unsigned, ok bool) {
	if len(r.b) == 0 {
		return 0, 0, false, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	switch {
	case c <= 0x7f:
		return int64(c), 0, false, true
	case c >= 0xe0:
		return int64(int8(c)), 0, false, true
	}
	var size int
	switch c {
	case 0xcc, 0xd0:
		size = 1
	case 0xcd, 0xd1:
		size = 2
	case 0xce, 0xd2:
		size = 4
	case 0xcf, 0xd3:
		size = 8
	default:
		return 0, 0, false, false
	}
	p, ok := r.take(size)
	if !ok {
		return 0, 0, false, false
	}
	switch c {
	case 0xcc:
		return int64(p[0]), 0, false, true
	case 0xcd:
		return int64(binary.BigEndian.Uint16(p)), 0, false, true
	case 0xce:
		return int64(binary.BigEndian.Uint32(p)), 0, false, true
	case 0xcf:
		v := binary.BigEndian.Uint64(p)
		if v > math.MaxInt64 {
			return 0, v, true, true
		}
		return int64(v), 0, false, true
	case 0xd0:
		return int64(int8(p[0])), 0, false, true
	case 0xd1:
		return int64(int16(binary.BigEndian.Uint16(p))), 0, false, true
	case 0xd2:
		return int64(int32(binary.BigEndian.Uint32(p))), 0, false, true
	default:
		return int64(binary.BigEndian.Uint64(p)), 0, false, true
	}
}

// Uint reads a non-negative integer of any form.
func (r *Reader) Uint(u *uint64) bool {
	i, big, unsigned, ok := r.number()
	switch {
	case !ok:
		return false
	case unsigned:
		*u = big
	case i < 0:
		return false
	default:
		*u = uint64(i)
	}
	return true
}

// Int reads an integer of any form that fits an int64.
func (r *Reader) Int(i *int64) bool {
	v, _, unsigned, ok := r.number()
	if !ok || unsigned {
		return false
	}
	*i = v
	return true
}
