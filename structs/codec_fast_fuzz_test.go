package structs

import (
	"testing"

	"tether/internal/msgpack/msgpacktest"
)

// FuzzNodeSpecificRequestDecode: the hand-written decoder of the request
// of every forwarded node call agrees with go-msgpack on any body it takes
// (msgpacktest.CheckDecode).
func FuzzNodeSpecificRequestDecode(f *testing.F) {
	for _, v := range []*NodeSpecificRequest{
		{},
		{NodeID: "5f1c7a3e-2f0b-4c1e-9d55-0d3c1b2a4e6f", QueryOptions: QueryOptions{Region: "global", Namespace: "default", AuthToken: "secret"}},
		{NodeID: string(make([]byte, 40))},
	} {
		f.Add(v.AppendMsgpack(nil))
	}
	f.Add([]byte{0x81, 0xa6, 'N', 'o', 'd', 'e', 'I', 'D', 0xc0})
	f.Add([]byte{0xde, 0x00, 0x01, 0xd9, 0x06, 'R', 'e', 'g', 'i', 'o', 'n', 0xc4, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, body []byte) {
		msgpacktest.CheckDecode[NodeSpecificRequest](t, body)
	})
}
