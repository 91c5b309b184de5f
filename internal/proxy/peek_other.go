//go:build !linux

package proxy

import "golang.org/x/sys/unix"

// peekByte reads at most one byte from the socket fd without consuming it
// and without blocking.
func peekByte(fd uintptr, b *[1]byte) (int, error) {
	n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return n, err
}
