package meshproxy

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/proxyinit"
	"github.com/meshctl/mesh/internal/wellknown"
)

// initOptions holds the flag values of `meshproxy init`. The skip-* flags are
// named after the pod annotations (meshctl.dev/skip-inbound-ports, ...) so the
// injector passes an annotation's value through unchanged.
type initOptions struct {
	InboundPort       uint16
	OutboundPort      uint16
	ProxyUID          uint32
	AdminPort         uint16
	SkipInboundPorts  []string
	SkipOutboundPorts []string
	SkipOutboundCIDRs []string
	IPv6              bool
	DryRun            bool
	Remove            bool
	IPTablesMode      string
}

func newInitCmd(s incluster.Streams) *cobra.Command {
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Install the iptables rules that send the pod's TCP traffic through the proxy",
		Long: `Install, in the nat table of the current network namespace, the rules that
redirect inbound TCP to the proxy's inbound port and outbound TCP to its
outbound port, except the proxy's own connections, loopback traffic, the admin
port and the ports and networks given to skip. Running it again replaces the
rules; --remove deletes them; --dry-run prints them in iptables-restore format
and touches nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(cmd.Context(), o, s)
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&o.InboundPort, "inbound-port", wellknown.ProxyInboundPort, "port of the proxy's inbound listener, target of redirected inbound connections")
	f.Uint16Var(&o.OutboundPort, "outbound-port", wellknown.ProxyOutboundPort, "port of the proxy's outbound listener, target of redirected outbound connections")
	f.Uint32Var(&o.ProxyUID, "proxy-uid", wellknown.ProxyUID, "user id the proxy runs as; its own connections are never redirected")
	f.Uint16Var(&o.AdminPort, "admin-port", wellknown.ProxyAdminPort, "port of the proxy's admin server; inbound connections to it are not redirected (0: none)")
	f.StringSliceVar(&o.SkipInboundPorts, "skip-inbound-ports", nil, "inbound destination ports and ranges that bypass the proxy, e.g. 25,8000-8100 (the meshctl.dev/skip-inbound-ports annotation)")
	f.StringSliceVar(&o.SkipOutboundPorts, "skip-outbound-ports", nil, "outbound destination ports and ranges that bypass the proxy, e.g. 5432,6379 (the meshctl.dev/skip-outbound-ports annotation)")
	f.StringSliceVar(&o.SkipOutboundCIDRs, "skip-outbound-cidrs", nil, "outbound destination networks that bypass the proxy, e.g. 10.0.0.0/8,fd00::/8 (the meshctl.dev/skip-outbound-cidrs annotation)")
	f.BoolVar(&o.IPv6, "ipv6", false, "also install the rules for IPv6 with ip6tables")
	f.BoolVar(&o.DryRun, "dry-run", false, "print the rules in iptables-restore format instead of installing them")
	f.BoolVar(&o.Remove, "remove", false, "remove the mesh's rules and chains instead of installing them")
	f.StringVar(&o.IPTablesMode, "iptables-mode", string(proxyinit.ModeAuto), "iptables backend: auto (the one already holding rules, else nft), nft or legacy")
	return cmd
}

func (o *initOptions) families() []proxyinit.Family {
	if o.IPv6 {
		return []proxyinit.Family{proxyinit.IPv4, proxyinit.IPv6}
	}
	return []proxyinit.Family{proxyinit.IPv4}
}

func (o *initOptions) ruleOptions() (proxyinit.Options, error) {
	inbound, err := proxyinit.ParsePorts(o.SkipInboundPorts)
	if err != nil {
		return proxyinit.Options{}, fmt.Errorf("reading --skip-inbound-ports: %w", err)
	}
	outbound, err := proxyinit.ParsePorts(o.SkipOutboundPorts)
	if err != nil {
		return proxyinit.Options{}, fmt.Errorf("reading --skip-outbound-ports: %w", err)
	}
	cidrs, err := proxyinit.ParseCIDRs(o.SkipOutboundCIDRs)
	if err != nil {
		return proxyinit.Options{}, fmt.Errorf("reading --skip-outbound-cidrs: %w", err)
	}
	if o.InboundPort == 0 || o.OutboundPort == 0 {
		return proxyinit.Options{}, fmt.Errorf("--inbound-port and --outbound-port must be 1-65535")
	}
	return proxyinit.Options{
		InboundPort:       o.InboundPort,
		OutboundPort:      o.OutboundPort,
		ProxyUID:          o.ProxyUID,
		AdminPort:         o.AdminPort,
		SkipInboundPorts:  inbound,
		SkipOutboundPorts: outbound,
		SkipOutboundCIDRs: cidrs,
	}, nil
}

func runInit(ctx context.Context, o *initOptions, s incluster.Streams) error {
	mode, err := proxyinit.ParseMode(o.IPTablesMode)
	if err != nil {
		return err
	}
	opts, err := o.ruleOptions()
	if err != nil {
		return err
	}
	runner := proxyinit.ExecRunner{}

	// A dry run of an install needs no iptables at all: the rules are a pure
	// function of the flags.
	if o.DryRun && !o.Remove {
		for _, fam := range o.families() {
			fmt.Fprintf(s.Out, "# %s rules for %s-restore --noflush\n", fam, toolName(fam))
			fmt.Fprint(s.Out, proxyinit.Build(fam, opts).Render())
		}
		return nil
	}

	for _, fam := range o.families() {
		b, err := proxyinit.DetectBackend(ctx, runner, fam, mode)
		if err != nil {
			return err
		}
		switch {
		case o.Remove && o.DryRun:
			save, err := runner.Run(ctx, b.Save, []string{"-t", "nat"}, nil)
			if err != nil {
				return fmt.Errorf("reading the nat table: %w", err)
			}
			script, _ := proxyinit.RemoveScript(save)
			fmt.Fprintf(s.Out, "# %s removal for %s --noflush\n", fam, b.Restore)
			fmt.Fprint(s.Out, script)
		case o.Remove:
			removed, err := proxyinit.Remove(ctx, runner, b)
			if err != nil {
				return err
			}
			if removed {
				fmt.Fprintf(s.ErrOut, "removed the mesh's interception rules: %s\n", b)
			} else {
				fmt.Fprintf(s.ErrOut, "no interception rules of the mesh to remove: %s\n", b)
			}
		default:
			if err := proxyinit.Apply(ctx, runner, b, proxyinit.Build(fam, opts)); err != nil {
				return err
			}
			fmt.Fprintf(s.ErrOut, "installed interception rules: %s, inbound -> :%d, outbound -> :%d\n", b, opts.InboundPort, opts.OutboundPort)
		}
	}
	return nil
}

func toolName(f proxyinit.Family) string {
	if f == proxyinit.IPv6 {
		return "ip6tables"
	}
	return "iptables"
}
