package command

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// PrintData writes v as one JSON document (indented) or YAML. It renders into
// memory first, so a failure never leaves half a document on the stream.
func PrintData(w io.Writer, format string, v any) error {
	var buf bytes.Buffer
	switch format {
	case "json":
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding YAML: %w", err)
		}
		buf.Write(b)
	default:
		return UsageErrorf("unknown output format %q: use json or yaml", format)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// ValidateOutput checks an --output value against the formats a command
// supports ("" is the human format and always allowed).
func ValidateOutput(format string, allowed ...string) error {
	if format == "" {
		return nil
	}
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return UsageErrorf("invalid --output %q: use one of %v", format, allowed)
}
