package rpc

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// socketUnread is how many bytes the kernel holds for c that no Read has
// taken yet (SIOCINQ), or 0 when c is not a socket.
func socketUnread(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
			n = v
		}
	})
	return n
}
