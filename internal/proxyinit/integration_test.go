package proxyinit

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/meshctl/mesh/internal/testenv/netns"
)

// These tests install the rules with the real iptables tools inside network
// namespaces of their own, once per backend, and watch where real
// connections land. They need root and skip without it.

const testTimeout = 30 * time.Second

func requireIPTables(t *testing.T, m Mode) {
	t.Helper()
	netns.RequireRoot(t)
	if _, err := exec.LookPath("iptables-" + string(m) + "-restore"); err != nil {
		t.Skipf("skipping: iptables-%s-restore not found (apt-get install iptables)", m)
	}
}

func podRunner(p *netns.Pod) ExecRunner { return ExecRunner{Start: p.Start} }

// chainCounters are the packet and byte counters of a chain's policy line
// (":PREROUTING ACCEPT [1:40]"), which move whenever a packet passes, say
// the kernel's own IPv6 link-local traffic in the namespace.
var chainCounters = regexp.MustCompile(`\[\d+:\d+\]$`)

// saveNat returns the pod's nat table without the timestamp comments and
// the chains' counters.
func saveNat(t *testing.T, ctx context.Context, p *netns.Pod, b Backend) string {
	t.Helper()
	out, err := podRunner(p).Run(ctx, b.Save, []string{"-t", "nat"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, chainCounters.ReplaceAllString(l, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

func TestIntegrationApplyIdempotentAndRemove(t *testing.T) {
	for _, m := range []Mode{ModeNFT, ModeLegacy} {
		t.Run(string(m), func(t *testing.T) {
			requireIPTables(t, m)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			pod := netns.New(t, "10.232.0.0/24").MustAddPod(t, "p")
			r := podRunner(pod)
			for _, fam := range []Family{IPv4, IPv6} {
				b, err := DetectBackend(ctx, r, fam, m)
				if err != nil {
					t.Fatal(err)
				}
				empty := saveNat(t, ctx, pod, b)
				o := defaults()
				o.SkipInboundPorts = mustPorts(t, "25,8000-8100")
				o.SkipOutboundPorts = mustPorts(t, "5432")
				o.SkipOutboundCIDRs = mustCIDRs(t, "10.1.0.0/16,fd00::/8")
				rules := Build(fam, o)

				if err := Apply(ctx, r, b, rules); err != nil {
					t.Fatal(err)
				}
				once := saveNat(t, ctx, pod, b)
				for _, l := range append(append([]string{}, rules.Jumps...), rules.Rules...) {
					if !strings.Contains(once, l+"\n") {
						t.Errorf("%s: rule %q missing after apply; table:\n%s", fam, l, once)
					}
				}
				if err := Apply(ctx, r, b, rules); err != nil {
					t.Fatal(err)
				}
				if twice := saveNat(t, ctx, pod, b); twice != once {
					t.Errorf("%s: applying twice changed the table\n--- once\n%s\n--- twice\n%s", fam, once, twice)
				}

				// New options replace the old rules rather than adding to them.
				changed := Build(fam, defaults())
				if err := Apply(ctx, r, b, changed); err != nil {
					t.Fatal(err)
				}
				if now := saveNat(t, ctx, pod, b); strings.Contains(now, "5432") {
					t.Errorf("%s: old skip rule survived a re-apply with other options:\n%s", fam, now)
				}

				removed, err := Remove(ctx, r, b)
				if err != nil || !removed {
					t.Fatalf("%s: Remove = %v, %v; want true, nil", fam, removed, err)
				}
				if after := saveNat(t, ctx, pod, b); after != empty {
					t.Errorf("%s: table not back to empty after remove\n--- before\n%s\n--- after\n%s", fam, empty, after)
				}
				if removed, err := Remove(ctx, r, b); err != nil || removed {
					t.Errorf("%s: second Remove = %v, %v; want false, nil", fam, removed, err)
				}
			}
		})
	}
}

// With rules already in the legacy backend (as a legacy CNI would leave),
// auto detection must pick legacy, not the nf_tables default.
func TestIntegrationDetectFollowsExistingRules(t *testing.T) {
	requireIPTables(t, ModeLegacy)
	requireIPTables(t, ModeNFT)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pod := netns.New(t, "10.233.0.0/24").MustAddPod(t, "p")
	r := podRunner(pod)
	if b, err := DetectBackend(ctx, r, IPv4, ModeAuto); err != nil || b.Mode != ModeNFT {
		t.Fatalf("fresh namespace: got %v, %v; want nft", b, err)
	}
	if _, err := pod.Run(ctx, "iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.0.0/8", "-j", "MASQUERADE"); err != nil {
		t.Fatal(err)
	}
	if b, err := DetectBackend(ctx, r, IPv4, ModeAuto); err != nil || b.Mode != ModeLegacy {
		t.Fatalf("legacy holds a rule: got %v, %v; want legacy", b, err)
	}
}

// landing is what a listener learned about one accepted connection.
type landing struct {
	port    int            // the listener's port
	origDst netip.AddrPort // SO_ORIGINAL_DST: where the client was going
}

// listenAll opens listeners on ports inside pod and reports every accepted
// connection on the returned channel.
func listenAll(t *testing.T, pod *netns.Pod, network string, ports ...int) <-chan landing {
	t.Helper()
	ch := make(chan landing, 16)
	for _, port := range ports {
		var ln net.Listener
		if err := pod.Do(func() (err error) {
			ln, err = net.Listen(network, fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				dst, err := originalDst(c.(*net.TCPConn))
				if err != nil {
					t.Errorf("reading SO_ORIGINAL_DST: %v", err)
				}
				ch <- landing{port: port, origDst: dst}
				c.Close()
			}
		}()
	}
	return ch
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/
// ip6_tables.h, which x/sys does not define.
const ip6tSOOriginalDst = 80

// originalDst reads SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6), which
// conntrack answers with the destination before REDIRECT rewrote it (for an
// unredirected connection, the destination itself). In a namespace where
// conntrack tracks nothing (no nat rules) it fails with ENOENT, and the local
// address is the destination. x/sys has no typed getter for either, hence
// the raw call.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	level, opt, ptr, size := unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa4), uint32(unsafe.Sizeof(sa4))
	if local.Addr().Is6() {
		level, opt, ptr, size = unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa6), uint32(unsafe.Sizeof(sa6))
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt),
			uintptr(ptr), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err == nil {
		err = serr
	}
	if err == unix.ENOENT {
		return local, nil
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	if local.Addr().Is6() {
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa6.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa6.Addr), port), nil
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), nil
}

func dialFrom(t *testing.T, pod *netns.Pod, dst string) {
	t.Helper()
	if err := pod.Do(func() error {
		c, err := net.DialTimeout("tcp", dst, 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("dialling %s from pod %s: %v", dst, pod.Name, err)
	}
}

// dialAs connects from pod as another user, in a child process: the owner
// match looks at the socket's user, which a thread of this process cannot
// change alone.
func dialAs(t *testing.T, ctx context.Context, pod *netns.Pod, uid uint32, dst netip.AddrPort) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", dst.Addr().Unmap(), dst.Port()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if err := pod.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("connecting to %s as uid %d from pod %s: %v", dst, uid, pod.Name, err)
	}
}

// expectNoMore fails when either pod saw a connection nobody expected: a
// rule that redirects more than it should.
func expectNoMore(t *testing.T, appCh, peerCh <-chan landing) {
	t.Helper()
	select {
	case l := <-appCh:
		t.Errorf("unexpected extra connection in app: %+v", l)
	case l := <-peerCh:
		t.Errorf("unexpected extra connection in peer: %+v", l)
	default:
	}
}

func expectLanding(t *testing.T, ch <-chan landing, what string, port int, origDst netip.AddrPort) {
	t.Helper()
	select {
	case l := <-ch:
		if l.port != port || l.origDst != origDst {
			t.Errorf("%s: landed on :%d with original destination %s; want :%d with %s", what, l.port, l.origDst, port, origDst)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s: no connection landed", what)
	}
}

// Connections really go where the rules say: redirected ones reach the
// proxy's ports with their original destination intact, excluded ones reach
// their destination directly.
func TestIntegrationRedirect(t *testing.T) {
	for _, m := range []Mode{ModeNFT, ModeLegacy} {
		t.Run(string(m), func(t *testing.T) {
			requireIPTables(t, m)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			n := netns.New(t, "10.234.0.0/24")
			app, peer := n.MustAddPod(t, "app"), n.MustAddPod(t, "peer")

			o := defaults()
			o.SkipInboundPorts = mustPorts(t, "9090")
			o.SkipOutboundPorts = mustPorts(t, "5432")
			o.SkipOutboundCIDRs = mustCIDRs(t, peer.Addr.String()+"/32")
			r := podRunner(app)
			b, err := DetectBackend(ctx, r, IPv4, m)
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(ctx, r, b, Build(IPv4, o)); err != nil {
				t.Fatal(err)
			}

			appCh := listenAll(t, app, "tcp4", 15100, 15101, 15190, 8080, 9090)
			peerCh := listenAll(t, peer, "tcp4", 80, 5432, 7000)
			ap := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
			vip := netip.MustParseAddr("10.96.0.10")
			third := netip.MustParseAddr("10.234.0.200") // on the bridge's subnet, owned by nobody

			// Outbound to a VIP nobody owns lands on the outbound port.
			dialFrom(t, app, ap(vip, 80).String())
			expectLanding(t, appCh, "outbound to a VIP", 15100, ap(vip, 80))
			// ... and so does an ordinary user's connection.
			dialAs(t, ctx, app, 2711, ap(vip, 80))
			expectLanding(t, appCh, "outbound as uid 2711", 15100, ap(vip, 80))
			// The proxy's own user goes straight to the destination.
			dialAs(t, ctx, app, 2710, ap(peer.Addr, 80))
			expectLanding(t, peerCh, "outbound as the proxy's uid", 80, ap(peer.Addr, 80))
			// Skipped port: direct, to an address otherwise redirected.
			dialFrom(t, app, ap(peer.Addr, 5432).String())
			expectLanding(t, peerCh, "outbound to a skipped port", 5432, ap(peer.Addr, 5432))
			// Skipped CIDR: direct.
			dialFrom(t, app, ap(peer.Addr, 7000).String())
			expectLanding(t, peerCh, "outbound to a skipped CIDR", 7000, ap(peer.Addr, 7000))
			// Not skipped: the same kind of address off the CIDR is redirected.
			dialFrom(t, app, ap(third, 7000).String())
			expectLanding(t, appCh, "outbound to a pod address", 15100, ap(third, 7000))
			// Loopback and the pod's own address are never redirected.
			dialFrom(t, app, "127.0.0.1:8080")
			expectLanding(t, appCh, "outbound to 127.0.0.1", 8080, netip.MustParseAddrPort("127.0.0.1:8080"))
			dialFrom(t, app, ap(app.Addr, 8080).String())
			expectLanding(t, appCh, "outbound to the pod's own address", 8080, ap(app.Addr, 8080))

			// Inbound to an application port lands on the inbound port.
			dialFrom(t, peer, ap(app.Addr, 8080).String())
			expectLanding(t, appCh, "inbound to an application port", 15101, ap(app.Addr, 8080))
			// The admin port and skipped inbound ports are reached directly.
			dialFrom(t, peer, ap(app.Addr, 15190).String())
			expectLanding(t, appCh, "inbound to the admin port", 15190, ap(app.Addr, 15190))
			dialFrom(t, peer, ap(app.Addr, 9090).String())
			expectLanding(t, appCh, "inbound to a skipped port", 9090, ap(app.Addr, 9090))

			expectNoMore(t, appCh, peerCh)
		})
	}
}

// The same over IPv6 with ip6tables: what --ipv6 installs.
func TestIntegrationRedirectIPv6(t *testing.T) {
	for _, m := range []Mode{ModeNFT, ModeLegacy} {
		t.Run(string(m), func(t *testing.T) {
			requireIPTables(t, m)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			n := netns.New(t, "10.236.0.0/24")
			app, peer := n.MustAddPod(t, "app"), n.MustAddPod(t, "peer")
			if !app.Addr6.IsValid() {
				t.Skip("skipping: the kernel has no IPv6")
			}

			o := defaults()
			o.SkipInboundPorts = mustPorts(t, "9090")
			o.SkipOutboundCIDRs = mustCIDRs(t, peer.Addr6.String()+"/128", "10.0.0.0/8")
			r := podRunner(app)
			b, err := DetectBackend(ctx, r, IPv6, m)
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(ctx, r, b, Build(IPv6, o)); err != nil {
				t.Fatal(err)
			}

			appCh := listenAll(t, app, "tcp6", 15100, 15101, 15190, 8080, 9090)
			peerCh := listenAll(t, peer, "tcp6", 80, 7000)
			ap := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
			vip := netip.MustParseAddr("fd96::10")

			dialFrom(t, app, ap(vip, 80).String())
			expectLanding(t, appCh, "outbound to a VIP", 15100, ap(vip, 80))
			dialAs(t, ctx, app, 2710, ap(peer.Addr6, 80))
			expectLanding(t, peerCh, "outbound as the proxy's uid", 80, ap(peer.Addr6, 80))
			dialFrom(t, app, ap(peer.Addr6, 7000).String())
			expectLanding(t, peerCh, "outbound to a skipped CIDR", 7000, ap(peer.Addr6, 7000))
			dialFrom(t, app, "[::1]:8080")
			expectLanding(t, appCh, "outbound to ::1", 8080, netip.MustParseAddrPort("[::1]:8080"))
			dialFrom(t, app, ap(app.Addr6, 8080).String())
			expectLanding(t, appCh, "outbound to the pod's own address", 8080, ap(app.Addr6, 8080))

			dialFrom(t, peer, ap(app.Addr6, 8080).String())
			expectLanding(t, appCh, "inbound to an application port", 15101, ap(app.Addr6, 8080))
			dialFrom(t, peer, ap(app.Addr6, 15190).String())
			expectLanding(t, appCh, "inbound to the admin port", 15190, ap(app.Addr6, 15190))
			dialFrom(t, peer, ap(app.Addr6, 9090).String())
			expectLanding(t, appCh, "inbound to a skipped port", 9090, ap(app.Addr6, 9090))

			expectNoMore(t, appCh, peerCh)
		})
	}
}
