package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/version"
)

// UpgradeOptions are the flags of `meshctl upgrade`.
type UpgradeOptions struct {
	Factory *command.Factory
	DryRun  bool
	Wait    time.Duration
	values  valuesFlags
}

// NewUpgradeCmd returns `meshctl upgrade`; runF replaces the run function in
// tests.
func NewUpgradeCmd(f *command.Factory, runF func(context.Context, *UpgradeOptions) error) *cobra.Command {
	opts := &UpgradeOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade the control plane to this meshctl's version, or change its values",
		Long: `Upgrade the installed control plane to the version of this meshctl, with the
values stored at install (and by earlier upgrades) merged with any new --set
and -f values. The identity CA is kept, so running proxies keep trusting the
control plane.

upgrade shows what will change (a diff per object with --dry-run, a summary
otherwise), applies it with server-side apply, then deletes the mesh's
objects that the new version no longer renders, cluster-scoped ones included.
Only objects carrying the mesh's ownership label are ever deleted.`,
		Example: `  # See what an upgrade would change
  meshctl upgrade --dry-run

  # Upgrade, raising the controller's replicas
  meshctl upgrade --set controller.replicas=2`,
		Args: command.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkReadinessWait(opts.Wait); err != nil {
				return err
			}
			if err := checkMeshNamespace(f.MeshNamespace); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return RunUpgrade(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&opts.DryRun, "dry-run", false, "print the diff of every object that would change, and apply nothing")
	addReadinessWait(fs, &opts.Wait)
	opts.values.addFlags(fs)
	f.AddMeshNamespaceFlag(cmd)
	f.AddClusterFlags(cmd)
	return cmd
}

// RunUpgrade plans the upgrade, shows it, and applies it unless --dry-run.
func RunUpgrade(ctx context.Context, opts *UpgradeOptions) error {
	f := opts.Factory
	values, id, wh, err := opts.values.load(f)
	if err != nil {
		return err
	}
	if id != nil {
		return command.UsageErrorf("the identity CA cannot be changed by upgrade: it is kept so that running proxies keep their trust")
	}
	c, err := clients(f)
	if err != nil {
		return err
	}
	plan, err := install.PlanUpgrade(ctx, c, install.Options{
		Namespace: f.MeshNamespace,
		Values:    values,
		Webhook:   wh,
		Version:   version.Get().Version,
		Wait:      opts.Wait,
		Observer:  progress(f.Streams),
	})
	if err != nil {
		return lifecycleError("upgrade", err)
	}
	e := ui.New(f.Streams.ErrOut, f.Streams.Colour && f.Streams.ErrOutIsTerminal)
	if from, to, differ := plan.Skew(); differ {
		e.Println(e.Warn(fmt.Sprintf("the control plane runs %s; this meshctl upgrades it to %s", from, to)))
	}
	if opts.DryRun {
		out := ui.New(f.Streams.Out, f.Streams.Colour && f.Streams.OutIsTerminal)
		for _, ch := range plan.Changes {
			if ch.Action == install.ActionUnchanged {
				continue
			}
			out.Println(out.Heading(fmt.Sprintf("# %s %s", ch.Action, ch.Object)))
			out.Printf("%s", ch.Diff)
		}
		e.Println(e.Faint("dry run: " + plan.Summary() + "; nothing was applied"))
		return nil
	}
	e.Println(e.Faint("upgrade: " + plan.Summary()))
	if _, err := plan.Apply(ctx, c); err != nil {
		return lifecycleError("upgrade", err)
	}
	e.Println(e.OK(fmt.Sprintf("the control plane in namespace %s is at %s", f.MeshNamespace, plan.Options.Version)))
	return nil
}
