package rpc

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"tether/internal/msgpack"
)

// msgpackHandle is the encoding of every message body: Nomad's settings
// (see msgpack.NewHandle), shared with the hand-written codecs.
var msgpackHandle = msgpack.NewHandle()

// encoder encodes values into a reusable buffer that starts with room for
// the frame header, so a whole message goes out in one Write.
type encoder struct {
	enc *codec.Encoder
	buf []byte // scratch for the msgpack body
	out []byte // frame header + body
}

var encoderPool = sync.Pool{New: func() any {
	e := &encoder{buf: make([]byte, 0, 512)}
	e.enc = codec.NewEncoderBytes(&e.buf, msgpackHandle)
	return e
}}

func getEncoder() *encoder { return encoderPool.Get().(*encoder) }

// putEncoder returns e to the pool unless it grew past a typical stream
// frame (64 KiB of data plus framing); the pool is emptied by the GC.
func putEncoder(e *encoder) {
	if cap(e.buf) > 256<<10 || cap(e.out) > 256<<10 {
		return
	}
	e.out = e.out[:0]
	encoderPool.Put(e)
}

// reset empties the output.
func (e *encoder) reset() { e.out = e.out[:0] }

// appendFrame encodes v and appends one frame of the given kind to the
// output. It fails with ErrMessageTooLarge, before anything is appended,
// when the body is larger than max.
func (e *encoder) appendFrame(kind byte, v any, max int) error {
	if b, ok := appendFast(e.buf[:0], v); ok {
		e.buf = b
	} else {
		e.enc.ResetBytes(&e.buf)
		if err := e.enc.Encode(v); err != nil {
			return fmt.Errorf("rpc: encode %T: %w", v, err)
		}
	}
	if len(e.buf) > max {
		return fmt.Errorf("%w (%d > %d bytes)", ErrMessageTooLarge, len(e.buf), max)
	}
	var hdr [frameHeaderSize]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(e.buf)))
	hdr[4] = kind
	e.out = append(e.out, hdr[:]...)
	e.out = append(e.out, e.buf...)
	return nil
}

// bytes returns the encoded output.
func (e *encoder) bytes() []byte { return e.out }

// decode decodes one msgpack body into v. A nil v discards the body.
func decode(body []byte, v any) error {
	if v == nil || decodeFast(body, v) {
		return nil
	}
	dec := decoderPool.Get().(*codec.Decoder)
	dec.ResetBytes(body)
	err := dec.Decode(v)
	dec.ResetBytes(empty)
	decoderPool.Put(dec)
	if err != nil {
		return fmt.Errorf("rpc: decode %T: %w", v, err)
	}
	return nil
}

var empty = []byte{}

var decoderPool = sync.Pool{New: func() any {
	return codec.NewDecoderBytes(empty, msgpackHandle)
}}

// readerPool recycles the read buffers of unary exchanges, which are
// short-lived; a Stream keeps its reader.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// putReader returns br to the pool; nothing may use it afterwards.
func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

// frameError describes an oversized frame a reader refused: its declared
// size, so the reader can discard it if it wants to answer.
type frameError struct {
	size, limit int
}

func (e *frameError) Error() string {
	return fmt.Sprintf("%s (%d > %d bytes)", ErrMessageTooLarge, e.size, e.limit)
}

func (e *frameError) Unwrap() error { return ErrMessageTooLarge }

// StatusCode makes a handler that returns the error (from Stream.Recv)
// report 413 to its caller.
func (e *frameError) StatusCode() int { return codeRequestTooLarge }

