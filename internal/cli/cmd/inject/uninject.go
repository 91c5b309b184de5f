package inject

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
	transform "github.com/meshctl/mesh/internal/inject"
)

// UninjectOptions are the flags of `meshctl uninject`.
type UninjectOptions struct {
	Factory *command.Factory
	IO
}

// NewUninjectCmd returns `meshctl uninject`; runF replaces the run function
// in tests.
func NewUninjectCmd(f *command.Factory, runF func(context.Context, *UninjectOptions) error) *cobra.Command {
	opts := &UninjectOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "uninject [FILE|DIR|URL|-]...",
		Short: "Remove the mesh's proxy from the workloads of Kubernetes manifests",
		Long: `Remove what meshctl inject added to the workloads of the given manifests
(files, directories, https URLs, or - for standard input), exactly as the
meshctl.dev/injected annotation records it, and print the result: the
manifests as they were before injection, byte for byte. It needs no cluster.`,
		Example: `  meshctl uninject deploy.yaml
  kubectl get deploy web -o yaml | meshctl uninject - | kubectl apply -f -
  meshctl uninject --in-place k8s/`,
		Args: command.Args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Inputs = args
			opts.Stdin = f.Streams.In
			if err := opts.validate(); err != nil {
				return command.Usage(err)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return RunUninject(cmd.Context(), opts)
		},
	}
	addIOFlags(cmd, &opts.IO)
	return cmd
}

// RunUninject uninjects every input and writes the results.
func RunUninject(ctx context.Context, opts *UninjectOptions) error {
	ins, err := opts.read(ctx)
	if err != nil {
		return err
	}
	results, err := transformAll(ins, transform.Uninject)
	if err != nil {
		return err
	}
	return opts.write(opts.Factory.Streams, results)
}
