// Package version is `meshctl version`.
package version

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/version"
)

// Options are the flags of `meshctl version`.
type Options struct {
	Factory    *command.Factory
	ClientOnly bool
	Output     string
}

// Report is the data `meshctl version -o json` prints.
type Report struct {
	Client       version.Info  `json:"client"`
	ControlPlane *ControlPlane `json:"controlPlane,omitempty"`
	// ControlPlaneError says why the control plane's version is missing,
	// when it was asked for and could not be read.
	ControlPlaneError string `json:"controlPlaneError,omitempty"`
}

// ControlPlane is the installed control plane's version.
type ControlPlane struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
}

// NewCmd returns `meshctl version`; runF replaces the run function in tests.
func NewCmd(f *command.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of meshctl and of the installed control plane",
		Long: `Print the version of meshctl and, unless --client is given, the version of
the control plane installed in --mesh-namespace. An unreachable cluster is
reported but is not an error.`,
		Args: command.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := command.ValidateOutput(opts.Output, "json", "yaml"); err != nil {
				return err
			}
			if err := install.ValidNamespaceName(f.MeshNamespace); err != nil {
				return command.Usage(fmt.Errorf("invalid --mesh-namespace: %w", err))
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.ClientOnly, "client", false, "print only the client's version; do not contact the cluster")
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "output format: json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", command.CompleteChoices("json", "yaml"))
	f.AddMeshNamespaceFlag(cmd)
	f.AddClusterFlags(cmd)
	return cmd
}

// Run prints the versions.
func Run(ctx context.Context, opts *Options) error {
	rep := Report{Client: version.Get()}
	if !opts.ClientOnly {
		cp, err := controlPlane(ctx, opts.Factory)
		if err != nil {
			rep.ControlPlaneError = err.Error()
		}
		rep.ControlPlane = cp
	}
	s := opts.Factory.Streams
	if opts.Output != "" {
		return command.PrintData(s.Out, opts.Output, rep)
	}
	p := ui.New(s.Out, s.Colour && s.OutIsTerminal)
	p.Printf("%s %s\n", p.Heading("Client:       "), describe(rep.Client))
	switch {
	case opts.ClientOnly:
	case rep.ControlPlane != nil:
		p.Printf("%s %s %s\n", p.Heading("Control plane:"), rep.ControlPlane.Version, p.Faint("(namespace "+rep.ControlPlane.Namespace+")"))
		if rep.ControlPlane.Version != rep.Client.Version {
			e := ui.New(s.ErrOut, s.Colour && s.ErrOutIsTerminal)
			e.Println(e.Warn(fmt.Sprintf("meshctl %s differs from the control plane's %s: run `meshctl upgrade` or use a matching meshctl", rep.Client.Version, rep.ControlPlane.Version)))
		}
	default:
		p.Printf("%s %s\n", p.Heading("Control plane:"), p.Faint(rep.ControlPlaneError))
	}
	return nil
}

func controlPlane(ctx context.Context, f *command.Factory) (*ControlPlane, error) {
	kube, err := f.Clientset()
	if err != nil {
		return nil, fmt.Errorf("unavailable: %w", err)
	}
	inst, err := install.Find(ctx, kube, f.MeshNamespace)
	if errors.Is(err, install.ErrNotInstalled) {
		return nil, fmt.Errorf("not installed in namespace %s", f.MeshNamespace)
	}
	if err != nil {
		return nil, fmt.Errorf("unavailable: %w", err)
	}
	return &ControlPlane{Namespace: inst.Namespace, Version: inst.Version}, nil
}

func describe(i version.Info) string {
	commit := i.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s, %s)", i.Version, commit, i.GoVersion, i.Platform)
}
