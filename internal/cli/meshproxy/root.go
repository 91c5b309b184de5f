// Package meshproxy is the command tree of the meshproxy binary: the sidecar
// (run), the interception step (init), the proxy's startup gate (wait-ready)
// and version. It runs in every meshed pod, so it imports only cobra from the
// CLI libraries and nothing from k8s.io (deps_test.go holds it to that); the
// control plane is the meshcontroller binary.
package meshproxy

import (
	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/incluster"
)

// NewRootCmd returns the meshproxy command with all its subcommands.
func NewRootCmd(s incluster.Streams) *cobra.Command {
	root := &cobra.Command{
		Use:           "meshproxy",
		Short:         "The mesh's sidecar: proxy, interception init step and readiness gate",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.AddCommand(incluster.NewVersionCmd("meshproxy", s))
	root.AddCommand(newRunCmd(s))
	root.AddCommand(newInitCmd(s))
	root.AddCommand(newWaitReadyCmd(s))
	return root
}
