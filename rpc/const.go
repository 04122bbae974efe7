package rpc

// Protocol bytes. The first byte of every TCP connection accepted by a
// Server selects the protocol spoken on the rest of it; inside a
// multiplexed session the first byte of every stream selects the mode of
// that stream (only ByteRPC and ByteStreaming are valid there). The values
// are Nomad's, so a packet capture reads the same.
const (
	// ByteRPC selects unary RPC: a sequence of request/response pairs.
	ByteRPC byte = 0x01

	// ByteRaft hands the connection to Config.RaftHandler.
	ByteRaft byte = 0x02

	// ByteTLS asks the server to run a TLS handshake (Config.TLSConfig)
	// and then read the protocol byte again, inside TLS. TLS inside TLS is
	// refused.
	ByteTLS byte = 0x04

	// ByteStreaming selects one streaming RPC.
	ByteStreaming byte = 0x05

	// ByteMultiplex starts a yamux session. The dialer is the yamux client.
	// Every stream either side opens starts with ByteRPC or ByteStreaming.
	ByteMultiplex byte = 0x06
)

// Frame kinds: the byte after the length prefix of every message. See
// spec.md, "Messages".
const (
	// kindData carries one msgpack object: a header, arguments, a reply or
	// a stream frame.
	kindData byte = 0x00

	// kindEnd is the last message a streaming handler sends. Its body is
	// a streamTrailer: empty Error for a clean end, else the handler's
	// error.
	kindEnd byte = 0x01

	// kindRaw carries opaque bytes (file data) that are not msgpack: the
	// receiver takes them as they are, with no decoding and no copy into
	// a value. See Stream.SendRaw.
	kindRaw byte = 0x02
)

const (
	// frameHeaderSize is the size of the length prefix plus the kind byte.
	frameHeaderSize = 5

	// maxMessageSizeLimit bounds Config.MaxMessageSize so that a length
	// always fits the 32-bit prefix and an int on every platform.
	maxMessageSizeLimit = 1 << 30

	// readBufferSize is the bufio buffer put in front of every stream and
	// raw connection, the same size net-rpc-msgpackrpc uses.
	readBufferSize = 4096

	// Status codes the rpc layer produces itself. They are HTTP codes so
	// that an HTTP layer can answer with them unchanged.
	codeNotFound        = 404
	codeRequestTooLarge = 413
	codeInternal        = 500
)
