package rpc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
)

// This file holds both halves of the streaming handshake (spec.md,
// section 6): the caller's header and ack, and the callee's.

// streamHandshake sends the streaming preamble, the header and args (the
// handler's first message) on conn in one write, and reads the ack. Not
// waiting for the ack before sending args saves a write and a round trip
// per stream; a callee that refuses the call drops them with the stream.
// It returns the reader to keep using.
func streamHandshake(ctx context.Context, conn net.Conn, sess *Session, cfg *Config, method string, args any) (*bufio.Reader, error) {
	e := getEncoder()
	defer putEncoder(e)
	e.reset()
	e.out = append(e.out, ByteStreaming)
	dl, hasDL := ctx.Deadline()
	if err := e.appendFrame(kindData, &streamHeader{Method: method, Timeout: encodeTimeout(dl, hasDL)}, cfg.MaxMessageSize); err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", method, err)
	}
	if err := e.appendFrame(kindData, args, cfg.MaxMessageSize); err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", method, err)
	}
	hsDeadline := time.Now().Add(cfg.HandshakeTimeout)
	conn.SetDeadline(hsDeadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(pastTime) })
	br := bufio.NewReaderSize(conn, readBufferSize)
	var ack streamAck
	_, err := writeMessage(conn, e.bytes())
	if err == nil {
		err = readDataFrame(br, cfg.MaxMessageSize, &ack)
	}
	if !stop() || err != nil {
		return nil, callError(ctx, hsDeadline, sess, method, err)
	}
	conn.SetDeadline(time.Time{})
	if rerr := remoteFromWire(ack.Error, ack.Code); rerr != nil {
		return nil, rerr
	}
	return br, nil
}

// serveStreaming serves one streaming call on conn: header, ack, handler.
// The mode byte was read under the handshake deadline, which still applies
// to the header. The caller closes conn (the stream closes it too).
func serveStreaming(ctx context.Context, conn net.Conn, br *bufio.Reader, mux *Mux, sess *Session, cfg *Config, logger hclog.Logger) {
	var hdr streamHeader
	if err := readDataFrame(br, cfg.MaxMessageSize, &hdr); err != nil {
		logger.Debug("reading stream header failed", "error", err)
		return
	}
	conn.SetWriteDeadline(time.Now().Add(cfg.HandshakeTimeout))
	h := mux.lookupStream(hdr.Method)
	var ack streamAck
	if h == nil {
		rerr := unknownMethodError(hdr.Method)
		ack = streamAck{Error: rerr.Message, Code: rerr.Code}
	}
	e := getEncoder()
	e.reset()
	err := e.appendFrame(kindData, &ack, cfg.MaxMessageSize)
	if err == nil {
		_, err = writeMessage(conn, e.bytes())
	}
	putEncoder(e)
	if err != nil || h == nil {
		return
	}
	conn.SetWriteDeadline(time.Time{})

	hctx, cancel := handlerContext(ctx, sess, hdr.Timeout)
	hs := newStream(conn, br, cfg, roleHandler, hctx, cancel, hdr.Method)
	hs.sess = sess
	serveStreamHandler(hs, h)
}

// serveStreamHandler runs h on the handler end of a stream and finishes
// the stream with its result.
func serveStreamHandler(hs *Stream, h StreamHandler) {
	go hs.pump()
	err := callStream(hs.ctx, hs.cfg.Logger, hs.method, h, hs)
	hs.finish(err)
}

// startCallerStream wraps the caller end of a streaming call whose
// handshake is done, ties it to ctx, and sends the arguments.
func startCallerStream(ctx context.Context, conn net.Conn, br *bufio.Reader, sess *Session, cfg *Config, method string, args any, argsSent bool) (*Stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	cs := newStream(conn, br, cfg, roleCaller, sctx, cancel, method)
	cs.sess = sess
	cs.parent = ctx
	stop := context.AfterFunc(ctx, func() {
		cs.closeWith(fmt.Errorf("rpc: %s: %w", method, ctxError(ctx)))
	})
	cs.mu.Lock()
	cs.stopWatch = stop
	cs.mu.Unlock()
	go cs.pump()
	if argsSent {
		return cs, nil
	}
	if err := cs.Send(args); err != nil {
		cs.Close()
		return nil, err
	}
	return cs, nil
}
