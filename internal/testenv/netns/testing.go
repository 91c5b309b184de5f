package netns

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"testing"
)

// RequireRoot skips the test unless it runs as root with the `ip` tool
// available, saying why, so that `go test ./...` stays green for a developer
// without privileges while CI (root) runs everything. It also skips in
// -short mode, which promises tests that need no root or system tools.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping in -short mode: needs root, network namespaces and iptables")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (run the tests as root, as CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the iproute2 `ip` tool is not installed (apt-get install iproute2)")
	}
}

// New returns a network on subnet (e.g. "10.77.0.0/24") for one test, and
// deletes it when the test ends, passed or failed. It skips the test when
// not root.
func New(t testing.TB, subnet string) *Network {
	t.Helper()
	RequireRoot(t)
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		t.Fatalf("parsing subnet: %v", err)
	}
	n, err := NewNetwork(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("removing network namespaces: %v", err)
		}
	})
	return n
}

// MustAddPod adds a pod or fails the test.
func (n *Network) MustAddPod(t testing.TB, name string) *Pod {
	t.Helper()
	p, err := n.AddPod(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
