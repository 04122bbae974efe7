package rpc

import (
	"math"

	"tether/internal/msgpack"
)

// FastMsg is a message type that encodes and decodes itself without
// go-msgpack's reflection, which took 2.5 µs of a forwarded call on each
// side. The messages of every forwarded small call implement it: rpc's
// request and response headers here, the node-specific request and the
// JSON answer in structs, built on tether/internal/msgpack. Any other
// type goes through go-msgpack.
//
// AppendMsgpack appends the message's encoding to b and returns it: it
// must be exactly the bytes msgpackHandle writes for the value (fields in
// the order of their names), so either side may use either path; a test
// beside each implementation checks that against go-msgpack.
//
// DecodeMsgpack decodes body into the message when body has a shape it
// knows and reports whether it did; on false the message is unchanged and
// the body goes to go-msgpack, which decides (another key, a type it does
// not expect). Decoded bytes must not alias body, whose buffer is reused.
//
// Both are called on the pointer a caller passed to Call, Send or Recv,
// through one interface check: no reflection and no allocation beyond
// what the message holds.
type FastMsg interface {
	AppendMsgpack(b []byte) []byte
	DecodeMsgpack(body []byte) bool
}

// AppendMsgpack implements FastMsg.
func (h *requestHeader) AppendMsgpack(b []byte) []byte {
	n := 2
	if h.Timeout != 0 {
		n++
	}
	if h.JSON {
		n++
	}
	b = msgpack.AppendMapLen(b, n)
	if h.JSON {
		b = msgpack.AppendRaw(b, "JSON")
		b = msgpack.AppendBool(b, true)
	}
	b = msgpack.AppendRaw(b, "Method")
	b = msgpack.AppendRaw(b, h.Method)
	b = msgpack.AppendRaw(b, "Seq")
	b = msgpack.AppendUint(b, h.Seq)
	if h.Timeout != 0 {
		b = msgpack.AppendRaw(b, "Timeout")
		b = msgpack.AppendInt(b, h.Timeout)
	}
	return b
}

// DecodeMsgpack implements FastMsg.
func (h *requestHeader) DecodeMsgpack(body []byte) bool {
	return msgpack.DecodeStruct(body, h, func(out *requestHeader, key []byte, r *msgpack.Reader) bool {
		switch string(key) {
		case "Method":
			return r.Str(&out.Method)
		case "Seq":
			return r.Uint(&out.Seq)
		case "Timeout":
			return r.Int(&out.Timeout)
		case "JSON":
			return r.Bool(&out.JSON)
		}
		return false
	})
}

// AppendMsgpack implements FastMsg.
func (h *responseHeader) AppendMsgpack(b []byte) []byte {
	n := 1
	if h.Error != "" {
		n++
	}
	if h.Code != 0 {
		n++
	}
	b = msgpack.AppendMapLen(b, n)
	if h.Code != 0 {
		b = msgpack.AppendRaw(b, "Code")
		b = msgpack.AppendInt(b, int64(h.Code))
	}
	if h.Error != "" {
		b = msgpack.AppendRaw(b, "Error")
		b = msgpack.AppendRaw(b, h.Error)
	}
	b = msgpack.AppendRaw(b, "Seq")
	return msgpack.AppendUint(b, h.Seq)
}

// DecodeMsgpack implements FastMsg.
func (h *responseHeader) DecodeMsgpack(body []byte) bool {
	return msgpack.DecodeStruct(body, h, func(out *responseHeader, key []byte, r *msgpack.Reader) bool {
		switch string(key) {
		case "Seq":
			return r.Uint(&out.Seq)
		case "Error":
			return r.Str(&out.Error)
		case "Code":
			var c int64
			if !r.Int(&c) || c < math.MinInt32 || c > math.MaxInt32 {
				return false
			}
			out.Code = int(c)
			return true
		}
		return false
	})
}

// appendFast appends v's encoding to b when v is a FastMsg.
func appendFast(b []byte, v any) ([]byte, bool) {
	if m, ok := v.(FastMsg); ok {
		return m.AppendMsgpack(b), true
	}
	return b, false
}

// decodeFast decodes body into v when v is a FastMsg and body has a shape
// it knows; it reports whether it did. On false v is unchanged.
func decodeFast(body []byte, v any) bool {
	m, ok := v.(FastMsg)
	return ok && m.DecodeMsgpack(body)
}
