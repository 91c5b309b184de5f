package cli

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
)

// JSONError is how an error is printed when the command was asked for JSON
// (-o json, --report-format json): one document on standard error, so that
// standard output holds data only and stays empty on failure, and a script
// reading either stream never meets free text.
type JSONError struct {
	Error    string `json:"error"`
	ExitCode int    `json:"exitCode"`
}

// printError writes err to the error stream as JSON when cmd was asked for
// JSON, else as one styled "Error: ..." message.
func printError(s command.Streams, cmd *cobra.Command, err error, code int) {
	msg := strings.TrimSpace(err.Error())
	if wantsJSON(cmd) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if enc.Encode(JSONError{Error: msg, ExitCode: code}) == nil {
			_, _ = s.ErrOut.Write(buf.Bytes())
			return
		}
	}
	p := ui.New(s.ErrOut, s.Colour && s.ErrOutIsTerminal)
	p.Println(p.Red("Error:") + " " + msg)
}

// wantsJSON reports whether a format flag of cmd asks for JSON. It reads
// the flags as parsed so far: a flag error after "-o json" still gets JSON.
func wantsJSON(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	for _, name := range []string{"output", "report-format"} {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Value.String() == "json" {
			return true
		}
	}
	return false
}
