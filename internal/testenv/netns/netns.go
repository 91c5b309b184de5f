// Package netns gives data-plane tests "pods" without a cluster: network
// namespaces, each with an eth0 on a private address, joined by a bridge
// that lives in a namespace of its own so that the host's network is never
// changed. Each pod has a default route via the bridge, so a connect() to an
// address nobody owns (a service VIP) reaches the pod's iptables OUTPUT rules
// instead of failing as unreachable.
//
// Pods are dual-stack when the kernel has IPv6: each also gets an address in
// fd00::/8 (unique local) that embeds its IPv4 address, so 10.235.0.2 on
// 10.235.0.0/24 is also fd00::aeb:2 on fd00::aeb:0/120.
//
// Everything needs root and the iproute2 `ip` tool. Names start with
// NamePrefix and carry the creating process's id, so that a later run can
// remove what a crashed run left behind without touching the namespaces of
// a run still in progress.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of every namespace this package creates.
const NamePrefix = "meshtest-"

// runDir is where `ip netns` keeps the bind mounts that name namespaces.
const runDir = "/run/netns"

var seq atomic.Int64

// Network is a bridge in a hub namespace and the pods attached to it.
type Network struct {
	id      string
	hub     string
	subnet  netip.Prefix
	gateway netip.Addr
	next    netip.Addr
	ipv6    bool

	mu   sync.Mutex
	pods []*Pod
}

// Pod is one network namespace on the Network.
type Pod struct {
	// Name is the short name given to AddPod.
	Name string
	// NS is the namespace's name for `ip netns`, e.g. for `ip netns exec`.
	NS string
	// Addr is the pod's IPv4 address on eth0.
	Addr netip.Addr
	// Addr6 is the pod's IPv6 address on eth0; invalid (the zero Addr) when
	// the kernel has no IPv6.
	Addr6 netip.Addr
}

// NewNetwork creates the hub namespace and its bridge on subnet, whose first
// address becomes the gateway of every pod. The subnet must be private and
// unused by the host (the hub is isolated, so a clash only confuses readers).
// It first removes namespaces left by earlier processes that have exited.
func NewNetwork(ctx context.Context, subnet netip.Prefix) (*Network, error) {
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("creating network: subnet %s must be IPv4 with room for pods", subnet)
	}
	if err := RemoveStale(ctx); err != nil {
		return nil, err
	}
	subnet = subnet.Masked()
	id := fmt.Sprintf("%s%d-%d", NamePrefix, os.Getpid(), seq.Add(1))
	n := &Network{id: id, hub: id + "-hub", subnet: subnet, gateway: subnet.Addr().Next()}
	n.next = n.gateway.Next()
	_, err := os.Stat("/proc/sys/net/ipv6")
	n.ipv6 = err == nil
	steps := [][]string{
		{"netns", "add", n.hub},
		{"-n", n.hub, "link", "set", "lo", "up"},
		{"-n", n.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", n.hub, "addr", "add", prefixOf(n.gateway, subnet), "dev", "br0"},
		{"-n", n.hub, "link", "set", "br0", "up"},
	}
	if n.ipv6 {
		// nodad: duplicate address detection would keep the address
		// unusable for a second or two, and these addresses are unique.
		steps = append(steps, []string{"-n", n.hub, "-6", "addr", "add", n.prefix6(n.gateway), "dev", "br0", "nodad"})
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			n.Close()
			return nil, fmt.Errorf("creating network: %w", err)
		}
	}
	return n, nil
}

// Gateway is the bridge's address, the pods' default route.
func (n *Network) Gateway() netip.Addr { return n.gateway }

// Gateway6 is the bridge's IPv6 address; invalid without IPv6.
func (n *Network) Gateway6() netip.Addr {
	if !n.ipv6 {
		return netip.Addr{}
	}
	return to6(n.gateway)
}

