package proxy

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// peekByte reads at most one byte from the socket fd without consuming it
// and without blocking (recv with MSG_PEEK|MSG_DONTWAIT). It is the raw
// system call because unix.Recvfrom allocates the peer address it does not
// need here, and an idle upstream connection is checked on every reuse.
func peekByte(fd uintptr, b *[1]byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
