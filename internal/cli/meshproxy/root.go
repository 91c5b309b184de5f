// Package meshproxy is the command tree of the meshproxy binary: the sidecar
// (run), the interception step (init), the control plane (controller) and
// version. It imports only cobra from the CLI libraries, so the in-cluster
// binary stays small.
package meshproxy

import (
	"io"

	"github.com/spf13/cobra"
)

// Streams are the standard streams a command writes to; tests pass buffers.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// NewRootCmd returns the meshproxy command with all its subcommands.
func NewRootCmd(s Streams) *cobra.Command {
	root := &cobra.Command{
		Use:           "meshproxy",
		Short:         "The mesh's in-cluster binary: sidecar proxy, interception init step and control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.AddCommand(newVersionCmd(s))
	root.AddCommand(newRunCmd(s))
	root.AddCommand(newInitCmd(s))
	root.AddCommand(newControllerCmd(s))
	root.AddCommand(newWaitReadyCmd(s))
	return root
}
