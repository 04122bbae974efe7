package agent

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"tether/server"
	"tether/structs"
)

// Restart and signal of an allocation's tasks (issue #20), routed like
// every allocation call; the node does the work (client/lifecycle.go).

// clientAllocRestart serves PUT|POST /v1/client/allocation/:alloc_id/restart
// with an optional body {"TaskName": "...", "AllTasks": bool}.
func (a *Agent) clientAllocRestart(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		TaskName string
		AllTasks bool
	}
	allocID, err := lifecycleRequest(r, &body)
	if err != nil {
		return nil, err
	}
	req := structs.AllocRestartRequest{AllocID: allocID, TaskName: body.TaskName, AllTasks: body.AllTasks, QueryOptions: queryOptions(r)}
	return a.lifecycleCall(r, allocID, structs.MethodClientAllocRestart, &req)
}

// clientAllocSignal serves PUT|POST /v1/client/allocation/:alloc_id/signal
// with the body {"Task": "...", "Signal": "SIGHUP"}.
func (a *Agent) clientAllocSignal(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		Task   string
		Signal string
	}
	allocID, err := lifecycleRequest(r, &body)
	if err != nil {
		return nil, err
	}
	if body.Signal == "" {
		return nil, structs.BadRequest("must provide a signal")
	}
	req := structs.AllocSignalRequest{AllocID: allocID, Task: body.Task, Signal: body.Signal, QueryOptions: queryOptions(r)}
	return a.lifecycleCall(r, allocID, structs.MethodClientAllocSignal, &req)
}

// lifecycleRequest checks the method and the allocation ID and decodes
// the optional JSON body into body.
func lifecycleRequest(r *http.Request, body any) (string, error) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		return "", structs.ErrInvalidMethod
	}
	allocID := mux.Vars(r)["id"]
	if err := checkAllocID(allocID); err != nil {
		return "", err
	}
	if r.Body == nil {
		return allocID, nil
	}
	if err := json.NewDecoder(r.Body).Decode(body); err != nil && !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", structs.ErrBodyTooLarge
		}
		return "", structs.BadRequest("failed to decode request body: %v", err)
	}
	return allocID, nil
}

// lifecycleCall routes a restart or signal and answers {}.
func (a *Agent) lifecycleCall(r *http.Request, allocID, method string, req any) (any, error) {
	if err := a.backend.routeCall(r.Context(), server.Target{AllocID: allocID}, method, req, &structs.GenericResponse{}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
