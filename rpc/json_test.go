package rpc

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"testing"
)

type jsonArgs struct{ N int }

type jsonPoint struct{ X, Y int }

type jsonPlain struct{ A string }

// registerJSONMethods adds the methods of TestJSON to a node's mux and a
// relay to the server's.
func registerJSONMethods(node, server *Mux, serverSess func() *Session) {
	HandleUnary(node, "J.Point", func(ctx context.Context, a *jsonArgs, r *jsonPoint) error {
		*r = jsonPoint{X: a.N, Y: -a.N}
		return nil
	})
	RegisterJSON(node, func(p *jsonPoint) ([]byte, error) {
		return []byte(`{"x":` + strconv.Itoa(p.X) + `}`), nil // a registered form: part of the reply
	})
	HandleUnary(node, "J.Plain", func(ctx context.Context, a *jsonArgs, r *jsonPlain) error {
		r.A = "<b>&"
		return nil
	})
	HandleUnary(node, "J.Fail", func(ctx context.Context, a *jsonArgs, r *jsonPlain) error {
		return &codedError{code: 404, msg: "no such thing"}
	})
	HandleRelay[jsonArgs, jsonPoint](server, "J.Relay", func(ctx context.Context, a *jsonArgs, reply any) error {
		return serverSess().Call(ctx, "J.Point", a, reply)
	})
}

// TestJSON checks the JSON form of unary replies: asked for by the reply
// type, encoded by the type's registered encoder or by encoding/json,
// the same in process and over every transport, passed on by relays, and
// errors still errors.
func TestJSON(t *testing.T) {
	testConnTypes(t, func(t *testing.T, kind string) {
		p := newTestPair(t, kind, pairOpts{})
		registerJSONMethods(p.nodeMux, p.srvMx, func() *Session { return p.server })
		ctx := context.Background()
		for _, tc := range []struct {
			name   string
			call   func(reply any) error
			want   string // the JSON body
			typed  any    // what a typed reply decodes to, nil to skip
			reply  func() any
			status int // a wanted error's code
		}{
			{name: "registered encoder", call: func(r any) error { return p.server.Call(ctx, "J.Point", &jsonArgs{N: 7}, r) },
				want: `{"x":7}`, typed: &jsonPoint{X: 7, Y: -7}, reply: func() any { return &jsonPoint{} }},
			{name: "encoding/json, HTML kept", call: func(r any) error { return p.server.Call(ctx, "J.Plain", &jsonArgs{}, r) },
				want: `{"A":"<b>&"}`, typed: &jsonPlain{A: "<b>&"}, reply: func() any { return &jsonPlain{} }},
			{name: "in process", call: func(r any) error { return p.nodeMux.CallLocal(ctx, "J.Point", &jsonArgs{N: 3}, r) },
				want: `{"x":3}`, typed: &jsonPoint{X: 3, Y: -3}, reply: func() any { return &jsonPoint{} }},
			{name: "through a relay", call: func(r any) error { return p.node.Call(ctx, "J.Relay", &jsonArgs{N: 12}, r) },
				want: `{"x":12}`, typed: &jsonPoint{X: 12, Y: -12}, reply: func() any { return &jsonPoint{} }},
			{name: "relay in process", call: func(r any) error { return p.srvMx.CallLocal(ctx, "J.Relay", &jsonArgs{N: 5}, r) },
				want: `{"x":5}`, typed: &jsonPoint{X: 5, Y: -5}, reply: func() any { return &jsonPoint{} }},
			{name: "handler error", call: func(r any) error { return p.server.Call(ctx, "J.Fail", &jsonArgs{}, r) }, status: 404},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var out JSON
				err := tc.call(&out)
				if tc.status != 0 {
					var re *RemoteError
					if !errors.As(err, &re) || re.Code != tc.status {
						t.Fatalf("got %v; want a %d", err, tc.status)
					}
					return
				}
				if err != nil || string(out.Body) != tc.want {
					t.Fatalf("JSON = %s, %v; want %s", out.Body, err, tc.want)
				}
				typed := tc.reply()
				if err := tc.call(typed); err != nil {
					t.Fatal(err)
				}
				if got, want := typed, tc.typed; !reflect.DeepEqual(got, want) {
					t.Fatalf("typed = %+v; want %+v", got, want)
				}
			})
		}
	})
}

// TestRegisterJSON_Twice: a second encoder for one type is a wiring bug.
func TestRegisterJSON_Twice(t *testing.T) {
	m := NewMux()
	RegisterJSON(m, func(*jsonPoint) ([]byte, error) { return nil, nil })
	defer func() {
		if recover() == nil {
			t.Fatal("second RegisterJSON did not panic")
		}
	}()
	RegisterJSON(m, func(*jsonPoint) ([]byte, error) { return nil, nil })
}
