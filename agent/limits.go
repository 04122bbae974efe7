package agent

import (
	"net/http"
	"sync/atomic"

	"tether/structs"
)

// DefaultMaxStreams bounds the file and log streams one agent serves at
// once. The bound is on the agent's total resources, not per caller
// address: operators and log shippers behind a load balancer all arrive
// from one IP.
const DefaultMaxStreams = 4096

// errTooManyStreams answers a stream over the limit.
var errTooManyStreams = structs.NewError(http.StatusTooManyRequests, "too many concurrent streams on this agent; retry later")

// streamLimiter counts open streams against a limit.
type streamLimiter struct {
	max  atomic.Int64
	open atomic.Int64
	// rejected counts streams refused with 429.
	rejected atomic.Uint64
}

func (l *streamLimiter) acquire() error {
	max := l.max.Load()
	if max <= 0 {
		max = DefaultMaxStreams
	}
	if l.open.Add(1) > max {
		l.open.Add(-1)
		l.rejected.Add(1)
		return errTooManyStreams
	}
	return nil
}

func (l *streamLimiter) release() { l.open.Add(-1) }

// SetMaxStreams sets how many file and log streams the agent serves at
// once (≤ 0 means DefaultMaxStreams). Safe to call at any time.
func (a *Agent) SetMaxStreams(n int) { a.streams.max.Store(int64(n)) }

// OpenStreams returns how many file and log streams are being served.
func (a *Agent) OpenStreams() int64 { return a.streams.open.Load() }
