package client

import (
	"context"
	"errors"
	"io"

	"tether/rpc"
	"tether/structs"
)

// registerFSEndpoints adds the allocation filesystem methods: list and stat
// (unary), and readat, stream and logs (streaming; the first frame is an
// empty acknowledgement sent once the request is valid and the file open).
func (c *Client) registerFSEndpoints() {
	rpc.HandleUnary(c.mux, structs.MethodFsList, c.fsList)
	rpc.HandleUnary(c.mux, structs.MethodFsStat, c.fsStat)
	c.mux.HandleStream(structs.MethodFsReadAt, c.fsReadAt)
	c.mux.HandleStream(structs.MethodFsStream, c.fsStream)
	c.mux.HandleStream(structs.MethodFsLogs, c.fsLogs)
}

// allocFS opens the allocation's directory for reading.
func (c *Client) allocFS(allocID string) (*AllocFS, *allocRunner, error) {
	ar, err := c.runnerFor(allocID)
	if err != nil {
		return nil, nil, err
	}
	if ar.isDestroyed() {
		return nil, nil, structs.NotFound("allocation %s was garbage collected on this node", allocID)
	}
	fs, err := OpenAllocFS(ar.dir.Dir, allocID)
	if err != nil {
		return nil, nil, err
	}
	return fs, ar, nil
}

func (c *Client) fsList(ctx context.Context, req *structs.FsListRequest, resp *structs.FsListResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodFsList, req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	resp.Files, err = fs.List(req.Path)
	return err
}

func (c *Client) fsStat(ctx context.Context, req *structs.FsListRequest, resp *structs.FsStatResponse) error {
	if err := c.authorizeAlloc(ctx, structs.MethodFsStat, req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	resp.Info, err = fs.Stat(req.Path)
	return err
}

// rawChunkSize is the data per message of cat and readat.
const rawChunkSize = 128 << 10

// ack tells the caller the request is valid and data may follow.
func ack(s *rpc.Stream) error { return s.Send(&structs.StreamFrame{}) }

func (c *Client) fsReadAt(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsReadAtRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	if err := c.authorizeAlloc(ctx, structs.MethodFsReadAt, &req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	rc, _, err := fs.OpenRange(req.Path, req.Offset, req.Limit)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := ack(s); err != nil {
		return err
	}
	// cat and readat are raw bytes, not JSON frames: larger chunks mean
	// fewer messages per byte (half the yamux window, so one is in flight
	// while the next is read).
	buf := make([]byte, rawChunkSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			if err := s.Send(&structs.StreamFrame{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (c *Client) fsStream(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsStreamRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	if err := c.authorizeAlloc(ctx, structs.MethodFsStream, &req, req.AllocID); err != nil {
		return err
	}
	fs, _, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	opts := StreamOptions{Path: req.Path, Offset: req.Offset, Origin: req.Origin, Follow: req.Follow,
		Ready: func() error { return ack(s) }}
	return fs.Stream(ctx, opts, func(f *structs.StreamFrame) error { return s.Send(f) })
}

func (c *Client) fsLogs(ctx context.Context, s *rpc.Stream) error {
	var req structs.FsLogsRequest
	if err := s.Recv(&req); err != nil {
		return err
	}
	if err := c.authorizeAlloc(ctx, structs.MethodFsLogs, &req, req.AllocID); err != nil {
		return err
	}
	fs, ar, err := c.allocFS(req.AllocID)
	if err != nil {
		return err
	}
	defer fs.Close()
	tasks := map[string]bool{}
	for name, st := range ar.taskStates() {
		tasks[name] = !st.StartedAt.IsZero()
	}
	opts := LogsOptions{Task: req.Task, Type: req.LogType, Offset: req.Offset, Origin: req.Origin, Follow: req.Follow,
		Tasks: tasks, Ready: func() error { return ack(s) }}
	return fs.Logs(ctx, opts, func(f *structs.StreamFrame) error { return s.Send(f) })
}
