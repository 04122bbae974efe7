package server

import (
	"tether/rpc"
	"tether/structs"
)

// The messages of a forwarded small call take the transport's hand-written
// path; a method renamed on either side would silently fall back to
// reflection.
var _ rpc.FastMsg = (*structs.NodeSpecificRequest)(nil)
