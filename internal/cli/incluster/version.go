package incluster

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/version"
)

// NewVersionCmd returns the version command of the binary called name: one
// line for people, or version.Info as JSON with -o json (what release checks
// read).
func NewVersionCmd(name string, s Streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			switch output {
			case "":
				_, err := fmt.Fprintf(s.Out, "%s %s (commit %s, %s, %s)\n", name, info.Version, orUnknown(info.Commit), info.GoVersion, info.Platform)
				return err
			case "json":
				enc := json.NewEncoder(s.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			default:
				return fmt.Errorf("unknown output format %q for --output: use json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
