// Package proxyinit builds and installs the iptables rules that send a pod's
// TCP traffic through its sidecar: inbound connections to the proxy's inbound
// listener, outbound connections to its outbound listener. The rules are built
// by a pure function (Build) and rendered in iptables-restore format, so what
// `meshproxy init --dry-run` prints is exactly what Apply installs.
package proxyinit

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The chains the mesh owns in the nat table. Their names are the contract
// with Remove and with anyone reading iptables-save output in a pod; the
// prefix makes them recognisable and keeps them apart from CNI or kube-proxy
// chains.
const (
	ChainInbound          = "MESHCTL_INBOUND"
	ChainInboundRedirect  = "MESHCTL_INBOUND_REDIRECT"
	ChainOutbound         = "MESHCTL_OUTBOUND"
	ChainOutboundRedirect = "MESHCTL_OUTBOUND_REDIRECT"
)

// ownChains lists the chains in the order Render declares them.
var ownChains = []string{ChainInbound, ChainInboundRedirect, ChainOutbound, ChainOutboundRedirect}

// Family is an IP family: IPv4 rules go to iptables, IPv6 rules to ip6tables.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// PortRange is an inclusive range of TCP ports; a single port has First ==
// Last.
type PortRange struct {
	First, Last uint16
}

func (p PortRange) String() string {
	if p.First == p.Last {
		return strconv.Itoa(int(p.First))
	}
	return fmt.Sprintf("%d-%d", p.First, p.Last)
}

// iptables spells a range with a colon.
func (p PortRange) match() string {
	if p.First == p.Last {
		return strconv.Itoa(int(p.First))
	}
	return fmt.Sprintf("%d:%d", p.First, p.Last)
}

// ParsePorts parses a list of ports and ranges as the skip-*-ports
// annotations spell them: "25,443,8000-8100". Each element may itself hold a
// comma-separated list, so both repeated flags and one annotation value work.
// Blanks around elements are ignored; empty elements are not allowed.
func ParsePorts(values []string) ([]PortRange, error) {
	var out []PortRange
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				return nil, fmt.Errorf("parsing port list %q: empty element", v)
			}
			first, last, isRange := strings.Cut(item, "-")
			lo, err := parsePort(first)
			if err != nil {
				return nil, fmt.Errorf("parsing port list %q: %w", v, err)
			}
			hi := lo
			if isRange {
				if hi, err = parsePort(last); err != nil {
					return nil, fmt.Errorf("parsing port list %q: %w", v, err)
				}
				if hi < lo {
					return nil, fmt.Errorf("parsing port list %q: range %s ends before it starts", v, item)
				}
			}
			out = append(out, PortRange{First: lo, Last: hi})
		}
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: want 1-65535", s)
	}
	return uint16(n), nil
}

