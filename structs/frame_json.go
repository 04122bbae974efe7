package structs

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"

	// Byte for byte encoding/base64's standard encoding, with AVX2: 15
	// times the speed here, and base64 was most of what a node spent on
	// a framed log stream.
	"github.com/segmentio/asm/base64"
)

// AppendFrameJSON appends f encoded as encoding/json would encode a
// StreamFrame (fields in order, empty ones left out, Data in
// standard base64), without reflection: bulk log streams spend their time
// here.
func AppendFrameJSON(b []byte, f *StreamFrame) []byte {
	b = append(b, '{')
	first := true
	sep := func() {
		if !first {
			b = append(b, ',')
		}
		first = false
	}
	if f.Offset != 0 {
		sep()
		b = append(b, `"Offset":`...)
		b = strconv.AppendInt(b, f.Offset, 10)
	}
	if len(f.Data) > 0 {
		sep()
		b = append(b, `"Data":"`...)
		n := base64.StdEncoding.EncodedLen(len(f.Data))
		b = slices.Grow(b, n+1)
		start := len(b)
		b = b[:start+n]
		base64.StdEncoding.Encode(b[start:], f.Data)
		b = append(b, '"')
	}
	if f.File != "" {
		sep()
		b = append(b, `"File":`...)
		b = appendJSONString(b, f.File)
	}
	if f.FileEvent != "" {
		sep()
		b = append(b, `"FileEvent":`...)
		b = appendJSONString(b, f.FileEvent)
	}
	if f.TaskEnd != nil {
		sep()
		b = append(b, `"TaskEnd":`...)
		b = AppendTaskEndJSON(b, f.TaskEnd)
	}
	return append(b, '}')
}

// AppendTaskEndJSON appends e as encoding/json encodes it (once per
// stream: no need for speed).
func AppendTaskEndJSON(b []byte, e *TaskEnd) []byte {
	j, err := json.Marshal(e)
	if err != nil {
		return append(b, "null"...) // a TaskEnd always encodes
	}
	return append(b, j...)
}

// AppendJSONString appends s (a string or bytes) as a JSON string, as
// encoding/json does with HTML escaping off.
func AppendJSONString[T string | []byte](b []byte, s T) []byte { return appendJSONString(b, s) }

// appendJSONString appends s as a JSON string the way encoding/json does
// with HTML escaping off: quotes, backslashes and control characters
// escaped, U+2028 and U+2029 escaped, invalid UTF-8 replaced.
func appendJSONString[T string | []byte](b []byte, s T) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		// At most one rune's bytes: converting them does not allocate.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
