package meshproxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/proxyinit"
)

func runMeshproxy(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	cmd := NewRootCmd(Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
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