// ParseCIDRs parses a list of CIDRs as the skip-outbound-cidrs annotation
// spells it: "10.0.0.0/8,fd00::/8". A bare address means that one host. Host
// bits are cleared (10.1.2.3/8 becomes 10.0.0.0/8) because iptables stores
// the network form and idempotency compares with what it stores.
func ParseCIDRs(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				return nil, fmt.Errorf("parsing CIDR list %q: empty element", v)
			}
			if !strings.Contains(item, "/") {
				addr, err := netip.ParseAddr(item)
				if err != nil {
					return nil, fmt.Errorf("parsing CIDR list %q: %w", v, err)
				}
				out = append(out, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
				continue
			}
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("parsing CIDR list %q: %w", v, err)
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// Options are the inputs of the rules. The zero value is not useful; start
// from DefaultOptions.
type Options struct {
	// InboundPort receives every redirected inbound connection.
	InboundPort uint16
	// OutboundPort receives every redirected outbound connection.
	OutboundPort uint16
	// ProxyUID owns the proxy's sockets; its connections are never
	// redirected, or the proxy would loop back into itself.
	ProxyUID uint32
	// AdminPort is never redirected inbound, so that probes and scrapes reach
	// the proxy's admin server directly.
	AdminPort uint16
	// SkipInboundPorts are destination ports of inbound connections that go
	// straight to the application.
	SkipInboundPorts []PortRange
	// SkipOutboundPorts are destination ports of outbound connections that
	// bypass the proxy.
	SkipOutboundPorts []PortRange
	// SkipOutboundCIDRs are destination networks of outbound connections that
	// bypass the proxy. Each family's rules carry only its own networks.
	SkipOutboundCIDRs []netip.Prefix
}

// Rules is the rule set of one family, ready to render. Chains are declared
// (and so created or flushed) in order; Jumps hook them into the built-in
// chains; Rules fill them.
type Rules struct {
	Family Family
	// Jumps are the rules appended to PREROUTING and OUTPUT, in the
	// iptables-save spelling "-A CHAIN spec".
	Jumps []string
	// Rules fill the mesh's own chains, in the same spelling.
	Rules []string
}

// Build returns the rules of one family. It is pure: the same options always
// give the same rules, which is what the golden tests pin.
//
// Loopback: outbound connections leaving through lo are not redirected. That
// covers 127.0.0.0/8 and ::1, and also the application calling its own pod IP
// (the kernel routes local addresses through lo), so a pod talking to itself
// bypasses both of its proxy's listeners, as under Linkerd. Connections to a
// service VIP route through the pod's interface, not lo, and so are
// redirected even when the service's only endpoint is the pod itself; the
// proxy then dials the pod IP as ProxyUID, which returns early, so that hop
// reaches the application without passing the inbound listener. Inbound rules
// live in PREROUTING, which locally generated traffic (lo included) never
// traverses for NAT.
func Build(f Family, o Options) Rules {
	r := Rules{Family: f}
	r.Jumps = []string{
		"-A PREROUTING -p tcp -j " + ChainInbound,
		"-A OUTPUT -p tcp -j " + ChainOutbound,
	}
	add := func(format string, args ...any) { r.Rules = append(r.Rules, fmt.Sprintf(format, args...)) }

	if o.AdminPort != 0 {
		add("-A %s -p tcp -m tcp --dport %d -j RETURN", ChainInbound, o.AdminPort)
	}
	for _, p := range o.SkipInboundPorts {
		add("-A %s -p tcp -m tcp --dport %s -j RETURN", ChainInbound, p.match())
	}
	add("-A %s -p tcp -j %s", ChainInbound, ChainInboundRedirect)
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInboundRedirect, o.InboundPort)

	add("-A %s -m owner --uid-owner %d -j RETURN", ChainOutbound, o.ProxyUID)
	add("-A %s -o lo -j RETURN", ChainOutbound)
	for _, p := range o.SkipOutboundPorts {
		add("-A %s -p tcp -m tcp --dport %s -j RETURN", ChainOutbound, p.match())
	}
	for _, c := range o.SkipOutboundCIDRs {
		if (f == IPv6) != c.Addr().Is6() {
			continue
		}
		add("-A %s -d %s -j RETURN", ChainOutbound, c)
	}
	add("-A %s -p tcp -j %s", ChainOutbound, ChainOutboundRedirect)
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainOutboundRedirect, o.OutboundPort)
	return r
}

// Render returns the complete rule set in iptables-restore format, for
// `iptables-restore --noflush`: declaring the mesh's chains creates or flushes
// them, then the jumps and the chain contents are appended.
func (r Rules) Render() string {
	return r.script(r.Jumps)
}

// script renders the rules with the given jumps; Apply passes only the jumps
// that are missing so that applying twice does not duplicate them.
func (r Rules) script(jumps []string) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range ownChains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, j := range jumps {
		b.WriteString(j + "\n")
	}
	for _, l := range r.Rules {
		b.WriteString(l + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
