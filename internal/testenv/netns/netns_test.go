package netns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two pods on one network reach each other by address, each sees only its
// own interfaces, and the namespaces are gone after Close.
func TestPodsReachEachOther(t *testing.T) {
	n := New(t, "10.231.0.0/24")
	a, b := n.MustAddPod(t, "a"), n.MustAddPod(t, "b")

	var ln, ln6 net.Listener
	if err := b.Do(func() (err error) {
		if ln, err = net.Listen("tcp", ":8080"); err != nil {
			return err
		}
		ln6, err = net.Listen("tcp6", ":8081")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer ln6.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, c.RemoteAddr().String())
	}()

	var got string
	if err := a.Do(func() error {
		c, err := net.DialTimeout("tcp", b.Addr.String()+":8080", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf, err := io.ReadAll(c)
		got = string(buf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(got); host != a.Addr.String() {
		t.Errorf("server saw peer %q, want pod a's address %s", got, a.Addr)
	}

	// Pod b's address exists only inside pod b, not in the test process's
	// own namespace.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range addrs {
		if strings.HasPrefix(ad.String(), b.Addr.String()+"/") {
			t.Errorf("the host namespace has pod b's address %s", ad)
		}
	}

	out, err := a.Run(context.Background(), "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), a.Addr.String()+"/24") {
		t.Errorf("pod a's eth0: %s, want address %s/24", out, a.Addr)
	}

	if a.Addr6.IsValid() {
		if err := a.Do(func() error {
			c, err := net.DialTimeout("tcp6", netip.AddrPortFrom(b.Addr6, 8081).String(), 5*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Errorf("dialling pod b over IPv6: %v", err)
		}
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{a.NS, b.NS, n.hub} {
		if _, err := os.Stat(filepath.Join(runDir, ns)); err == nil {
			t.Errorf("namespace %s still exists after Close", ns)
		}
	}
}

// A namespace named after a process that no longer exists is removed by the
// next NewNetwork; one of a live process is not.
func TestRemoveStale(t *testing.T) {
	RequireRoot(t)
	ctx := context.Background()
	// Pid 2^22+1 is above the kernel's pid_max limit, so it is never alive.
	stale := NamePrefix + "4194305-1-hub"
	live := NamePrefix + "1-99-hub" // pid 1 is always alive
	for _, name := range []string{stale, live} {
		if err := ip(ctx, "netns", "add", name); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { deleteNamespace(stale); deleteNamespace(live) })

	if err := RemoveStale(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, stale)); err == nil {
		t.Errorf("stale namespace %s survived", stale)
	}
	if _, err := os.Stat(filepath.Join(runDir, live)); err != nil {
		t.Errorf("namespace %s of a live process was removed", live)
	}
}