// readFrame reads one frame into a freshly allocated body (decoded values may
// alias it: go-msgpack decodes extensions in place). A zero length is a protocol error; a length over max returns a
// *frameError (which matches ErrMessageTooLarge) without reading the body.
// A clean io.EOF is returned only when no byte of the frame was read.
func readFrame(r *bufio.Reader, max int) (kind byte, body []byte, err error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	kind = hdr[4]
	if size == 0 {
		return 0, nil, fmt.Errorf("%w: empty message", ErrProtocol)
	}
	if uint64(size) > uint64(max) {
		return kind, nil, &frameError{size: int(min(uint64(size), uint64(^uint(0)>>1))), limit: max}
	}
	if kind != kindData && kind != kindEnd && kind != kindRaw {
		return 0, nil, fmt.Errorf("%w: unknown frame kind 0x%02x", ErrProtocol, kind)
	}
	if body, err = readFrameBody(r, int(size)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return kind, body, nil
}

// bodyChunk is the most of a body readFrameBody allocates before its bytes
// arrive: above the bulk messages of file reads and log streams (64 and
// 128 KiB of data), so that they are read in one piece.
const bodyChunk = 256 << 10

// readFrameBody reads a body of size bytes. A large body grows as its bytes
// arrive, doubling up to size, so that a length prefix alone never buys
// its size in memory: a peer that announces MaxMessageSize and sends
// nothing more costs bodyChunk (256 KiB), not 4 MiB a connection. A pooled buffer
// large enough is used whole or grows in place, without a copy.
func readFrameBody(r *bufio.Reader, size int) ([]byte, error) {
	body := firstBody(size)
	for n := 0; ; {
		m, err := io.ReadFull(r, body[n:])
		n += m
		if err != nil {
			putBody(body)
			return nil, err
		}
		if n == size {
			return body, nil
		}
		next := min(size, 2*len(body))
		if cap(body) >= next {
			body = body[:next]
			continue
		}
		grown := getBody(next)
		copy(grown, body[:n])
		putBody(body)
		body = grown
	}
}

// Bodies of bulk messages (file data) come from a pool: a stream of
// 128 KiB messages would otherwise allocate, and collect, one buffer per
// message. A body goes back once it is decoded (decoding copies).
const pooledBodyMin = 16 << 10

var bodyPool = sync.Pool{New: func() any { return new([]byte) }}

// getBody returns a buffer of length n, pooled when n is large.
func getBody(n int) []byte {
	if n < pooledBodyMin {
		return make([]byte, n)
	}
	bp := bodyPool.Get().(*[]byte)
	if cap(*bp) < n {
		return make([]byte, n)
	}
	return (*bp)[:n]
}

// firstBody is the buffer readFrameBody starts a body of size bytes in: a
// pooled one of the whole size when the pool holds one that large (memory
// already held: the steady state of a stream of bulk messages), else one
// of at most bodyChunk bytes.
func firstBody(size int) []byte {
	if size < pooledBodyMin {
		return make([]byte, size)
	}
	bp := bodyPool.Get().(*[]byte)
	switch {
	case cap(*bp) >= size:
		return (*bp)[:size]
	case cap(*bp) >= bodyChunk:
		return (*bp)[:bodyChunk]
	}
	return make([]byte, min(size, bodyChunk))
}

// putBody returns a large body to the pool; small ones are left to the
// collector. The caller must not use b afterwards.
func putBody(b []byte) {
	if cap(b) < pooledBodyMin || cap(b) > 1<<20 {
		return
	}
	b = b[:0]
	bodyPool.Put(&b)
}

// readDataFrame reads a frame that must be a data frame and decodes it into
// v.
func readDataFrame(r *bufio.Reader, max int, v any) error {
	kind, body, err := readFrame(r, max)
	if err != nil {
		return err
	}
	if kind != kindData {
		return fmt.Errorf("%w: unexpected frame kind 0x%02x", ErrProtocol, kind)
	}
	return decode(body, v)
}

// discardFrame throws away the body of an oversized frame so that the
// sender, blocked on flow control, can finish writing it and read the
// answer. It gives up at the deadline.
func discardFrame(r *bufio.Reader, fe *frameError, setReadDeadline func(time.Time), timeout time.Duration) error {
	setReadDeadline(time.Now().Add(timeout))
	_, err := io.CopyN(io.Discard, r, int64(fe.size))
	return err
}
