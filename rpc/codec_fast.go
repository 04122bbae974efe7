package rpc

import (
	"encoding/binary"
	"math"

	"tether/structs"
)

// The messages of every forwarded small call (request and response
// headers, a node-specific request, a JSON answer) are encoded and decoded
// by hand: go-msgpack's reflection took 2.5 µs of a call on each side.
// The bytes are exactly those msgpackHandle writes, fields in the order
// of their names (codec_fast_test.go checks them against it), so either
// side may use either path. Decoding
// takes the shapes msgpackHandle writes; anything else (another key, a
// type it does not expect) goes to the codec, which decides.

// appendFast appends v's encoding to b when v is one of the hand-coded
// types.
func appendFast(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case *requestHeader:
		n := 2
		if v.Timeout != 0 {
			n++
		}
		b = append(b, 0x80|byte(n))
		b = appendRaw(b, "Method")
		b = appendRaw(b, v.Method)
		b = appendRaw(b, "Seq")
		b = appendUint(b, v.Seq)
		if v.Timeout != 0 {
			b = appendRaw(b, "Timeout")
			b = appendInt(b, v.Timeout)
		}
		return b, true
	case *responseHeader:
		n := 1
		if v.Error != "" {
			n++
		}
		if v.Code != 0 {
			n++
		}
		b = append(b, 0x80|byte(n))
		if v.Code != 0 {
			b = appendRaw(b, "Code")
			b = appendInt(b, int64(v.Code))
		}
		if v.Error != "" {
			b = appendRaw(b, "Error")
			b = appendRaw(b, v.Error)
		}
		b = appendRaw(b, "Seq")
		b = appendUint(b, v.Seq)
		return b, true
	case *structs.NodeSpecificRequest:
		b = append(b, 0x84)
		b = appendRaw(b, "AuthToken")
		b = appendRaw(b, v.AuthToken)
		b = appendRaw(b, "Namespace")
		b = appendRaw(b, v.Namespace)
		b = appendRaw(b, "NodeID")
		b = appendRaw(b, v.NodeID)
		b = appendRaw(b, "Region")
		b = appendRaw(b, v.Region)
		return b, true
	case *structs.JSONResponse:
		b = append(b, 0x81)
		b = appendRaw(b, "Body")
		if v.Body == nil {
			return append(b, 0xc0), true
		}
		b = appendRawLen(b, len(v.Body))
		return append(b, v.Body...), true
	}
	return b, false
}

// appendRawLen appends an old-spec raw header for n bytes.
func appendRawLen(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, 0xa0|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
}

func appendRaw(b []byte, s string) []byte {
	return append(appendRawLen(b, len(s)), s...)
}

func appendUint(b []byte, i uint64) []byte {
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

func appendInt(b []byte, i int64) []byte {
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

// decodeFast decodes body into v when v is one of the hand-coded types
// and body has a shape it knows; it reports whether it did. On false v
// is unchanged.
func decodeFast(body []byte, v any) bool {
	switch v := v.(type) {
	case *requestHeader:
		return decodeStruct(body, v, func(out *requestHeader, key []byte, r *msgReader) bool {
			switch string(key) {
			case "Method":
				return r.str(&out.Method)
			case "Seq":
				return r.uint(&out.Seq)
			case "Timeout":
				return r.int(&out.Timeout)
			}
			return false
		})
	case *responseHeader:
		return decodeStruct(body, v, func(out *responseHeader, key []byte, r *msgReader) bool {
			switch string(key) {
			case "Seq":
				return r.uint(&out.Seq)
			case "Error":
				return r.str(&out.Error)
			case "Code":
				var c int64
				if !r.int(&c) || c < math.MinInt32 || c > math.MaxInt32 {
					return false
				}
				out.Code = int(c)
				return true
			}
			return false
		})
	case *structs.NodeSpecificRequest:
		return decodeStruct(body, v, func(out *structs.NodeSpecificRequest, key []byte, r *msgReader) bool {
			switch string(key) {
			case "NodeID":
				return r.str(&out.NodeID)
			case "Region":
				return r.str(&out.Region)
			case "Namespace":
				return r.str(&out.Namespace)
			case "AuthToken":
				return r.str(&out.AuthToken)
			}
			return false
		})
	case *structs.JSONResponse:
		return decodeStruct(body, v, func(out *structs.JSONResponse, key []byte, r *msgReader) bool {
			return string(key) == "Body" && r.bytes(&out.Body)
		})
	}
	return false
}

// decodeStruct decodes body, one map, into a copy of *v with field, and
// stores the copy in *v if every field was read: as with go-msgpack,
// fields the map does not name keep their values.
func decodeStruct[T any](body []byte, v *T, field func(out *T, key []byte, r *msgReader) bool) bool {
	out := *v
	if !decodeMap(body, func(key []byte, r *msgReader) bool { return field(&out, key, r) }) {
		return false
	}
	*v = out
	return true
}

// decodeMap reads body as one map with raw keys and nothing after it,
// handing each value to field, which reads it or reports false.
func decodeMap(body []byte, field func(key []byte, r *msgReader) bool) bool {
	r := msgReader{b: body}
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

// msgReader reads msgpack values off the front of b.
type msgReader struct{ b []byte }

func (r *msgReader) take(n int) ([]byte, bool) {
	if n < 0 || len(r.b) < n {
		return nil, false
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p, true
}

func (r *msgReader) mapLen() (int, bool) {
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
func (r *msgReader) raw() ([]byte, bool) {
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

func (r *msgReader) str(s *string) bool {
	p, ok := r.raw()
	if ok {
		*s = string(p)
	}
	return ok
}

// bytes reads a raw value into a copy; nil stays nil.
func (r *msgReader) bytes(b *[]byte) bool {
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
func (r *msgReader) number() (i int64, u uint64, unsigned, ok bool) {
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

func (r *msgReader) uint(u *uint64) bool {
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

func (r *msgReader) int(i *int64) bool {
	v, _, unsigned, ok := r.number()
	if !ok || unsigned {
		return false
	}
	*i = v
	return true
}
