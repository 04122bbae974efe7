//go:build !linux

package rpc

import "syscall"

// socketUnread is 0 where the kernel's receive queue is not read here.
func socketUnread(syscall.Conn) int { return 0 }
