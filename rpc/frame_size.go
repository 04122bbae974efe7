package rpc

import "net"

// What a session keeps after a message is the size of the largest piece
// that went through it, not of the message: yamux's send loop copies each
// frame body into a buffer it never gives back, and crypto/tls reads each
// record into a buffer it keeps for the life of the connection. A node
// that once sent a 16 KiB registration would cost its server 16-32 KiB
// more for as long as it stays connected. So the pieces are kept small:
//
//   - writeMessage cuts a message of at most smallMessage bytes into
//     frames of at most smallFrameBody bytes. A larger message (a bulk
//     stream) keeps its large frames: cutting them costs a third of a
//     stream's throughput, and bulk bytes between a node and a server
//     take a data connection (dataconn.go), not the session;
//   - the frame coalescer cuts what it writes to a TLS connection into
//     records of at most smallRecord bytes, when the write is at most
//     smallMessage; the records of one write still leave in one socket
//     write (RecordBatcher).
//
// A 4 KiB stats answer then costs four frames and four records instead of
// one each: a few microseconds, against the kilobytes every idle session
// would otherwise keep.
const (
	smallFrameBody = 1 << 10
	smallMessage   = 16 << 10
	smallRecord    = 1 << 10
)

// writeMessage writes the whole of p to conn (a yamux stream) in frames
// of bounded size; see above.
func writeMessage(conn net.Conn, p []byte) (int, error) {
	if len(p) <= smallFrameBody || len(p) > smallMessage {
		return conn.Write(p)
	}
	n := 0
	for n < len(p) {
		m, err := conn.Write(p[n:min(len(p), n+smallFrameBody)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeRecords writes p to w, a tls.Conn over b, in records of at most
// smallRecord bytes, all in one socket write.
func writeRecords(w net.Conn, b *RecordBatcher, p []byte) (int, error) {
	n := 0
	err := b.Gather(func() error {
		for n < len(p) {
			m, err := w.Write(p[n:min(len(p), n+smallRecord)])
			n += m
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}
