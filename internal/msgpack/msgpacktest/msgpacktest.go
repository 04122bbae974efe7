// Package msgpacktest checks a hand-written message codec (rpc.FastMsg)
// against go-msgpack, the reference decoder, for the fuzz targets of the
// packages that have one. Only tests import it.
package msgpacktest

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"tether/internal/msgpack"
)

// FastMsg is rpc.FastMsg, which this package may not import.
type FastMsg interface {
	AppendMsgpack(b []byte) []byte
	DecodeMsgpack(body []byte) bool
}

var handle = msgpack.NewHandle()

// Encode encodes v with go-msgpack only.
func Encode(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, handle).Encode(v); err != nil {
		t.Fatalf("go-msgpack encode %T: %v", v, err)
	}
	return b
}

// Decode decodes b into v with go-msgpack only.
func Decode(b []byte, v any) error {
	return codec.NewDecoderBytes(b, handle).Decode(v)
}

// CheckDecode asserts what the fast decoder of T promises for any body:
// when it takes the body, go-msgpack decodes the body to the same value,
// the fast encoding of that value is go-msgpack's byte for byte, and
// decoding it again gives the value back; when it refuses the body, the
// value is unchanged. It never panics on any input (the caller's fuzz
// engine reports one).
func CheckDecode[T any, P interface {
	*T
	FastMsg
}](t testing.TB, body []byte) {
	t.Helper()
	fast := P(new(T))
	orig := append([]byte(nil), body...)
	if !fast.DecodeMsgpack(body) {
		if !reflect.DeepEqual(*fast, *new(T)) {
			t.Fatalf("%T: refused body %x but changed the value to %+v", fast, body, *fast)
		}
		return
	}
	if !bytes.Equal(body, orig) {
		t.Fatalf("%T: decoding modified its input", fast)
	}
	ref := P(new(T))
	if err := Decode(body, ref); err != nil {
		t.Fatalf("%T: fast decoder took %x, go-msgpack refused it: %v", fast, body, err)
	}
	if !reflect.DeepEqual(*fast, *ref) {
		t.Fatalf("%T: body %x\nfast       %+v\ngo-msgpack %+v", fast, body, *fast, *ref)
	}
	enc := fast.AppendMsgpack(nil)
	if want := Encode(t, fast); !bytes.Equal(enc, want) {
		t.Fatalf("%T %+v: fast encoding %x, go-msgpack %x", fast, *fast, enc, want)
	}
	again := P(new(T))
	if !again.DecodeMsgpack(enc) || !reflect.DeepEqual(*again, *fast) {
		t.Fatalf("%T: round trip of %+v gave %+v", fast, *fast, *again)
	}
}
