package lifecycle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/install/render"
)

// writeCredentials generates a full set of credentials into files, as a
// user with their own CA and webhook certificate would hold them.
func writeCredentials(t *testing.T, namespace string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	id, err := install.GenerateIdentity("cluster.local", pkiSource())
	if err != nil {
		t.Fatal(err)
	}
	wh, err := install.GenerateWebhook(namespace, pkiSource())
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"ca.crt": id.TrustAnchorsPEM, "issuer.crt": id.IssuerCertPEM, "issuer.key": id.IssuerKeyPEM,
		"wh-ca.crt": wh.CABundlePEM, "wh.crt": wh.CertPEM, "wh.key": wh.KeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runInstall(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	f := command.NewFactory(command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd := NewInstallCmd(f, nil)
	// The root command silences these for every subcommand.
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// Given every credential, install --dry-run is a pure function of its
// inputs: the same bytes every time, in YAML and in JSON.
func TestDryRunIsDeterministic(t *testing.T) {
	dir := writeCredentials(t, "meshctl-system")
	args := []string{"--dry-run",
		"--identity-trust-anchors-file", filepath.Join(dir, "ca.crt"),
		"--identity-issuer-certificate-file", filepath.Join(dir, "issuer.crt"),
		"--identity-issuer-key-file", filepath.Join(dir, "issuer.key"),
		"--set-file", "webhook.caBundlePEM=" + filepath.Join(dir, "wh-ca.crt"),
		"--set-file", "webhook.certPEM=" + filepath.Join(dir, "wh.crt"),
		"--set-file", "webhook.keyPEM=" + filepath.Join(dir, "wh.key"),
		"--set", "controller.replicas=2",
	}
	for _, format := range []string{"yaml", "json"} {
		first, _, err := runInstall(t, append(args, "-o", format)...)
		if err != nil {
			t.Fatal(err)
		}
		second, _, err := runInstall(t, append(args, "-o", format)...)
		if err != nil {
			t.Fatal(err)
		}
		if first != second || first == "" {
			t.Errorf("%s output differs between two runs with the same inputs", format)
		}
	}
}

func TestInstallRejectsBadInputBeforeTouchingAnything(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(bad, []byte("controller:\n  replicas: 2\n   logLevel: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--set", "controller.replica=2"}, "allowed keys under controller are"},
		{"wrong type", []string{"--set", "controller.replicas=three"}, "controller.replicas"},
		{"broken values file", []string{"-f", bad}, bad + ":2:13:"},
		{"partial identity", []string{"--identity-trust-anchors-file", bad}, "give all three or none"},
		{"output without dry-run", []string{"-o", "json"}, "--output applies only with --dry-run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runInstall(t, append(tc.args, "--dry-run=false")...)
			if command.CodeOf(err) != command.ExitUsage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got exit %d, %v; want a usage error containing %q", command.CodeOf(err), err, tc.want)
			}
			if out != "" {
				t.Errorf("wrote to stdout on failure: %q", out)
			}
		})
	}
}

// Every kind the chart renders must be among those upgrade and uninstall
// search, or its objects would be left behind.
func TestOwnedKindsCoverTheChart(t *testing.T) {
	dir := writeCredentials(t, "meshctl-system")
	read := func(n string) []byte { b, _ := os.ReadFile(filepath.Join(dir, n)); return b }
	m, err := render.Render(render.Options{
		Namespace: "meshctl-system",
		Values:    map[string]any{"controller": map[string]any{"highAvailability": true}},
		Identity:  render.Identity{TrustAnchorsPEM: read("ca.crt"), IssuerCertPEM: read("issuer.crt"), IssuerKeyPEM: read("issuer.key")},
		Webhook:   render.Webhook{CABundlePEM: read("wh-ca.crt"), CertPEM: read("wh.crt"), KeyPEM: read("wh.key")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range m.Objects {
		if !install.IsOwnedKind(obj.GroupVersionKind().GroupKind()) {
			t.Errorf("the chart renders %s, which install.ownedKinds does not list", obj.GroupVersionKind())
		}
	}
}
