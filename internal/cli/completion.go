package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
)

// shells are those cobra writes completion scripts for.
var shells = []string{"bash", "zsh", "fish", "powershell"}

// addCompletionCmd adds cobra's completion command now rather than at
// Execute time, and makes a shell it does not know a usage error: cobra
// would print the help and exit 0, and an install script would write the
// help into the user's shell startup files.
func addCompletionCmd(root *cobra.Command) {
	root.CompletionOptions.HiddenDefaultCmd = false
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Args = command.Args(func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			return command.UsageErrorf("unknown shell %q: meshctl completes %s", args[0], strings.Join(shells, ", "))
		})
		c.RunE = func(cmd *cobra.Command, args []string) error {
			return command.UsageErrorf("name a shell: meshctl completion %s", strings.Join(shells, "|"))
		}
	}
}
