package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"tether/internal/msgpack"
)

// JSON answers (spec.md, "JSON answers").
//
// A unary method has one handler, and a caller may ask for its reply in
// either of two forms: the handler's reply type, as msgpack, or the JSON
// an HTTP API shows for it. A caller asks for JSON by passing a *JSON as
// the reply (Session.Call, Pool.Call, Mux.CallLocal): the request header
// then says so, the callee runs the same handler with the same checks
// and encodes its reply with the JSON encoder registered for the reply's
// type (RegisterJSON), or with encoding/json when none is. The bytes then
// pass through every hop untouched: a relay (HandleRelay) asks the next
// hop for JSON in turn and hands the bytes on, never decoding them.

// JSON is a unary reply in JSON form. On the wire it is a map with the
// key "Body", and "Via" and "Hops" when a relay set them.
type JSON struct {
	// Body is the encoded JSON, with no trailing newline.
	Body []byte
	// Via and Hops, set by a relay that knows them (a server relaying a
	// node agent's call), name the server that held the target's session
	// and how many hops the call took from the relay.
	Via  string `codec:",omitempty"`
	Hops int    `codec:",omitempty"`
}

// AppendMsgpack implements FastMsg.
func (j *JSON) AppendMsgpack(b []byte) []byte {
	n := 1
	if j.Via != "" {
		n++
	}
	if j.Hops != 0 {
		n++
	}
	b = msgpack.AppendMapLen(b, n)
	b = msgpack.AppendRaw(b, "Body")
	b = msgpack.AppendBytes(b, j.Body)
	if j.Hops != 0 { // keys in go-msgpack's (sorted) order
		b = msgpack.AppendRaw(b, "Hops")
		b = msgpack.AppendInt(b, int64(j.Hops))
	}
	if j.Via != "" {
		b = msgpack.AppendRaw(b, "Via")
		b = msgpack.AppendRaw(b, j.Via)
	}
	return b
}

// DecodeMsgpack implements FastMsg. The decoded Body is a copy.
func (j *JSON) DecodeMsgpack(body []byte) bool {
	return msgpack.DecodeStruct(body, j, func(out *JSON, key []byte, r *msgpack.Reader) bool {
		switch string(key) {
		case "Body":
			return r.Bytes(&out.Body)
		case "Via":
			return r.Str(&out.Via)
		case "Hops":
			var n int64
			if !r.Int(&n) {
				return false
			}
			out.Hops = int(n)
			return true
		}
		return false
	})
}

// jsonType is the reply type that asks for JSON.
var jsonType = reflect.TypeFor[*JSON]()

// wantsJSON reports whether reply asks for the JSON form.
func wantsJSON(reply any) bool {
	_, ok := reply.(*JSON)
	return ok
}

// RegisterJSON registers enc as the JSON form of replies of type Resp on
// m, for every method of m whose reply is a *Resp: a reply that changes
// rarely can be encoded once and reused, and a reply whose JSON is a part
// of it (a list, say) shows just that part. enc must not keep or change
// the reply. Registering a type twice panics.
func RegisterJSON[Resp any](m *Mux, enc func(*Resp) ([]byte, error)) {
	if enc == nil {
		panic("rpc: nil JSON encoder")
	}
	t := reflect.TypeFor[*Resp]()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.json[t]; ok {
		panic(fmt.Sprintf("rpc: JSON encoder for %v registered twice", t))
	}
	m.json[t] = func(v any) ([]byte, error) { return enc(v.(*Resp)) }
}

// HandleRelay registers a unary method on m whose handler hands the call
// on (a server relaying a client call to the node that runs it): fn gets
// the decoded *Req and, as reply, a zero *Resp, or a zero *JSON when the
// caller asked for JSON, to pass on to the next hop as it is.
func HandleRelay[Req, Resp any](m *Mux, method string, fn func(ctx context.Context, req *Req, reply any) error) {
	if fn == nil {
		panic(fmt.Sprintf("rpc: nil handler for %q", method))
	}
	m.register(method, &unaryMethod{
		newReq:  func() any { return new(Req) },
		newResp: func() any { return new(Resp) },
		call: func(ctx context.Context, req, resp any) error {
			return fn(ctx, req.(*Req), resp)
		},
		reqType: reflect.TypeFor[*Req](),
		rspType: reflect.TypeFor[*Resp](),
		relay:   true,
	}, nil)
}

// callJSON runs u for a caller that asked for JSON and fills out: a relay
// passes out on; any other handler fills its own reply, which is then
// encoded.
func (m *Mux) callJSON(ctx context.Context, method string, u *unaryMethod, req any, out *JSON) error {
	if u.relay {
		return callUnary(ctx, m.logger(), method, u, req, out)
	}
	resp := u.newResp()
	if err := callUnary(ctx, m.logger(), method, u, req, resp); err != nil {
		return err
	}
	body, err := m.encodeJSON(u.rspType, resp)
	if err != nil {
		return fmt.Errorf("rpc: %s: encoding the JSON reply: %w", method, err)
	}
	out.Body = body
	return nil
}

// encodeJSON encodes resp, of type t, with its registered encoder or as
// encoding/json does (HTML characters kept, no trailing newline).
func (m *Mux) encodeJSON(t reflect.Type, resp any) ([]byte, error) {
	m.mu.RLock()
	enc := m.json[t]
	m.mu.RUnlock()
	if enc != nil {
		return enc(resp)
	}
	return EncodeJSON(resp)
}

// EncodeJSON encodes v as an HTTP API shows it: HTML characters kept, no
// trailing newline.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
