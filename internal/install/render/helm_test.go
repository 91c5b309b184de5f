package render

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/testenv"

	"github.com/meshctl/mesh/internal/wellknown"
)

// helmBinary builds the helm CLI of the Helm module this package renders
// with (its version from go.mod, so the two never drift) into the test cache
// on first use.
func helmBinary(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	helm, err := testenv.Helm(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := helm.Path(ctx)
	if err != nil {
		t.Fatalf("building helm: %v", err)
	}
	return bin
}

// chartDir is the chart folder, from this package's directory.
var chartDir = filepath.Join("..", "..", "..", "templates")

// credentialFlags pass the test credentials to helm the way the docs say.
func credentialFlags() []string {
	creds := filepath.Join("testdata", "credentials")
	return []string{
		"--set-file", KeyTrustAnchorsPEM + "=" + filepath.Join(creds, "trust-anchors.crt"),
		"--set-file", KeyIssuerCertPEM + "=" + filepath.Join(creds, "issuer.crt"),
		"--set-file", KeyIssuerKeyPEM + "=" + filepath.Join(creds, "issuer.key"),
		"--set-file", KeyWebhookCAPEM + "=" + filepath.Join(creds, "webhook-ca.crt"),
		"--set-file", KeyWebhookCertPEM + "=" + filepath.Join(creds, "webhook.crt"),
		"--set-file", KeyWebhookKeyPEM + "=" + filepath.Join(creds, "webhook.key"),
	}
}

// TestHelmTemplateParity renders the chart folder with a real `helm template`
// and compares the objects with Render's.
func TestHelmTemplateParity(t *testing.T) {
	helm := helmBinary(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			valuesFile := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(valuesFile, []byte(tc.values), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"template", ReleaseName, chartDir, "--namespace", wellknown.DefaultMeshNamespace, "-f", valuesFile}, credentialFlags()...)
			cmd := exec.Command(helm, args...)
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
				if o.GetKind() == "MeshConfig" {
					// Only helm needs the MeshConfig as a hook (templates/meshconfig.yaml says why).
					o.SetAnnotations(nil)
				}
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

// TestHelmInstall installs, upgrades and uninstalls the chart folder with a
// real helm against the test API server, the way docs/reference/values.md
// tells helm users to: into an existing namespace, with --take-ownership,
// because the chart renders the Namespace itself.
func TestHelmInstall(t *testing.T) {
	helm := helmBinary(t)
	env := testenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "helm-install"
	if _, err := env.Clientset().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, helm, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath,
			"HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	client, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	deployments := client.Resource(k8sschema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}).Namespace(ns)
	meshConfigs := client.Resource(meshconfig.GroupVersionResource).Namespace(ns)

	run(append([]string{"install", ReleaseName, chartDir, "--namespace", ns, "--take-ownership"}, credentialFlags()...)...)
	if _, err := meshConfigs.Get(ctx, wellknown.MeshConfigName, metav1.GetOptions{}); err != nil {
		t.Fatalf("after helm install: %v", err)
	}
	d, err := deployments.Get(ctx, wellknown.ControllerName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after helm install: %v", err)
	}
	if got := d.GetLabels()[wellknown.LabelK8sManagedBy]; got != "Helm" {
		t.Errorf("managed-by %q, want Helm", got)
	}

	run(append([]string{"upgrade", ReleaseName, chartDir, "--namespace", ns, "--set", "controller.replicas=2"}, credentialFlags()...)...)
	d, err = deployments.Get(ctx, wellknown.ControllerName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after helm upgrade: %v", err)
	}
	if replicas, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); replicas != 2 {
		t.Errorf("after helm upgrade: %d replicas, want 2", replicas)
	}
	if _, err := meshConfigs.Get(ctx, wellknown.MeshConfigName, metav1.GetOptions{}); err != nil {
		t.Fatalf("after helm upgrade: %v", err)
	}

	// Without --wait: the env runs no namespace controller, so the Namespace
	// stays Terminating; the Deployment goes at once.
	run("uninstall", ReleaseName, "--namespace", ns)
	if _, err := deployments.Get(ctx, wellknown.ControllerName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after helm uninstall, getting the Deployment: %v, want not found", err)
	}
}
