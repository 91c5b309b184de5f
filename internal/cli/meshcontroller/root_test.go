package meshcontroller

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/version"
)

func execute(args ...string) (stdout string, err error) {
	var out, errOut bytes.Buffer
	cmd := NewRootCmd(incluster.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), err
}

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
		{"chart arguments", []string{"--mesh-namespace=meshctl-system", "--webhook-port=15143", "--admin-port=15191",
			"--webhook-tls-dir=/var/run/meshctl/webhook-tls", "--meshapi-port=15112", "--identity-issuer-dir=/var/run/meshctl/identity-issuer",
			"--trust-anchors-dir=/var/run/meshctl/trust-anchors", "--log-level=info", "--kubeconfig=" + missing}, "loading --kubeconfig"},
		{"bad log level", []string{"--log-level=verbose"}, `reading --log-level: "verbose" is not one of debug, info, warn, error`},
		{"bad log format", []string{"--log-format=xml"}, `reading --log-format: "xml" is not one of json, text`},
		{"port out of range", []string{"--webhook-port=70000"}, "invalid argument"},
		{"no arguments", []string{"extra"}, "unknown command"},
		// The subcommand that was replaced by this binary is an error, not
		// a silent run of the control plane.
		{"old subcommand", []string{"controller"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := execute(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if out != "" {
				t.Errorf("stdout: %q; the controller writes only logs, to stderr", out)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, err := execute("version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "meshcontroller "+version.Get().Version+" ") {
		t.Errorf("version printed %q", out)
	}
	out, err = execute("version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var info version.Info
	if err := json.Unmarshal([]byte(out), &info); err != nil || info != version.Get() {
		t.Errorf("version -o json printed %q (%v), want %+v", out, err, version.Get())
	}
}
