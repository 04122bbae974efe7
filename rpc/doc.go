// Package rpc is Tether's transport: the RPC port with first-byte protocol
// selection, yamux sessions that both ends call over, unary and streaming
// RPC encoded with msgpack, a session pool for server-to-server
// forwarding, and data connections for bulk transfers. It knows nothing
// about nodes or allocations and imports no other package of this module
// but tether/internal/msgpack.
//
// # Shape
//
// A node agent dials out to a server and gets a *Session (Dial). The server
// accepts it (Server.Serve, Server.OnSession) and keeps the *Session. From
// then on both ends are equal: either may Call a unary method or
// OpenStream a streaming one, and either may Serve its own *Mux on the
// session, so the server reaches the node down the connection the node
// opened.
//
// Methods are registered on a Mux:
//
//	mux := rpc.NewMux()
//	rpc.HandleUnary(mux, "ClientStats.Stats", func(ctx context.Context, req *StatsRequest, resp *StatsResponse) error {
//		resp.CPU = readCPU()
//		return nil
//	})
//	mux.HandleStream("FileSystem.Logs", func(ctx context.Context, s *rpc.Stream) error {
//		var args LogsRequest
//		if err := s.Recv(&args); err != nil { // the OpenStream args
//			return err
//		}
//		for frame := range follow(ctx, args) {
//			if err := s.Send(frame); err != nil {
//				return err
//			}
//		}
//		return nil // the caller's Recv returns io.EOF
//	})
//
// and called from the other end:
//
//	var resp StatsResponse
//	err := sess.Call(ctx, "ClientStats.Stats", &StatsRequest{}, &resp)
//
// Unary calls reuse streams: a stream whose call ended cleanly stays on
// its session's idle list (at most 64, for at most 30 s unused) and
// carries the session's next call, so a call costs one write each way
// rather than a stream open and close. Streaming calls have a stream each.
//
// A caller that passes a *JSON as the reply gets the method's reply in its
// JSON form: the callee runs the same handler and encodes the reply with
// the encoder registered for its type (RegisterJSON), and relays
// (HandleRelay) hand that form on untouched, so JSON an HTTP API answers
// crosses every hop as the node encoded it.
//
// # Encoding
//
// Message bodies are msgpack with Nomad's go-msgpack settings
// (msgpack.NewHandle). The messages of every forwarded small call skip
// go-msgpack's reflection: a type that implements FastMsg encodes and
// decodes itself, byte for byte as go-msgpack would. rpc's headers do, and
// so do the structs types of a forwarded call.
//
// # Errors
//
// A handler's error crosses the wire as its message plus a status code (the
// code of the first error in its chain with a StatusCode() int method) and
// is rebuilt as a *RemoteError. An unknown method is a 404, an oversized
// message a 413, a handler panic a 500. Transport failures are sentinels
// compared with errors.Is: ErrSessionClosed, ErrTimeout (which also matches
// context.DeadlineExceeded), ErrMessageTooLarge, ErrStreamClosed.
//
// # Deadlines
//
// Every blocking call takes a context. A unary call without a deadline
// gets Config.CallTimeout; the remaining time travels in the request so the
// handler's context has the same deadline, and the handler's context is
// cancelled as soon as the caller goes away. Every connection and stream
// must say what it wants within Config.HandshakeTimeout, read in its own
// goroutine, so a stalled peer never blocks an accept loop. Server.Serve
// takes any number of connections from one peer host unless
// Config.MaxConnsPerIP caps them: a fleet behind one NAT address comes
// from one IP.
//
// The wire format is documented in spec.md next to this file.
package rpc
