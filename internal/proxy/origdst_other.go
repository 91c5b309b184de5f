//go:build !linux

package proxy

import (
	"errors"
	"net/netip"
)

// errNoInterception: netfilter's original destination exists only on
// Linux. Elsewhere (a developer's macOS) meshproxy builds and runs, but a
// transparent listener cannot learn where a connection was going.
var errNoInterception = errors.New("transparent interception needs Linux (SO_ORIGINAL_DST)")

func originalDst4(int) (netip.AddrPort, error) { return netip.AddrPort{}, errNoInterception }

func originalDst6(int) (netip.AddrPort, error) { return netip.AddrPort{}, errNoInterception }
