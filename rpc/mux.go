package rpc

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"runtime/debug"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// Mux maps method names to handlers. Servers and node agents each own one
// and serve it on their sessions. Unary and streaming methods share one
// namespace: a name is either. Bulk methods (HandleBulk), served only on
// data connections, have a namespace of their own, so that a bulk method
// can carry the name of the streaming method whose bytes it moves. It is
// safe for concurrent use, and registering a name twice panics (a wiring
// bug, found at start-up).
type Mux struct {
	// Logger receives the panics recovered from handlers run by CallLocal
	// and OpenLocal (sessions log to their own logger). nil means no
	// logging. Set it before use.
	Logger hclog.Logger

	mu      sync.RWMutex
	json    map[reflect.Type]func(any) ([]byte, error) // by reply type (json.go)
	unary   map[string]*unaryMethod
	streams map[string]StreamHandler
	bulk    map[string]*bulkMethod
}

// StreamHandler serves one streaming call. The first Recv returns the
// arguments the caller passed to OpenStream. The handler owns s until it
// returns; the stream is then ended and closed for it. A non-nil error is
// sent to the caller, whose next Recv returns it as a *RemoteError; nil
// ends the stream with a clean io.EOF for the caller. ctx is s.Context().
type StreamHandler func(ctx context.Context, s *Stream) error

// unaryMethod is a registered unary handler with its types erased.
type unaryMethod struct {
	newReq  func() any
	newResp func() any
	call    func(ctx context.Context, req, resp any) error
	reqType reflect.Type // *Req
	rspType reflect.Type // *Resp
	relay   bool         // the handler takes the caller's reply form (HandleRelay)

	// endWithSession: on a session, the handler's context ends with the
	// session (or the call's deadline), and the caller is not watched
	// (EndWithSession). Set before serving; read without the lock.
	endWithSession bool
}

// bulkMethod is a registered bulk handler with its types erased.
type bulkMethod struct {
	newReq  func() any
	newResp func() any
	call    func(ctx context.Context, req, resp any, reply *BulkReply) error
}

// NewMux returns an empty Mux.
func NewMux() *Mux {
	return &Mux{
		json:    make(map[reflect.Type]func(any) ([]byte, error)),
		unary:   make(map[string]*unaryMethod),
		streams: make(map[string]StreamHandler),
		bulk:    make(map[string]*bulkMethod),
	}
}

// HandleUnary registers a unary method on m. For each call fn gets a fresh
// *Req decoded from the wire (or the caller's own value, for CallLocal)
// and a zero *Resp to fill; the reply is sent only when fn returns nil.
func HandleUnary[Req, Resp any](m *Mux, method string, fn func(ctx context.Context, req *Req, resp *Resp) error) {
	if fn == nil {
		panic(fmt.Sprintf("rpc: nil handler for %q", method))
	}
	m.register(method, &unaryMethod{
		newReq:  func() any { return new(Req) },
		newResp: func() any { return new(Resp) },
		call: func(ctx context.Context, req, resp any) error {
			return fn(ctx, req.(*Req), resp.(*Resp))
		},
		reqType: reflect.TypeFor[*Req](),
		rspType: reflect.TypeFor[*Resp](),
	}, nil)
}

// EndWithSession marks the registered unary method so that, on a session,
// its handler's context ends when the session closes or the call's
// deadline passes, instead of being watched for the caller going away
// (a goroutine per call once it has run for HandlerWatchDelay, reading
// the stream). It is for long calls that only their session's end
// abandons: a node's blocking query for its allocations is in flight at
// every moment, on every node session, and its node gives it up only by
// closing the session. A caller that cancels such a call otherwise
// leaves its handler running until the deadline. Call it before serving.
func (m *Mux) EndWithSession(method string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.unary[method]
	if !ok {
		panic(fmt.Sprintf("rpc: EndWithSession of unregistered unary method %q", method))
	}
	u.endWithSession = true
}

// HandleStream registers a streaming method on m.
func (m *Mux) HandleStream(method string, fn StreamHandler) {
	if fn == nil {
		panic(fmt.Sprintf("rpc: nil handler for %q", method))
	}
	m.register(method, nil, fn)
}