// to6 embeds an IPv4 address in fd00::/96.
func to6(a netip.Addr) netip.Addr {
	b := [16]byte{0: 0xfd}
	v4 := a.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

// prefix6 is a's IPv6 twin with the subnet's prefix length.
func (n *Network) prefix6(a netip.Addr) string {
	return netip.PrefixFrom(to6(a), 96+n.subnet.Bits()).String()
}

// AddPod creates a namespace with lo up and eth0 on the next free address.
func (n *Network) AddPod(ctx context.Context, name string) (*Pod, error) {
	n.mu.Lock()
	addr := n.next
	if !n.subnet.Contains(addr) || !n.subnet.Contains(addr.Next()) {
		n.mu.Unlock()
		return nil, fmt.Errorf("adding pod %s: subnet %s is full", name, n.subnet)
	}
	n.next = addr.Next()
	idx := len(n.pods)
	p := &Pod{Name: name, NS: fmt.Sprintf("%s-%s", n.id, name), Addr: addr}
	if n.ipv6 {
		p.Addr6 = to6(addr)
	}
	n.pods = append(n.pods, p)
	n.mu.Unlock()

	hostSide := "veth" + strconv.Itoa(idx) // unique within the hub only
	steps := [][]string{
		{"netns", "add", p.NS},
		{"-n", p.NS, "link", "set", "lo", "up"},
		{"-n", n.hub, "link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", p.NS},
		{"-n", n.hub, "link", "set", hostSide, "master", "br0", "up"},
		{"-n", p.NS, "addr", "add", prefixOf(addr, n.subnet), "dev", "eth0"},
		{"-n", p.NS, "link", "set", "eth0", "up"},
		{"-n", p.NS, "route", "add", "default", "via", n.gateway.String()},
	}
	if n.ipv6 {
		steps = append(steps,
			[]string{"-n", p.NS, "-6", "addr", "add", n.prefix6(addr), "dev", "eth0", "nodad"},
			[]string{"-n", p.NS, "-6", "route", "add", "default", "via", to6(n.gateway).String()})
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return nil, fmt.Errorf("adding pod %s: %w", name, err)
		}
	}
	return p, nil
}

// Close deletes every namespace of the network; the veth pairs and the
// bridge go with them. It is safe to call more than once.
func (n *Network) Close() error {
	n.mu.Lock()
	names := []string{}
	for _, p := range n.pods {
		names = append(names, p.NS)
	}
	n.pods = nil
	n.mu.Unlock()
	names = append(names, n.hub)
	var errs []error
	for _, name := range names {
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveStale deletes the namespaces of this package whose creating process
// no longer exists: what a crashed or killed test run left behind.
func RemoveStale(ctx context.Context) error {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing network namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), NamePrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || processAlive(pid) {
			continue
		}
		if err := deleteNamespace(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

// deleteNamespace removes a named namespace. Processes still inside keep it
// alive until they exit, but the name is gone, which is what a rerun needs.
func deleteNamespace(name string) error {
	if _, err := os.Stat(filepath.Join(runDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Not bound to a caller's context: cleanup must run even when the test's
	// context has already been cancelled.
	if err := ip(context.Background(), "netns", "delete", name); err != nil {
		// Another test process removing the same stale namespace got there
		// first: that is success.
		if _, serr := os.Stat(filepath.Join(runDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("deleting namespace: %w", err)
	}
	return nil
}

func prefixOf(a netip.Addr, subnet netip.Prefix) string {
	return netip.PrefixFrom(a, subnet.Bits()).String()
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("running ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Do runs fn on an OS thread that has entered the pod's namespace. Sockets
// created inside fn (net.Listen, net.Dial) belong to the pod's namespace for
// their whole life, wherever they are used afterwards. Goroutines started by
// fn run elsewhere, outside the namespace: http.Transport, for one, dials
// from a goroutine of its own, so dial inside fn and use the connection. The
// thread is
// discarded when fn returns, so the namespace never leaks into other
// goroutines.
func (p *Pod) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: a goroutine that exits locked takes its
		// thread with it, and this thread's namespace is no longer the
		// process's. Go creates new threads from a clean template thread
		// while a thread is locked, so the namespace cannot spread.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join(runDir, p.NS))
		if err != nil {
			errc <- fmt.Errorf("entering pod %s: %w", p.Name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering pod %s: %w", p.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Start starts cmd inside the pod's namespace. cmd may set
// SysProcAttr.Credential to run as another user: the process is forked from
// a thread that has already entered the namespace, so no privilege is needed
// after the fork.
func (p *Pod) Start(cmd *exec.Cmd) error {
	return p.Do(cmd.Start)
}

// Run runs a command in the pod's namespace as the current user and returns
// its combined output.
func (p *Pod) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := p.Start(cmd); err != nil {
		return nil, fmt.Errorf("running %s in pod %s: %w", name, p.Name, err)
	}
	if err := cmd.Wait(); err != nil {
		return []byte(out.String()), fmt.Errorf("running %s %s in pod %s: %w: %s", name, strings.Join(args, " "), p.Name, err, strings.TrimSpace(out.String()))
	}
	return []byte(out.String()), nil
}
