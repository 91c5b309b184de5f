package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	"github.com/meshctl/mesh/internal/install"
)

// UninstallOptions are the flags of `meshctl uninstall`.
type UninstallOptions struct {
	Factory *command.Factory
	DryRun  bool
	Force   bool
	Purge   bool
	Wait    time.Duration
}

// NewUninstallCmd returns `meshctl uninstall`; runF replaces the run function
// in tests.
func NewUninstallCmd(f *command.Factory, runF func(context.Context, *UninstallOptions) error) *cobra.Command {
	opts := &UninstallOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the control plane and everything else the mesh owns",
		Long: `Delete every object the mesh owns, found by its ownership label: the
control plane, its RBAC, the webhook configuration, the mesh's CRDs and the
namespace, and wait until they are gone. Finalizers the mesh put on its
objects are removed; nobody else's are.

The namespace is deleted only when meshctl install created it; a namespace
that existed before the install (and Kubernetes' own) is kept, with
everything in it that is not the mesh's, and loses only the mesh's labels.

uninstall refuses while pods still run the mesh's proxy, and lists them:
uninject or delete them first, or pass --force. A CRD that still holds custom
resources the mesh did not create is kept unless --purge is given.
Running uninstall when nothing is installed does nothing and succeeds.`,
		Example: `  # See what would be deleted
  meshctl uninstall --dry-run

  # Remove the mesh even though workloads are still injected
  meshctl uninstall --force`,
		Args: command.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Wait <= 0 {
				return command.UsageErrorf("invalid --wait %s: must be positive", opts.Wait)
			}
			// Uninstall may clean a mesh out of a namespace install would
			// refuse today (never deleting that namespace), so only the
			// name is checked.
			if err := install.ValidNamespaceName(f.MeshNamespace); err != nil {
				return command.Usage(fmt.Errorf("invalid --mesh-namespace: %w", err))
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return RunUninstall(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&opts.DryRun, "dry-run", false, "list what would be deleted, and delete nothing")
	fs.BoolVar(&opts.Force, "force", false, "uninstall even while pods still run the mesh's proxy")
	fs.BoolVar(&opts.Purge, "purge", false, "delete the mesh's CRDs even when they hold custom resources the mesh did not create")
	fs.DurationVar(&opts.Wait, "wait", 5*time.Minute, "how long to wait for the deleted objects to be gone")
	f.AddMeshNamespaceFlag(cmd)
	f.AddClusterFlags(cmd)
	return cmd
}

// RunUninstall plans the uninstall, prints it, and carries it out.
func RunUninstall(ctx context.Context, opts *UninstallOptions) error {
	f := opts.Factory
	c, err := clients(f)
	if err != nil {
		return err
	}
	plan, err := install.PlanUninstall(ctx, c, install.UninstallOptions{Namespace: f.MeshNamespace, Purge: opts.Purge})
	if err != nil {
		return err
	}
	e := ui.New(f.Streams.ErrOut, f.Streams.Colour && f.Streams.ErrOutIsTerminal)
	for _, k := range plan.KeptCRDs {
		e.Println(e.Warn(fmt.Sprintf("keeping CustomResourceDefinition %s: it holds %d resources the mesh did not create (first: %s); use --purge to delete them", k.Name, len(k.Resources), k.Resources[0])))
	}
	if plan.KeptNamespace != "" {
		e.Println(e.Warn("keeping namespace " + plan.KeptNamespace + ": meshctl install did not create it (no label " + install.LabelNamespaceCreated + "=true); only the mesh's objects and labels are removed from it"))
	}
	if opts.DryRun {
		out := ui.New(f.Streams.Out, f.Streams.Colour && f.Streams.OutIsTerminal)
		for _, r := range plan.Objects {
			out.Println(r.String())
		}
		e.Println(e.Faint(fmt.Sprintf("dry run: %d objects would be deleted", len(plan.Objects))))
		if len(plan.Injected) > 0 && !opts.Force {
			e.Println(e.Warn(fmt.Sprintf("%d pods still run the mesh's proxy: uninstall would refuse without --force", len(plan.Injected))))
		}
		return nil
	}
	if len(plan.Objects) == 0 {
		e.Println(e.OK("nothing of the mesh is installed in namespace " + f.MeshNamespace))
		return nil
	}
	if len(plan.Injected) > 0 && !opts.Force {
		msg := fmt.Sprintf("%d pods still run the mesh's proxy:", len(plan.Injected))
		for i, r := range plan.Injected {
			if i == 20 {
				msg += fmt.Sprintf("\n  ... and %d more", len(plan.Injected)-i)
				break
			}
			msg += "\n  " + r.String()
		}
		return command.Refused(fmt.Errorf("%s\nuninject or delete them first (they lose their proxy's configuration and identity without the control plane), or pass --force", msg))
	}
	if err := install.Uninstall(ctx, c, plan, opts.Wait, progress(f.Streams)); err != nil {
		return lifecycleError("uninstall", err)
	}
	e.Println(e.OK(fmt.Sprintf("the mesh is uninstalled from namespace %s", f.MeshNamespace)))
	return nil
}