func (m *Mux) register(method string, u *unaryMethod, s StreamHandler) {
	if method == "" {
		panic("rpc: empty method name")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.unary[method]; ok {
		panic(fmt.Sprintf("rpc: method %q registered twice", method))
	}
	if _, ok := m.streams[method]; ok {
		panic(fmt.Sprintf("rpc: method %q registered twice", method))
	}
	if u != nil {
		m.unary[method] = u
	} else {
		m.streams[method] = s
	}
}

// HandleBulk registers a bulk method on m, served on the data connections
// a server keeps for its bulk reads (ServeDataCalls): a unary method whose
// reply is followed on the connection by raw bytes, as many as the reply
// announces. fn gets a fresh *Req decoded from the wire and a zero *Resp.
// To answer, it fills resp, calls reply.Send, which writes the response
// header and resp and returns the connection, and writes exactly the
// announced bytes there. An error it returns before Send is the call's
// answer (the connection takes the next call); returning nil without Send
// is answered with a 500; an error after Send closes the connection, so
// that the caller sees a short transfer.
func HandleBulk[Req, Resp any](m *Mux, method string, fn func(ctx context.Context, req *Req, resp *Resp, reply *BulkReply) error) {
	if fn == nil {
		panic(fmt.Sprintf("rpc: nil handler for %q", method))
	}
	if method == "" {
		panic("rpc: empty method name")
	}
	b := &bulkMethod{
		newReq:  func() any { return new(Req) },
		newResp: func() any { return new(Resp) },
		call: func(ctx context.Context, req, resp any, reply *BulkReply) error {
			return fn(ctx, req.(*Req), resp.(*Resp), reply)
		},
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.bulk[method]; ok {
		panic(fmt.Sprintf("rpc: bulk method %q registered twice", method))
	}
	m.bulk[method] = b
}

// lookupBulk returns the bulk method, or nil.
func (m *Mux) lookupBulk(method string) *bulkMethod {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.bulk[method]
}

// lookupUnary returns the unary method, or nil.
func (m *Mux) lookupUnary(method string) *unaryMethod {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.unary[method]
}

// lookupStream returns the streaming handler, or nil.
func (m *Mux) lookupStream(method string) StreamHandler {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.streams[method]
}

// CallLocal runs a registered unary method in process, without encoding:
// args must be a *Req and reply a *Resp of the registered types, or a
// *JSON for the reply's JSON form (json.go). The
// handler's error is returned unchanged (it never crossed a wire); an
// unknown method returns an error matching ErrUnknownMethod, a panic a
// *RemoteError with Code 500. A node agent's HTTP API uses this for its
// own node.
func (m *Mux) CallLocal(ctx context.Context, method string, args, reply any) error {
	u := m.lookupUnary(method)
	if u == nil {
		return unknownMethodError(method)
	}
	if t := reflect.TypeOf(args); t != u.reqType {
		return fmt.Errorf("rpc: %s: args has type %v, want %v", method, t, u.reqType)
	}
	if t := reflect.TypeOf(reply); t != u.rspType && t != jsonType {
		return fmt.Errorf("rpc: %s: reply has type %v, want %v or %v", method, t, u.rspType, jsonType)
	}
	if reflect.ValueOf(args).IsNil() || reflect.ValueOf(reply).IsNil() {
		return fmt.Errorf("rpc: %s: nil args or reply", method)
	}
	if out, ok := reply.(*JSON); ok {
		return m.callJSON(ctx, method, u, args, out)
	}
	return callUnary(ctx, m.logger(), method, u, args, reply)
}

// OpenLocal runs a registered streaming method in process over an
// in-memory pipe and returns the caller's end, with the same semantics as
// Session.OpenStream: args are encoded and delivered by the handler's first
// Recv, frames are encoded both ways, and ctx ends the stream. The handler's
// context carries ctx's values; SessionFromContext returns nil.
func (m *Mux) OpenLocal(ctx context.Context, method string, args any) (*Stream, error) {
	h := m.lookupStream(method)
	if h == nil {
		return nil, unknownMethodError(method)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", method, ctxError(ctx))
	}
	cfg := *localConfig()
	cfg.Logger = m.logger()
	callerConn, handlerConn := net.Pipe()

	hctx, hcancel := context.WithCancel(ctx)
	hs := newStream(handlerConn, nil, &cfg, roleHandler, hctx, hcancel, method)
	go serveStreamHandler(hs, h)

	cs, err := startCallerStream(ctx, callerConn, nil, nil, &cfg, method, args, false)
	if err != nil {
		return nil, err
	}
	return cs, nil
}

// localConfig is the default config, used by in-process streams (only its
// limits and timeouts matter).
var localConfig = sync.OnceValue(func() *Config {
	cfg, _ := (*Config)(nil).normalize()
	return cfg
})

func (m *Mux) logger() hclog.Logger {
	if m.Logger == nil {
		return hclog.NewNullLogger()
	}
	return m.Logger
}

// callUnary runs a unary handler, turning a panic into an error.
func callUnary(ctx context.Context, logger hclog.Logger, method string, u *unaryMethod, req, resp any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error("rpc handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
			err = panicError(method)
		}
	}()
	return u.call(ctx, req, resp)
}

// callBulk runs a bulk handler, turning a panic into an error.
func callBulk(ctx context.Context, logger hclog.Logger, method string, b *bulkMethod, req, resp any, reply *BulkReply) (err error) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error("rpc bulk handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
			err = panicError(method)
		}
	}()
	return b.call(ctx, req, resp, reply)
}

// callStream runs a streaming handler, turning a panic into an error.
func callStream(ctx context.Context, logger hclog.Logger, method string, h StreamHandler, s *Stream) (err error) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error("rpc stream handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
			err = panicError(method)
		}
	}()
	return h(ctx, s)
}
