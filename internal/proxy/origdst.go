package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OriginalDstFunc returns where a redirected connection was going before
// the interception rules sent it to the proxy.
type OriginalDstFunc func(net.Conn) (netip.AddrPort, error)

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/
// ip6_tables.h, which x/sys/unix does not define.
const ip6tSoOriginalDst = 80

// errNotRedirected is returned for a connection that reached the listener
// directly rather than through a REDIRECT rule.
var errNotRedirected = errors.New("connection was not redirected")

// SocketOriginalDst reads the original destination that netfilter recorded
// for a connection redirected by an iptables REDIRECT rule:
// SO_ORIGINAL_DST for IPv4 and IP6T_SO_ORIGINAL_DST for IPv6.
func SocketOriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("reading original destination: %T is not a TCP connection", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading original destination: %w", err)
	}
	local, _ := netip.ParseAddrPort(tc.LocalAddr().String())
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		// An IPv4 connection accepted by a dual-stack listener is an IPv6
		// socket with a mapped address; the IPv4 option answers for it, and
		// the IPv6 one is the fallback.
		if local.Addr().Unmap().Is4() {
			if dst, serr = originalDst4(int(fd)); serr == nil {
				return
			}
			if d6, err6 := originalDst6(int(fd)); err6 == nil {
				dst, serr = d6, nil
			}
			return
		}
		dst, serr = originalDst6(int(fd))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = errNotRedirected
		}
		return netip.AddrPort{}, fmt.Errorf("reading original destination: %w", err)
	}
	return dst, nil
}

func originalDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	port := uint16(sa.Port>>8) | uint16(sa.Port<<8) // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

func originalDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	port := uint16(sa.Port>>8) | uint16(sa.Port<<8)
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

// getsockopt is the raw call: x/sys/unix has no typed getter for a
// sockaddr-valued option.
func getsockopt(fd, level, opt int, val unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}
