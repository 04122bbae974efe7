package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"tether/client"
	"tether/rpc"
	"tether/server"
	"tether/structs"
)

// clientFSArchive serves GET /v1/client/fs/archive/:alloc_id?path=&format=,
// a Tether addition: the directory path of the allocation (the whole
// allocation dir by default) as a tar built on the node, gzipped unless
// format=tar. The capability is cat's (read-fs); the node applies cat's
// path safety (client/archive.go). The bytes take cat's paths: from the
// node itself on its own agent, on a data connection the node dials back
// to the server holding its session, else as raw messages on the stream
// (through a peer, or a node-only agent's server). The length is not
// known up front: the answer is chunked, and a node that fails midway
// aborts it (and never wrote the archive's end), so a cut archive cannot
// look whole.
func (a *Agent) clientFSArchive(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodGet {
		return nil, structs.ErrInvalidMethod // a HEAD would build the whole archive for nothing
	}
	allocID := mux.Vars(r)["id"]
	q := r.URL.Query()
	req := structs.FsArchiveRequest{AllocID: allocID, Path: q.Get("path"), Format: q.Get("format"), QueryOptions: queryOptionsOf(r, q)}
	if req.Path == "" {
		req.Path = "/"
	}
	if len(req.Path) > maxPathLen || strings.IndexByte(req.Path, 0) >= 0 {
		return nil, structs.BadRequest("path must be at most %d bytes, without NUL", maxPathLen)
	}
	if req.Format == "" {
		req.Format = structs.ArchiveTarGz
	}
	if err := client.CheckArchiveFormat(req.Format); err != nil {
		return nil, err
	}
	if err := a.streams.acquire(); err != nil {
		return nil, err
	}
	defer a.streams.release()
	rt, err := a.backend.route(r.Context(), server.Target{AllocID: allocID}, structs.MethodFsArchive, &req)
	if err != nil {
		return nil, err
	}
	if rt.local {
		return nil, a.archiveLocal(w, r, &req)
	}
	st, data, done, err := rt.streamWithData(r.Context(), structs.MethodFsArchive, &req, &req.DataToken)
	if err != nil {
		return nil, err
	}
	defer done()
	return nil, a.archiveStream(w, r, st, data, &req)
}

// writeArchiveHeader commits the 200 of an archive.
func writeArchiveHeader(w http.ResponseWriter, req *structs.FsArchiveRequest) {
	h := w.Header()
	h.Set("Content-Type", client.ArchiveContentType(req.Format))
	h.Set("Content-Disposition", `attachment; filename="`+archiveFileName(req)+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
}

// archiveFileName is the archive's suggested file name: the allocation's
// short ID and the directory's last element, in characters that need no
// quoting.
func archiveFileName(req *structs.FsArchiveRequest) string {
	base := req.Path[strings.LastIndexByte(strings.TrimRight(req.Path, "/"), '/')+1:]
	base = strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			return c
		}
		return -1
	}, strings.TrimRight(base, "/"))
	name := req.AllocID[:min(8, len(req.AllocID))]
	if base != "" && base != "." && base != ".." {
		name += "-" + base
	}
	return name + "." + req.Format
}

// archiveLocal answers an archive of an allocation this node runs, written
// straight into the response.
func (a *Agent) archiveLocal(w http.ResponseWriter, r *http.Request, req *structs.FsArchiveRequest) error {
	arc, err := a.backend.client.OpenArchive(r.Context(), req)
	if err != nil {
		return err
	}
	defer arc.Close()
	writeArchiveHeader(w, req)
	cw := &countingResponse{w: w}
	err = arc.WriteTo(r.Context(), cw)
	a.streamed.local.Add(uint64(cw.n))
	a.endArchive(r, err)
	return nil
}

// archiveStream answers an archive the node sends on st: its
// acknowledgement (or its error, which becomes the HTTP status), then
// the bytes from the data connection it announced or as raw messages,
// then its result. The stream and the data connection are closed on
// every path, which stops the node when the caller goes away.
func (a *Agent) archiveStream(w http.ResponseWriter, r *http.Request, st *rpc.Stream, data <-chan net.Conn, req *structs.FsArchiveRequest) error {
	defer st.Close()
	dc, err := ackAndData(r, st, data)
	if err != nil {
		return err
	}
	if dc != nil {
		defer dc.Close()
	}
	writeArchiveHeader(w, req)
	if dc != nil {
		stop := context.AfterFunc(r.Context(), func() { dc.Close() })
		defer stop()
		var n int64
		n, err = rpc.CopyData(w, dc, batchedWriter(w, r))
		a.streamed.data.Add(uint64(max(n, 0)))
		if err == nil {
			err = st.Recv(nil) // the node's result: EOF when it meant to end there
		}
	} else {
		err = a.relayRawMessages(w, r, st)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	a.endArchive(r, err)
	return nil
}

// relayRawMessages writes the raw messages of st to w until st ends, and
// returns how it ended (io.EOF: cleanly).
func (a *Agent) relayRawMessages(w http.ResponseWriter, r *http.Request, st *rpc.Stream) error {
	write := batchedWriter(w, r)
	for {
		m, err := st.RecvMsg()
		if err != nil {
			return err
		}
		if !m.Raw() {
			m.Release()
			return errors.New("node sent a frame inside an archive")
		}
		err = write(m.Bytes())
		a.streamed.raw.Add(uint64(len(m.Bytes())))
		m.Release()
		if err != nil {
			return err
		}
	}
}

// endArchive ends an archive whose 200 is committed: a failure aborts the
// response, so that the chunked body does not end as if whole.
func (a *Agent) endArchive(r *http.Request, err error) {
	if err == nil {
		return
	}
	if r.Context().Err() == nil {
		a.logger.Named("http").Debug("archive ended with error", "path", r.URL.Path, "error", err)
	}
	panic(http.ErrAbortHandler)
}

// countingResponse counts what an archive written in process sends.
type countingResponse struct {
	w io.Writer
	n int64
}

func (c *countingResponse) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
