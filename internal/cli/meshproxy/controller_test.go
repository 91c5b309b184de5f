package meshproxy

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// The controller itself is tested against the API server in
// internal/controller; these tests cover the command's flags.
func TestControllerFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-kubeconfig")
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		// The chart's arguments parse; the run then stops at the missing
		// kubeconfig, before listening on anything.
		{"chart arguments", []string{"controller", "--mesh-namespace=meshctl-system", "--webhook-port=15143", "--admin-port=15191",
			"--webhook-tls-dir=/var/run/meshctl/webhook-tls", "--meshapi-port=15112", "--identity-issuer-dir=/var/run/meshctl/identity-issuer",
			"--trust-anchors-dir=/var/run/meshctl/trust-anchors", "--log-level=info", "--kubeconfig=" + missing}, "loading --kubeconfig"},
		{"bad log level", []string{"controller", "--log-level=verbose"}, `reading --log-level: "verbose" is not one of debug, info, warn, error`},
		{"bad log format", []string{"controller", "--log-format=xml"}, `reading --log-format: "xml" is not one of json, text`},
		{"port out of range", []string{"controller", "--webhook-port=70000"}, "invalid argument"},
		{"no arguments", []string{"controller", "extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := NewRootCmd(Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if out.Len() != 0 {
				t.Errorf("stdout: %q; the controller writes only logs, to stderr", out.String())
			}
		})
	}
}
