package render

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshctl/mesh/internal/wellknown"
)

// TestHelmTemplateParity renders the chart folder with a real `helm template`
// and compares the objects with Render's. It needs helm on PATH and skips
// without it; helm is not part of the build.
func TestHelmTemplateParity(t *testing.T) {
	helm, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm is not on PATH; skipping the parity check with `helm template`")
	}
	creds := filepath.Join("testdata", "credentials")
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			valuesFile := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(valuesFile, []byte(tc.values), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(helm, "template", ReleaseName, filepath.Join("..", "..", "..", "templates"),
				"--namespace", wellknown.DefaultMeshNamespace, "-f", valuesFile,
				"--set-file", KeyTrustAnchorsPEM+"="+filepath.Join(creds, "trust-anchors.crt"),
				"--set-file", KeyIssuerCertPEM+"="+filepath.Join(creds, "issuer.crt"),
				"--set-file", KeyIssuerKeyPEM+"="+filepath.Join(creds, "issuer.key"),
				"--set-file", KeyWebhookCAPEM+"="+filepath.Join(creds, "webhook-ca.crt"),
				"--set-file", KeyWebhookCertPEM+"="+filepath.Join(creds, "webhook.crt"),
				"--set-file", KeyWebhookKeyPEM+"="+filepath.Join(creds, "webhook.key"),
			)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, stderr.String())
			}
			helmObjects, err := decodeManifest(map[string]string{"helm.yaml": string(out)})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range helmObjects.Objects {
				labels := o.GetLabels()
				labels[wellknown.LabelK8sManagedBy] = ManagedBy
				o.SetLabels(labels)
				if o.GetKind() == "Deployment" {
					path := []string{"spec", "template", "metadata", "labels", wellknown.LabelK8sManagedBy}
					if err := unstructured.SetNestedField(o.Object, ManagedBy, path...); err != nil {
						t.Fatal(err)
					}
				}
			}

			values, err := parseValuesYAML(valuesFile, []byte(tc.values))
			if err != nil {
				t.Fatal(err)
			}
			opts := testOptions(t, values)
			opts.Version = "" // helm uses the chart's appVersion
			m, err := Render(opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := m.YAML(), helmObjects.YAML(); !bytes.Equal(got, want) {
				t.Errorf("Render and helm template differ:\n--- Render\n%s\n--- helm\n%s", got, want)
			}
		})
	}
}
