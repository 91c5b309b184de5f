package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// privateNetns is a network namespace of the test's own, entered by one
// locked OS thread: sockets created by functions run through do live in
// it, whatever goroutine uses them afterwards. It keeps a test's loopback
// traffic and sysctls away from the machine's.
type privateNetns struct {
	reqs chan func()
}

// newPrivateNetns creates the namespace with loopback up and the given
// sysctls (paths under /proc/sys) set. It skips the test when not root.
func newPrivateNetns(t testing.TB, sysctls map[string]string) *privateNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	ns := &privateNetns{reqs: make(chan func())}
	ready := make(chan error)
	go func() {
		// The thread is never unlocked: when this goroutine ends, the
		// runtime discards the thread and the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare: %w", err)
			return
		}
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			ready <- fmt.Errorf("setting lo up: %v: %s", err, out)
			return
		}
		for k, v := range sysctls {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				ready <- fmt.Errorf("setting %s: %w", k, err)
				return
			}
		}
		ready <- nil
		for f := range ns.reqs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(ns.reqs) })
	return ns
}

// do runs f on the namespace's thread.
func (ns *privateNetns) do(f func()) {
	done := make(chan struct{})
	ns.reqs <- func() { f(); close(done) }
	<-done
}

// dial connects from inside the namespace.
func (ns *privateNetns) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	ns.do(func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) })
	return c, err
}

// listen binds inside the namespace.
func (ns *privateNetns) listen(addr string) (ln net.Listener, err error) {
	ns.do(func() { ln, err = net.Listen("tcp", addr) })
	return ln, err
}
