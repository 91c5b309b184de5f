package meshproxy

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/proxyinit"
	"github.com/meshctl/mesh/internal/testenv/netns"

	"github.com/meshctl/mesh/internal/cli/incluster"
)

func runMeshproxy(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	cmd := NewRootCmd(incluster.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// The dry run prints exactly what the library would install for the flags,
// with the annotation-style lists passed through unchanged.
func TestInitDryRunPrintsTheRules(t *testing.T) {
	out, _, err := runMeshproxy("init", "--dry-run", "--ipv6",
		"--skip-inbound-ports", "25, 8000-8100", "--skip-outbound-ports", "5432",
		"--skip-outbound-cidrs", "10.1.0.0/16,fd00::/8", "--proxy-uid", "1337")
	if err != nil {
		t.Fatal(err)
	}
	o := proxyinit.Options{
		InboundPort: 15101, OutboundPort: 15100, ProxyUID: 1337, AdminPort: 15190,
		SkipInboundPorts:  []proxyinit.PortRange{{First: 25, Last: 25}, {First: 8000, Last: 8100}},
		SkipOutboundPorts: []proxyinit.PortRange{{First: 5432, Last: 5432}},
	}
	o.SkipOutboundCIDRs, _ = proxyinit.ParseCIDRs([]string{"10.1.0.0/16", "fd00::/8"})
	want := "# IPv4 rules for iptables-restore --noflush\n" + proxyinit.Build(proxyinit.IPv4, o).Render() +
		"# IPv6 rules for ip6tables-restore --noflush\n" + proxyinit.Build(proxyinit.IPv6, o).Render()
	if out != want {
		t.Errorf("dry run printed\n%s\nwant\n%s", out, want)
	}
}

func TestInitRejectsBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"--skip-inbound-ports", "80,"},
		{"--skip-outbound-ports", "99999"},
		{"--skip-outbound-cidrs", "10.0.0.0/40"},
		{"--iptables-mode", "nftables"},
		{"--inbound-port", "0"},
	} {
		_, _, err := runMeshproxy(append([]string{"init", "--dry-run"}, args...)...)
		if err == nil {
			t.Errorf("init %v: accepted a bad value", args)
		}
	}
}

// The command end to end, as root in a namespace of its own: install twice
// (a restarted init container), then remove, with the messages an operator
// reads in the init container's log.
func TestInitInstallsAndRemovesInANamespace(t *testing.T) {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("skipping: iptables is not installed (apt-get install iptables)")
	}
	pod := netns.New(t, "10.237.0.0/24").MustAddPod(t, "p")
	inPod := func(args ...string) (string, string) {
		t.Helper()
		var stdout, stderr string
		if err := pod.Do(func() (err error) {
			stdout, stderr, err = runMeshproxy(args...)
			return err
		}); err != nil {
			t.Fatalf("meshproxy %v: %v\n%s", args, err, stderr)
		}
		return stdout, stderr
	}
	for range 2 {
		_, msg := inPod("init", "--skip-outbound-ports", "5432")
		if !strings.Contains(msg, "installed interception rules: IPv4 (nf_tables") {
			t.Errorf("install said %q", msg)
		}
	}
	out, err := pod.Run(context.Background(), "iptables-nft-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "-j "+proxyinit.ChainOutbound+"\n"); n != 1 {
		t.Errorf("%d jumps to %s after two installs, want 1:\n%s", n, proxyinit.ChainOutbound, out)
	}
	if !strings.Contains(string(out), "--dport 5432 -j RETURN") {
		t.Errorf("skipped port missing:\n%s", out)
	}
	removal, _ := inPod("init", "--remove", "--dry-run")
	if !strings.Contains(removal, "-X "+proxyinit.ChainOutbound) {
		t.Errorf("removal dry run printed %q", removal)
	}
	if _, msg := inPod("init", "--remove"); !strings.Contains(msg, "removed the mesh's interception rules") {
		t.Errorf("remove said %q", msg)
	}
	if _, msg := inPod("init", "--remove"); !strings.Contains(msg, "no interception rules of the mesh to remove") {
		t.Errorf("second remove said %q", msg)
	}
}
