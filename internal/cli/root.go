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

	// Only --config is every command's; the cluster and namespace flags are
	// registered by each command that uses them.
	root.PersistentFlags().String("config", "", "meshctl config file (default <user config dir>/meshctl/config.yaml)")

	// inject reads the mesh's configuration from the cluster (unless
	// --ignore-cluster); uninject works on manifests alone.
	injectCmd := inject.NewCmd(f, nil)
	f.AddClusterFlags(injectCmd)
	f.AddMeshNamespaceFlag(injectCmd)
	completeFormats(injectCmd)
	uninjectCmd := inject.NewUninjectCmd(f, nil)
	completeFormats(uninjectCmd)

	root.AddCommand(
		check.NewCmd(f, nil),
		injectCmd,
		uninjectCmd,
		lifecycle.NewInstallCmd(f, nil),
		lifecycle.NewUpgradeCmd(f, nil),
		lifecycle.NewUninstallCmd(f, nil),
		version.NewCmd(f, nil),
	)
	addCompletionCmd(root)
	return root
}

// completeFormats completes the format flags of commands this package does
// not build.
func completeFormats(cmd *cobra.Command) {
	if cmd.Flags().Lookup("output") != nil {
		_ = cmd.RegisterFlagCompletionFunc("output", command.CompleteChoices("yaml", "json"))
	}
	if cmd.Flags().Lookup("report-format") != nil {
		_ = cmd.RegisterFlagCompletionFunc("report-format", command.CompleteChoices("text", "json"))
	}
}

// Main runs meshctl with args and returns its exit code; errors are printed
// to the error stream (styled, or as JSON when the command was asked for
// JSON), with exit codes from command.CodeOf.
func Main(ctx context.Context, args []string, s command.Streams, getenv func(string) string) int {
	f := command.NewFactory(s)
	f.Getenv = getenv
	restore := routeClientLogs(f)
	defer restore()
	root := NewRootCmd(f, getenv)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return command.ExitOK
	}
	code := command.CodeOf(err)
	// cobra reports an unknown subcommand as a plain error.
	if code == command.ExitFailure && strings.HasPrefix(err.Error(), "unknown command") {
		code = command.ExitUsage
	}
	var silent command.Silent
	if !errors.As(err, &silent) {
		printError(s, cmd, err, code)
	}
	return code
}
