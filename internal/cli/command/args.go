package command

import "github.com/spf13/cobra"

// Args wraps a cobra positional-argument check so that its failure is a usage
// error (exit code 2), like a bad flag.
func Args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return UsageErrorf("%v\nSee '%s --help'.", err, cmd.CommandPath())
		}
		return nil
	}
}
