// Package check is `meshctl check`.
package check

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/check"
	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/version"
)

// The CLI's styled printer renders the check report.
var _ check.Style = (*ui.Printer)(nil)

// DefaultWait bounds how long checks that wait for the control plane to
// converge (its pods becoming ready) keep trying.
const DefaultWait = 5 * time.Minute

// Options are the flags of `meshctl check`.
type Options struct {
	Factory *command.Factory
	// Pre runs the pre-installation checks instead of those of an installed
	// control plane.
	Pre    bool
	Wait   time.Duration
	Output string
	// Now is the clock certificates and clock skew are judged by; nil means
	// time.Now.
	Now func() time.Time
}

// NewCmd returns `meshctl check`; runF replaces the run function in tests.
func NewCmd(f *command.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the cluster can take the mesh, or that the installed mesh is healthy",
		Long: `Check the control plane installed in --mesh-namespace: its objects, its pods,
its identity certificates and its webhook's certificate. With --pre, check
instead that the mesh can be installed: the API server is reachable and recent
enough, you may create every kind of object the mesh installs, the mesh's
namespace does not exist yet, and this machine's clock agrees with the
cluster's.

Checks that wait for the control plane to converge (pods becoming ready) are
retried until --wait has passed; a pod that cannot pull its image or be
scheduled fails at once. Every failed check links to its section of the
check guide.

Exit status: 0 when every check passed (warnings allowed), 1 when a check
failed (including one still failing when --wait ran out); the same in every
output format.`,
		Example: `  # Before installing
  meshctl check --pre

  # After installing, only the problems
  meshctl check -o short

  # In CI, as one JSON document, giving pods two minutes to become ready
  meshctl check -o json --wait 2m`,
		Args: command.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := command.ValidateOutput(opts.Output, check.Formats...); err != nil {
				return err
			}
			if opts.Wait < 0 {
				return command.UsageErrorf("invalid --wait %s: must not be negative", opts.Wait)
			}
			if err := install.ValidNamespaceName(f.MeshNamespace); err != nil {
				return command.Usage(fmt.Errorf("invalid --mesh-namespace: %w", err))
			}
			if ns, given := f.WorkloadNamespace(); given {
				if err := install.ValidNamespaceName(ns); err != nil {
					return command.Usage(fmt.Errorf("invalid --namespace: %w", err))
				}
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Pre, "pre", false, "check that the mesh can be installed, instead of checking the installed mesh")
	cmd.Flags().DurationVar(&opts.Wait, "wait", DefaultWait, "how long to retry checks that wait for the control plane to converge")
	cmd.Flags().StringVarP(&opts.Output, "output", "o", check.FormatTable, "output format: table, short (only problems) or json")
	_ = cmd.RegisterFlagCompletionFunc("output", command.CompleteChoices(check.Formats...))
	f.AddMeshNamespaceFlag(cmd)
	f.AddWorkloadNamespaceFlag(cmd, "namespace of the workloads the data-plane checks look at (default: every namespace)")
	f.AddClusterFlags(cmd)
	return cmd
}

// Run runs the checks and prints the report as it goes. When a check
// failed it returns command.Silent, the report being already printed.
func Run(ctx context.Context, opts *Options) error {
	f := opts.Factory
	categories := check.PostInstall()
	if opts.Pre {
		categories = check.PreInstall()
	}
	p, err := check.NewPrinter(opts.Output, f.Streams.Out, ui.New(f.Streams.Out, f.Streams.Colour && f.Streams.OutIsTerminal))
	if err != nil {
		return command.Usage(err)
	}
	state := check.NewState(check.Config{
		RESTConfig: f.RESTConfig,
		Namespace:  f.MeshNamespace,
		Version:    version.Get().Version,
		// -n: the workloads' namespace, as in kubectl.
		WorkloadNamespace: workloadNamespace(f),
		Now:               opts.Now,
	})
	sum := check.Run(ctx, state, categories, check.Options{Wait: opts.Wait}, p.Print)
	if err := p.Finish(sum); err != nil {
		return err
	}
	return exitError(sum)
}

// exitError maps a run's summary to the command's exit code; the report is
// printed already, so the error is Silent. A check still failing when --wait
// runs out has failed like any other: CI asks "is the mesh healthy", and the
// answer does not depend on why it is not.
func exitError(sum check.Summary) error {
	if sum.Success {
		return nil
	}
	return command.Silent{Code: command.ExitFailure}
}

func workloadNamespace(f *command.Factory) string {
	ns, _ := f.WorkloadNamespace()
	return ns
}
