package rpc

import (
	"encoding/binary"
	"fmt"
)

// This file holds the message-level side of a Stream: raw messages (opaque
// bytes that are never msgpack-encoded) and messages received without
// decoding, which a relay passes on unchanged. Bulk file data travels this
// way: the node writes it straight from its read buffer, a server hands it
// to the HTTP writer or to the next hop without a decode and re-encode.

// RawHeaderSize is the headroom SendRawFrame needs in front of a payload.
const RawHeaderSize = frameHeaderSize

// Msg is one message received with RecvMsg. Its bytes belong to a pool:
// after Release (or SendMsg) they must not be used.
type Msg struct {
	kind byte
	body []byte
}

// Raw reports whether the message is raw bytes (SendRaw) rather than a
// msgpack value (Send).
func (m Msg) Raw() bool { return m.kind == kindRaw }

// Bytes returns the message body: the payload of a raw message, or the
// msgpack encoding of a value. It is valid until Release.
func (m Msg) Bytes() []byte { return m.body }

// Decode decodes a msgpack message into v (nil discards it). A raw message
// is copied into v if v is a *[]byte; decoding it into anything else is a
// protocol error.
func (m Msg) Decode(v any) error {
	if m.kind != kindRaw {
		return decode(m.body, v)
	}
	switch p := v.(type) {
	case nil:
		return nil
	case *[]byte:
		*p = append((*p)[:0], m.body...)
		return nil
	}
	return fmt.Errorf("%w: raw message where %T was expected", ErrProtocol, v)
}

// Release gives the message's buffer back. It is idempotent.
func (m *Msg) Release() {
	if m.body != nil {
		putBody(m.body)
		m.body = nil
	}
}

// SendRaw sends p as one raw message: the receiver gets the bytes as they
// are. It copies p behind the message header; SendRawFrame avoids the copy.
// An empty p sends nothing. Errors are those of Send.
func (s *Stream) SendRaw(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	return s.sendCopy(kindRaw, p)
}

// SendRawFrame sends frame[RawHeaderSize:] as one raw message. It writes
// the message header into frame[:RawHeaderSize], so a sender that reads
// its data in behind that headroom sends it with no copy. An empty payload
// sends nothing. Errors are those of Send.
func (s *Stream) SendRawFrame(frame []byte) error {
	if len(frame) < RawHeaderSize {
		return fmt.Errorf("rpc: %s: raw frame shorter than its header", s.method)
	}
	if len(frame) == RawHeaderSize {
		return nil
	}
	return s.sendFrame(kindRaw, frame)
}

// SendMsg passes a received message on unchanged, raw or not, and releases
// it. It is how a relay forwards a stream without decoding it.
func (s *Stream) SendMsg(m Msg) error {
	defer m.Release()
	return s.sendCopy(m.kind, m.body)
}

// sendCopy sends body as one message of the given kind, copied behind its
// header.
func (s *Stream) sendCopy(kind byte, body []byte) error {
	frame := getBody(frameHeaderSize + len(body))
	defer putBody(frame)
	copy(frame[frameHeaderSize:], body)
	return s.sendFrame(kind, frame)
}

// sendFrame fills in the header of frame (a message of the given kind
// behind frameHeaderSize bytes of headroom) and writes it. A body over
// the message limit fails before anything is written.
func (s *Stream) sendFrame(kind byte, frame []byte) error {
	n := len(frame) - frameHeaderSize
	if n > s.cfg.MaxMessageSize {
		return fmt.Errorf("%w (%d > %d bytes)", ErrMessageTooLarge, n, s.cfg.MaxMessageSize)
	}
	binary.BigEndian.PutUint32(frame[:4], uint32(n))
	frame[4] = kind
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.writeLocked(frame)
}
