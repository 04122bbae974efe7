package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tether/rpc"
	"tether/structs"
)

// forwardLocal runs HTTP.Forward, or HTTP.ForwardStream, on s in process
// and returns the answer: the response header and the body, or the
// call's error.
func forwardLocal(ctx context.Context, s *Server, stream bool, req *structs.HTTPForwardRequest) (*structs.HTTPForwardResponse, []byte, error) {
	if !stream {
		var resp structs.HTTPForwardResponse
		if err := s.mux.CallLocal(ctx, structs.MethodHTTPForward, req, &resp); err != nil {
			return nil, nil, err
		}
		return &resp, resp.Body, nil
	}
	st, err := s.mux.OpenLocal(ctx, structs.MethodHTTPForwardStream, req)
	if err != nil {
		return nil, nil, err
	}
	defer st.Close()
	var resp structs.HTTPForwardResponse
	if err := st.Recv(&resp); err != nil {
		return nil, nil, err
	}
	var body []byte
	for {
		m, err := st.RecvMsg()
		if errors.Is(err, io.EOF) {
			return &resp, body, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if !m.Raw() {
			return nil, nil, errors.New("body message not raw")
		}
		body = append(body, m.Bytes()...)
		m.Release()
	}
}

type ctxKey struct{}

// TestHTTPForward runs HTTP.Forward's cases on one in-memory server.
func TestHTTPForward(t *testing.T) {
	s := newACLServer(t)
	t.Run("not ready", func(t *testing.T) { testHTTPForwardNotReady(t, s) })
	t.Run("replay", func(t *testing.T) { testHTTPForwardReplay(t, s) })
	t.Run("bad request", func(t *testing.T) { testHTTPForwardBadRequest(t, s) })
	t.Run("caller gone", func(t *testing.T) { testHTTPForwardCallerGone(t, s) })
}

// testHTTPForwardReplay checks what a replayed request looks like to the
// handler and what comes back.
func testHTTPForwardReplay(t *testing.T, s *Server) {
	large := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB: several messages
	huge := bytes.Repeat([]byte("x"), structs.MaxHTTPForwardInline+1)
	s.SetHTTPAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/job/a/b":
			body, _ := io.ReadAll(r.Body)
			switch {
			case r.Method != "PUT", r.URL.RawPath != "/v1/job/a%2Fb", r.URL.Query().Get("namespace") != "x y",
				r.Header.Get("X-Nomad-Token") != "tok", string(body) != `{"a":1}`, r.ContentLength != 7:
				http.Error(w, "replayed as "+r.Method+" "+r.URL.String()+" "+string(body), http.StatusTeapot)
				return
			case r.Context().Value(ctxKey{}) != nil || rpc.SessionFromContext(r.Context()) != nil:
				http.Error(w, "caller's context values reached the handler", http.StatusTeapot)
				return
			}
			w.Header().Set("X-Nomad-Index", "42")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte("ok"))
		case "/v1/large":
			_, _ = w.Write(large)
		case "/v1/huge":
			_, _ = w.Write(huge)
		case "/v1/flushed":
			_, _ = w.Write([]byte("part"))
			w.(http.Flusher).Flush()
			_, _ = w.Write([]byte("s"))
		case "/v1/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	ctx := context.WithValue(context.Background(), ctxKey{}, "node identity")

	asSent := structs.HTTPForwardRequest{Method: "PUT", Path: "/v1/job/a%2Fb", RawQuery: "namespace=x+y",
		Header: http.Header{"X-Nomad-Token": {"tok"}}, Body: []byte(`{"a":1}`)}
	cases := []struct {
		name     string
		stream   bool
		req      structs.HTTPForwardRequest
		wantErr  error
		wantCode int
		wantBody []byte
		wantLen  string
		wantHdr  string // X-Nomad-Index
	}{
		{"request as sent", false, asSent, nil, 201, []byte("ok"), "", "42"},
		{"request as sent, stream", true, asSent, nil, 201, []byte("ok"), "2", "42"},
		{"large answer", false, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/large"}, nil, 200, large, "", ""},
		{"large answer, stream", true, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/large"}, nil, 200, large, "", ""},
		{"answer over one reply", false, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/huge"}, structs.ErrForwardTooLarge, 0, nil, "", ""},
		{"answer over one reply, stream", true, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/huge"}, nil, 200, huge, "", ""},
		{"flushed answer", false, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/flushed"}, structs.ErrForwardTooLarge, 0, nil, "", ""},
		{"flushed answer, stream", true, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/flushed"}, nil, 200, []byte("parts"), "", ""},
		{"no content", false, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/empty"}, nil, 204, nil, "", ""},
		{"no content, stream", true, structs.HTTPForwardRequest{Method: "GET", Path: "/v1/empty"}, nil, 204, nil, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := forwardLocal(ctx, s, tc.stream, &tc.req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v; want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != tc.wantCode || !bytes.Equal(body, tc.wantBody) {
				t.Fatalf("got %d %q; want %d %q", resp.Code, truncate(string(body), 200), tc.wantCode, truncate(string(tc.wantBody), 200))
			}
			if got := resp.Header.Get("Content-Length"); got != tc.wantLen {
				t.Errorf("Content-Length = %q; want %q", got, tc.wantLen)
			}
			if got := resp.Header.Get("X-Nomad-Index"); got != tc.wantHdr {
				t.Errorf("X-Nomad-Index = %q; want %q", got, tc.wantHdr)
			}
		})
	}
}

// testHTTPForwardBadRequest: requests past a limit are refused before
// any handler runs, with a 4xx naming what is wrong.
func testHTTPForwardBadRequest(t *testing.T, s *Server) {
	var ran atomic.Bool
	s.SetHTTPAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran.Store(true) }))
	cases := []struct {
		name string
		req  structs.HTTPForwardRequest
		code int
		text string
	}{
		{"method", structs.HTTPForwardRequest{Method: "BREW", Path: "/v1/jobs"}, 400, "unsupported method"},
		{"path", structs.HTTPForwardRequest{Method: "GET", Path: "/debug/pprof/"}, 400, "path must start with /v1/"},
		{"relative path", structs.HTTPForwardRequest{Method: "GET", Path: "v1/jobs"}, 400, "path must start with /v1/"},
		{"other well-known path", structs.HTTPForwardRequest{Method: "GET", Path: "/.well-known/openid-configuration"}, 400, "path must start with /v1/"},
		{"url", structs.HTTPForwardRequest{Method: "GET", Path: "/v1/jobs", RawQuery: strings.Repeat("a", structs.MaxHTTPForwardURL)}, 400, "URL longer"},
		{"headers", structs.HTTPForwardRequest{Method: "GET", Path: "/v1/jobs",
			Header: http.Header{"X": {strings.Repeat("a", structs.MaxHTTPForwardHeader)}}}, 400, "headers larger"},
		{"body", structs.HTTPForwardRequest{Method: "PUT", Path: "/v1/jobs", Body: make([]byte, structs.MaxHTTPForwardBody+1)}, 413, "Request body too large"},
	}
	for _, tc := range cases {
		for _, stream := range []bool{false, true} {
			t.Run(tc.name+"/stream="+strconv.FormatBool(stream), func(t *testing.T) {
				_, _, err := forwardLocal(context.Background(), s, stream, &tc.req)
				wantCode(t, tc.name, err, tc.code, tc.text)
			})
		}
	}
	if ran.Load() {
		t.Fatal("a refused request reached the handler")
	}
}

// testHTTPForwardNotReady: before the agent sets its API the method
// answers 503.
func testHTTPForwardNotReady(t *testing.T, s *Server) {
	for _, stream := range []bool{false, true} {
		_, _, err := forwardLocal(context.Background(), s, stream, &structs.HTTPForwardRequest{Method: "GET", Path: "/v1/jobs"})
		wantCode(t, "not ready", err, 503, "HTTP API not ready")
	}
}

// testHTTPForwardCallerGone: the handler's context ends when the caller
// closes the stream.
func testHTTPForwardCallerGone(t *testing.T, s *Server) {
	started, ended := make(chan struct{}, 1), make(chan struct{}, 1)
	s.SetHTTPAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		ended <- struct{}{}
	}))
	req := &structs.HTTPForwardRequest{Method: "GET", Path: "/v1/jobs"}
	wantEnded := func() {
		t.Helper()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("handler still running after its caller left")
		}
	}

	st, err := s.mux.OpenLocal(context.Background(), structs.MethodHTTPForwardStream, req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	st.Close()
	wantEnded()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.mux.CallLocal(ctx, structs.MethodHTTPForward, req, &structs.HTTPForwardResponse{}) }()
	<-started
	cancel()
	wantEnded()
	<-done
}
