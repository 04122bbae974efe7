package rpc

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

// roundTrip encodes v as a frame and decodes it into out.
func roundTrip(t *testing.T, v, out any) {
	t.Helper()
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	if err := e.appendFrame(kindData, v, defaultMaxMessageSize); err != nil {
		t.Fatalf("encode: %v", err)
	}
	if err := readDataFrame(bufio.NewReader(bytes.NewReader(e.bytes())), defaultMaxMessageSize, out); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

func TestCodec_RoundTrip(t *testing.T) {
	when := time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	cases := []struct {
		name string
		in   any
		out  any // pointer to a zero value of the decode type
	}{
		{"nil-valued map entries", &map[string]*string{"a": strPtr("x"), "b": nil}, new(map[string]*string)},
		{"duration", &struct{ D time.Duration }{90 * time.Second}, new(struct{ D time.Duration })},
		{"bytes", &struct{ B []byte }{[]byte{0, 0xc1, 0xff, 'a'}}, new(struct{ B []byte })},
		{"empty and nil bytes", &struct{ E, N []byte }{E: []byte{}}, new(struct{ E, N []byte })},
		{"time with zone", &struct{ T time.Time }{when}, new(struct{ T time.Time })},
		{"zero time", &struct{ T time.Time }{}, new(struct{ T time.Time })},
		{"nested structs", &echoArgs{Nested: &inner{Name: "n", Tags: []string{"x"}}, List: []inner{{Count: 2}}},
			new(echoArgs)},
		{"large bytes", &struct{ B []byte }{bytes.Repeat([]byte{7}, 1<<20)}, new(struct{ B []byte })},
		{"response header with error", &responseHeader{Seq: 9, Error: `Unknown node "x"`, Code: 404}, new(responseHeader)},
		{"stream trailer clean", &streamTrailer{}, new(streamTrailer)},
		{"int keys", &map[int]string{1: "a"}, new(map[int]string)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip(t, tc.in, tc.out)
			got := reflect.ValueOf(tc.out).Elem().Interface()
			want := reflect.ValueOf(tc.in).Elem().Interface()
			if tt, ok := want.(struct{ T time.Time }); ok {
				if !got.(struct{ T time.Time }).T.Equal(tt.T) {
					t.Errorf("got %v; want %v", got, want)
				}
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v; want %#v", got, want)
			}
		})
	}
}

func TestCodec_Interface(t *testing.T) {
	// Free-form fields decode strings as string and maps as
	// map[string]interface{}, as in Nomad.
	in := map[string]any{"s": "text", "b": []byte("raw"), "m": map[string]any{"k": 1}}
	var out any
	roundTrip(t, &in, &out)
	m, ok := out.(map[string]any)
	if !ok {
		t.Fatalf("decoded %T; want map[string]interface{}", out)
	}
	if m["s"] != "text" || m["b"] != "raw" {
		t.Errorf("s, b = %#v, %#v; want strings", m["s"], m["b"])
	}
	if _, ok := m["m"].(map[string]any); !ok {
		t.Errorf("nested map decoded as %T", m["m"])
	}
}

func TestCodec_WireBytes(t *testing.T) {
	// Old-spec msgpack: []byte is written as raw str, never bin.
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	if err := e.appendFrame(kindData, []byte("ab"), 100); err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 0, 0, 3, kindData, 0xa2, 'a', 'b'}
	if !bytes.Equal(e.bytes(), want) {
		t.Errorf("frame = % x; want % x", e.bytes(), want)
	}
}

func TestCodec_Limits(t *testing.T) {
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	if err := e.appendFrame(kindData, make([]byte, 100), 50); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("encode oversized = %v; want ErrMessageTooLarge", err)
	}
	if len(e.bytes()) != 0 {
		t.Errorf("oversized message left %d bytes in the output", len(e.bytes()))
	}
	cases := []struct {
		name  string
		frame []byte
		is    error
	}{
		{"too large", []byte{0, 0, 1, 0, 0}, ErrMessageTooLarge},
		{"empty", []byte{0, 0, 0, 0, 0}, ErrProtocol},
		{"bad kind", []byte{0, 0, 0, 1, 7, 0xc0}, ErrProtocol},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readFrame(bufio.NewReader(bytes.NewReader(tc.frame)), 100)
			if !errors.Is(err, tc.is) {
				t.Errorf("readFrame = %v; want %v", err, tc.is)
			}
		})
	}
}

func TestRemoteError_Is(t *testing.T) {
	cases := []struct {
		name   string
		err    *RemoteError
		target error
		want   bool
	}{
		{"unknown method", unknownMethodError("X.Y"), ErrUnknownMethod, true},
		{"too large", tooLargeError(10, 5), ErrMessageTooLarge, true},
		{"same code and message", &RemoteError{403, "Permission denied"}, &codedError{403, "Permission denied"}, true},
		{"other code", &RemoteError{500, "Permission denied"}, &codedError{403, "Permission denied"}, false},
		{"plain error", &RemoteError{0, "x"}, errors.New("x"), false},
		{"404 is not unknown method", &RemoteError{404, "Unknown node"}, ErrUnknownMethod, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, tc.target); got != tc.want {
				t.Errorf("errors.Is(%v, %v) = %v; want %v", tc.err, tc.target, got, tc.want)
			}
		})
	}
	if !errors.Is(ErrTimeout, ErrTimeout) || !errors.Is(ErrTimeout, contextDeadlineExceeded()) {
		t.Errorf("ErrTimeout does not match context.DeadlineExceeded")
	}
}
