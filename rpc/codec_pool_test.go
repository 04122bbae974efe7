package rpc

import (
	"bytes"
	"testing"
)

// TestDecode_CopiesBytes guards the body pool: a decoded []byte must not
// alias the message body, which is reused once decoded.
func TestDecode_CopiesBytes(t *testing.T) {
	type frame struct {
		Data []byte
		File string
	}
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	want := bytes.Repeat([]byte("abc"), pooledBodyMin)
	if err := e.appendFrame(kindData, &frame{Data: want, File: "f"}, 1<<22); err != nil {
		t.Fatal(err)
	}
	body := append([]byte(nil), e.bytes()[frameHeaderSize:]...)
	var got frame
	if err := decode(body, &got); err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 0xff // the pool hands this buffer to the next message
	}
	if !bytes.Equal(got.Data, want) || got.File != "f" {
		t.Fatalf("decoded data changed with its source buffer; want a copy")
	}
	// A reused destination slice with room is filled, not aliased.
	got2 := frame{Data: make([]byte, 0, len(want))}
	if err := decode(append([]byte(nil), e.bytes()[frameHeaderSize:]...), &got2); err != nil || !bytes.Equal(got2.Data, want) {
		t.Fatalf("decode into a reused slice = %v", err)
	}
}
