package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// OriginalDstFunc returns where a redirected connection was going before
// the interception rules sent it to the proxy.
type OriginalDstFunc func(net.Conn) (netip.AddrPort, error)

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
