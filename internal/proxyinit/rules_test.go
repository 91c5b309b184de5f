package proxyinit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/golden"
)

func defaults() Options {
	return Options{InboundPort: 15101, OutboundPort: 15100, ProxyUID: 2710, AdminPort: 15190}
}

func mustPorts(t *testing.T, s ...string) []PortRange {
	t.Helper()
	p, err := ParsePorts(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustCIDRs(t *testing.T, s ...string) []netip.Prefix {
	t.Helper()
	p, err := ParseCIDRs(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildGolden(t *testing.T) {
	skips := defaults()
	skips.SkipInboundPorts = mustPorts(t, "25, 8000-8100", "9090")
	skips.SkipOutboundPorts = mustPorts(t, "5432,6379")
	skips.SkipOutboundCIDRs = mustCIDRs(t, "10.1.2.3/16,fd00::/8", "169.254.169.254")

	custom := Options{InboundPort: 4143, OutboundPort: 4140, ProxyUID: 1337, AdminPort: 0}

	for name, o := range map[string]Options{
		"defaults": defaults(),
		"skips":    skips,
		"no-admin": custom,
	} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			for _, f := range []Family{IPv4, IPv6} {
				fmt.Fprintf(&b, "# %s\n", f)
				b.WriteString(Build(f, o).Render())
			}
			golden.Check(t, filepath.Join("testdata", "build-"+name+".golden"), []byte(b.String()))
		})
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts([]string{" 25 ,8000-8100", "65535"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PortRange{{25, 25}, {8000, 8100}, {65535, 65535}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "0", "65536", "80,", "x", "90-80", "1-2-3", "-5"} {
		if _, err := ParsePorts([]string{bad}); err == nil {
			t.Errorf("ParsePorts(%q) accepted a bad list", bad)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs([]string{"10.1.2.3/8, 192.168.0.1", "fd00::1/8,::ffff:1.2.3.4"})
	if err != nil {
		t.Fatal(err)
	}
	want := "[10.0.0.0/8 192.168.0.1/32 fd00::/8 1.2.3.4/32]"
	if fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "10.0.0.0/8,", "example.com"} {
		if _, err := ParseCIDRs([]string{bad}); err == nil {
			t.Errorf("ParseCIDRs(%q) accepted a bad list", bad)
		}
	}
}

// The saved tables in testdata are real iptables-nft-save output, trimmed of
// their timestamp comments: a fresh namespace, one after `meshproxy init`,
// and one that also holds a CNI chain of another owner and a duplicated jump
// (as a buggy earlier init would leave).
func TestApplyScriptAddsOnlyMissingJumps(t *testing.T) {
	rules := Build(IPv4, defaults())
	for _, name := range []string{"save-empty", "save-installed", "save-foreign"} {
		t.Run(name, func(t *testing.T) {
			save, err := os.ReadFile(filepath.Join("testdata", name+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", "apply-"+name+".golden"), []byte(ApplyScript(rules, save)))
		})
	}
}

func TestRemoveScript(t *testing.T) {
	for _, name := range []string{"save-empty", "save-installed", "save-foreign"} {
		t.Run(name, func(t *testing.T) {
			save, err := os.ReadFile(filepath.Join("testdata", name+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			script, ok := RemoveScript(save)
			golden.Check(t, filepath.Join("testdata", "remove-"+name+".golden"), []byte(fmt.Sprintf("# anything to remove: %v\n%s", ok, script)))
		})
	}
}

// scriptedRunner answers by tool name. It stands in for iptables only to
// provoke what the real tools cannot be made to do on a test machine:
// missing variants, a kernel without nf_tables, failures mid-way.
type scriptedRunner map[string]string // name -> stdout; "!msg" fails with msg

func (s scriptedRunner) Run(_ context.Context, name string, _ []string, _ []byte) ([]byte, error) {
	out, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("%s: executable file not found", name)
	}
	if msg, failed := strings.CutPrefix(out, "!"); failed {
		return nil, errors.New(msg)
	}
	return []byte(out), nil
}

func TestDetectBackend(t *testing.T) {
	ctx := context.Background()
	rulesIn := func(n int) string { return "*nat\n" + strings.Repeat("-A POSTROUTING -j MASQUERADE\n", n) + "COMMIT\n" }
	cases := []struct {
		name    string
		tools   scriptedRunner
		family  Family
		mode    Mode
		want    string // Backend.Restore, or "error"
		wantErr string
	}{
		{"tie prefers nft", scriptedRunner{"iptables-nft-save": rulesIn(0), "iptables-legacy-save": rulesIn(0)}, IPv4, ModeAuto, "iptables-nft-restore", ""},
		{"legacy holds the rules", scriptedRunner{"iptables-nft-save": rulesIn(1), "iptables-legacy-save": rulesIn(3)}, IPv4, ModeAuto, "iptables-legacy-restore", ""},
		{"no nf_tables in kernel", scriptedRunner{"iptables-nft-save": "!Failed to initialize nft: Protocol not supported", "iptables-legacy-save": rulesIn(0)}, IPv4, ModeAuto, "iptables-legacy-restore", ""},
		{"ipv6 tools", scriptedRunner{"ip6tables-nft-save": rulesIn(0)}, IPv6, ModeAuto, "ip6tables-nft-restore", ""},
		{"forced legacy", scriptedRunner{"iptables-nft-save": rulesIn(9), "iptables-legacy-save": rulesIn(0)}, IPv4, ModeLegacy, "iptables-legacy-restore", ""},
		{"plain tools only", scriptedRunner{"iptables": "iptables v1.8.7 (legacy)\n"}, IPv4, ModeAuto, "iptables-restore", ""},
		{"plain tools of the other mode", scriptedRunner{"iptables": "iptables v1.8.9 (nf_tables)\n"}, IPv4, ModeLegacy, "", "legacy tools not found"},
		{"nothing installed", scriptedRunner{}, IPv4, ModeAuto, "", "detecting the iptables backend for IPv4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := DetectBackend(ctx, c.tools, c.family, c.mode)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, %v; want an error containing %q", b, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Restore != c.want {
				t.Errorf("got %s, want %s", b.Restore, c.want)
			}
		})
	}
}

func TestApplyReportsRestoreFailure(t *testing.T) {
	b := Backend{Family: IPv4, Mode: ModeNFT, Save: "iptables-nft-save", Restore: "iptables-nft-restore"}
	tools := scriptedRunner{"iptables-nft-save": "*nat\nCOMMIT\n", "iptables-nft-restore": "!iptables-nft-restore: line 3 failed"}
	err := Apply(context.Background(), tools, b, Build(IPv4, defaults()))
	if err == nil || !strings.Contains(err.Error(), "installing IPv4 rules") || !strings.Contains(err.Error(), "line 3 failed") {
		t.Errorf("got %v, want the restore failure with context", err)
	}
}
