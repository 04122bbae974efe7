package agent

import (
	"strings"

	"tether/structs"
)

// A job-wide log resumes from a cursor: where the stream stood in every
// allocation it read, as "key=N.offset" (the log position of fs/logs) or
// "key=end" (the allocation's task ended and its end record was sent),
// joined by commas. key is the allocation ID's first eight characters,
// or the whole ID where two allocations of the stream share them.
//
// In SSE form the writer sends the cursor as an id-only message after
// each record batch it writes (an EventSource keeps it as its last event
// ID without dispatching anything), so a reconnecting EventSource resumes
// with Last-Event-ID; other forms take it as after=. The records carry
// "alloc" and "pos", from which a client can build one itself.

const (
	// cursorKeyLen is the length of an allocation's key in a cursor.
	cursorKeyLen = 8
	// maxCursorEntries bounds a cursor a caller sends.
	maxCursorEntries = 4096
	// cursorEnd is the position of an allocation whose task ended.
	cursorEnd = "end"
)

// jobCursor is a parsed or running cursor. Its zero value is empty and
// ready; it is owned by one goroutine.
type jobCursor struct {
	entries []cursorEntry
	byAlloc map[string]int // running: index in entries by allocation ID
}

type cursorEntry struct {
	key   string // as sent: a prefix of the allocation ID
	alloc string // running: the allocation ID
	pos   string // "N.offset" or cursorEnd
}

// parseJobCursor reads a cursor sent as after= or Last-Event-ID.
func parseJobCursor(v string) (*jobCursor, error) {
	bad := func() error {
		shown := v
		if len(shown) > 64 {
			shown = shown[:64] + "..."
		}
		return structs.BadRequest("after (or Last-Event-ID) must be a job cursor alloc=N.offset,alloc=end,..., got %q", shown)
	}
	c := &jobCursor{}
	for part := range strings.SplitSeq(v, ",") {
		key, pos, ok := strings.Cut(part, "=")
		if !ok || len(key) < cursorKeyLen || len(key) > 36 || strings.Trim(key, "0123456789abcdef-") != "" {
			return nil, bad()
		}
		if _, ok := structs.ParseLogPos(pos); !ok && pos != cursorEnd {
			return nil, bad()
		}
		if len(c.entries) == maxCursorEntries {
			return nil, structs.BadRequest("after (or Last-Event-ID): a job cursor holds at most %d allocations", maxCursorEntries)
		}
		c.entries = append(c.entries, cursorEntry{key: key, pos: pos})
	}
	return c, nil
}

// lookup is the position the cursor gives an allocation: the entry whose
// key is its ID, else the only one whose key starts it ("" for none: a
// key two allocations could match names neither).
func (c *jobCursor) lookup(allocID string) string {
	if c == nil {
		return ""
	}
	var found string
	n := 0
	for _, e := range c.entries {
		switch {
		case e.key == allocID:
			return e.pos
		case strings.HasPrefix(allocID, e.key):
			found, n = e.pos, n+1
		}
	}
	if n != 1 {
		return ""
	}
	return found
}

// running turns a parsed cursor (nil for none) into the writer's: the
// allocations of the stream are bound to their entries as they come.
func (c *jobCursor) running() *jobCursor {
	r := &jobCursor{byAlloc: make(map[string]int)}
	if c != nil {
		r.entries = append(r.entries, c.entries...)
	}
	return r
}

// set records that the stream has written alloc's log up to pos.
func (c *jobCursor) set(alloc, pos string) {
	if i, ok := c.byAlloc[alloc]; ok {
		c.entries[i].pos = pos
		return
	}
	for i := range c.entries {
		if e := &c.entries[i]; e.alloc == "" && strings.HasPrefix(alloc, e.key) {
			// The entry a resumed stream was given for this allocation.
			e.alloc, e.pos = alloc, pos
			c.byAlloc[alloc] = i
			c.disambiguate(i)
			return
		}
	}
	c.entries = append(c.entries, cursorEntry{key: alloc[:min(cursorKeyLen, len(alloc))], alloc: alloc, pos: pos})
	c.byAlloc[alloc] = len(c.entries) - 1
	c.disambiguate(len(c.entries) - 1)
}

// disambiguate gives entry i, and any other entry sharing its key, the
// whole allocation ID as key.
func (c *jobCursor) disambiguate(i int) {
	me := &c.entries[i]
	for j := range c.entries {
		o := &c.entries[j]
		if j == i || o.key != me.key {
			continue
		}
		if o.alloc != "" {
			o.key = o.alloc
		}
		me.key = me.alloc
	}
}

// appendTo appends the cursor's text.
func (c *jobCursor) appendTo(b []byte) []byte {
	for i, e := range c.entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.key...)
		b = append(b, '=')
		b = append(b, e.pos...)
	}
	return b
}
