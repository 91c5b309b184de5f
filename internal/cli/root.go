// Package cli is meshctl's command line: the only package (with its
// subpackages) that imports cobra, viper and lipgloss. Commands bind flags
// onto option structs and call the libraries under internal/.
package cli

import (
	"context"
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/cmd/check"
	"github.com/meshctl/mesh/internal/cli/cmd/inject"
	"github.com/meshctl/mesh/internal/cli/cmd/lifecycle"
	"github.com/meshctl/mesh/internal/cli/cmd/version"
	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
)

// NewRootCmd returns meshctl's command tree over f.
func NewRootCmd(f *command.Factory, getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "Install, check, inject and operate the mesh",
		Long: `meshctl installs, upgrades, checks and uninstalls the mesh's control plane,
and injects the mesh's sidecar proxy into workload manifests.

Data goes to standard output and progress to standard error, so the output of
any command can be piped into kubectl or jq.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindConfig(cmd, getenv); err != nil {
				return command.Usage(err)
			}
			return nil
		},
	}
	root.SetIn(f.Streams.In)
	root.SetOut(f.Streams.Out)
	root.SetErr(f.Streams.ErrOut)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return command.UsageErrorf("%v\nSee '%s --help'.", err, cmd.CommandPath())
	})

	pf := root.PersistentFlags()
	pf.String("config", "", "meshctl config file (default <user config dir>/meshctl/config.yaml)")
	pf.StringVar(&f.MeshNamespace, "mesh-namespace", f.MeshNamespace, "namespace of the mesh's control plane")
	f.KubeFlags.AddFlags(pf)

	root.CompletionOptions.HiddenDefaultCmd = false
	root.AddCommand(
		check.NewCmd(f, nil),
		inject.NewCmd(f, nil),
		inject.NewUninjectCmd(f, nil),
		lifecycle.NewInstallCmd(f, nil),
		lifecycle.NewUpgradeCmd(f, nil),
		lifecycle.NewUninstallCmd(f, nil),
		version.NewCmd(f, nil),
	)
	return root
}

// Main runs meshctl with args and returns its exit code; errors are printed
// to the error stream, styled, with exit codes from command.CodeOf.
func Main(ctx context.Context, args []string, s command.Streams, getenv func(string) string) int {
	f := command.NewFactory(s)
	root := NewRootCmd(f, getenv)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return command.ExitOK
	}
	var silent command.Silent
	if !errors.As(err, &silent) {
		p := ui.New(s.ErrOut, s.Colour && s.ErrOutIsTerminal)
		p.Println(p.Red("Error:") + " " + strings.TrimSpace(err.Error()))
	}
	if code := command.CodeOf(err); code != command.ExitFailure {
		return code
	}
	// cobra reports an unknown subcommand as a plain error.
	if strings.HasPrefix(err.Error(), "unknown command") {
		return command.ExitUsage
	}
	return command.ExitFailure
}
