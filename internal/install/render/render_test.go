package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/golden"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

var (
	updateCredentials = flag.Bool("update-credentials", false, "generate new test credentials into testdata/credentials")
)

// testVersion is the mesh version of the golden files.
const testVersion = "v0.1.0"

// credentialFiles are the fixed test credentials. They are generated once
// (-update-credentials) and committed, because keys are never reproducible.
var credentialFiles = []string{"trust-anchors.crt", "issuer.crt", "issuer.key", "webhook-ca.crt", "webhook.crt", "webhook.key"}

func testCredentials(t *testing.T) (Identity, Webhook) {
	t.Helper()
	dir := filepath.Join("testdata", "credentials")
	if *updateCredentials {
		credentialsOnce.Do(func() { writeCredentials(t, dir) })
	}
	files := map[string][]byte{}
	for _, name := range credentialFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("reading test credentials (generate them with -update-credentials): %v", err)
		}
		files[name] = data
	}
	return Identity{TrustAnchorsPEM: files["trust-anchors.crt"], IssuerCertPEM: files["issuer.crt"], IssuerKeyPEM: files["issuer.key"]},
		Webhook{CABundlePEM: files["webhook-ca.crt"], CertPEM: files["webhook.crt"], KeyPEM: files["webhook.key"]}
}

var credentialsOnce sync.Once

func writeCredentials(t *testing.T, dir string) {
	t.Helper()
	// Test credentials only: long-lived so the fixtures never expire.
	src := pki.Source{Clock: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
	id, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local", AnchorLifetime: 100 * 365 * 24 * time.Hour, IssuerLifetime: 100 * 365 * 24 * time.Hour, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := pki.GenerateWebhookTLS(pki.WebhookOptions{ServiceName: wellknown.ControllerName, Namespace: wellknown.DefaultMeshNamespace, Lifetime: 100 * 365 * 24 * time.Hour, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"trust-anchors.crt": id.TrustAnchorsPEM, "issuer.crt": id.IssuerCertPEM, "issuer.key": id.IssuerKeyPEM,
		"webhook-ca.crt": wh.CABundlePEM, "webhook.crt": wh.CertPEM, "webhook.key": wh.KeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func testOptions(t *testing.T, values map[string]any) Options {
	t.Helper()
	id, wh := testCredentials(t)
	return Options{Namespace: wellknown.DefaultMeshNamespace, Values: values, Identity: id, Webhook: wh, Version: testVersion}
}

// goldenCases are the value sets whose rendering is kept in testdata.
var goldenCases = []struct {
	name   string
	values string
}{
	{"default", ``},
	{"high-availability", `
controller:
  highAvailability: true
`},
	{"custom-image", `
image:
  repository: registry.example.com/mesh/meshproxy
  tag: v9.9.9-rc.1
  pullPolicy: Always
proxy:
  logLevel: debug
  resources:
    requests: {cpu: 50m, memory: 32Mi}
    limits: {cpu: "1", memory: 128Mi}
controller:
  resources:
    requests: {cpu: 200m, memory: 128Mi}
    limits: {memory: 512Mi}
  tolerations:
    - {key: dedicated, operator: Equal, value: mesh, effect: NoSchedule}
  priorityClassName: system-cluster-critical
`},
	{"webhook-fail", `
webhook:
  failurePolicy: Fail
  timeoutSeconds: 5
`},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			values, err := parseValuesYAML(tc.name+".yaml", []byte(tc.values))
			if err != nil {
				t.Fatal(err)
			}
			m, err := Render(testOptions(t, values))
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tc.name+".golden.yaml"), m.YAML())
			if tc.name == "default" {
				golden.Check(t, filepath.Join("testdata", "default.golden.json"), m.JSON())
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	opts := testOptions(t, map[string]any{"controller": map[string]any{"replicas": 2}})
	a, err := Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.YAML(), b.YAML()) || !bytes.Equal(a.JSON(), b.JSON()) {
		t.Error("two renderings of the same options differ")
	}
}

func TestOrder(t *testing.T) {
	m, err := Render(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range m.Objects {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	want := []string{
		"Namespace/meshctl-system",
		"CustomResourceDefinition/meshconfigs.meshctl.dev",
		"ServiceAccount/meshctl-controller",
		"Secret/meshctl-identity-issuer",
		"Secret/meshctl-webhook-tls",
		"ConfigMap/meshctl-identity-trust-anchors",
		"ClusterRole/meshctl-controller",
		"ClusterRoleBinding/meshctl-controller",
		"Role/meshctl-controller",
		"RoleBinding/meshctl-controller",
		"Service/meshctl-controller",
		"Deployment/meshctl-controller",
		"PodDisruptionBudget/meshctl-controller",
		"MutatingWebhookConfiguration/meshctl-proxy-injector",
		"MeshConfig/mesh",
	}
	if strings.Join(kinds, "\n") != strings.Join(want, "\n") {
		t.Errorf("objects:\n%s\nwant:\n%s", strings.Join(kinds, "\n"), strings.Join(want, "\n"))
	}
	if len(m.CRDs()) != 1 || len(m.Resources()) != len(want)-1 {
		t.Errorf("CRDs %d, resources %d: want 1 and %d", len(m.CRDs()), len(m.Resources()), len(want)-1)
	}
}

func TestEveryObjectCarriesTheOwnershipLabels(t *testing.T) {
	m, err := Render(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		wellknown.LabelControlPlaneNamespace: wellknown.DefaultMeshNamespace,
		wellknown.LabelVersion:               testVersion,
		wellknown.LabelK8sPartOf:             wellknown.PartOf,
		wellknown.LabelK8sVersion:            testVersion,
		wellknown.LabelK8sManagedBy:          ManagedBy,
		wellknown.LabelK8sName:               "meshctl-control-plane",
	}
	for _, o := range m.Objects {
		labels := o.GetLabels()
		for k, v := range want {
			if labels[k] != v {
				t.Errorf("%s %s: label %s = %q, want %q", o.GetKind(), o.GetName(), k, labels[k], v)
			}
		}
		if labels[wellknown.LabelComponent] == "" {
			t.Errorf("%s %s: no %s label", o.GetKind(), o.GetName(), wellknown.LabelComponent)
		}
	}
	if ns := m.Find("Namespace", "", wellknown.DefaultMeshNamespace); ns == nil || ns.GetLabels()[wellknown.LabelInject] != wellknown.InjectDisabled {
		t.Errorf("the mesh namespace must be labelled %s=%s", wellknown.LabelInject, wellknown.InjectDisabled)
	}
}

func TestNamespaces(t *testing.T) {
	m, err := Render(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	clusterScoped := map[string]bool{"Namespace": true, "CustomResourceDefinition": true, "MutatingWebhookConfiguration": true,
		"ClusterRole": true, "ClusterRoleBinding": true}
	for _, o := range m.Objects {
		want := wellknown.DefaultMeshNamespace
		if clusterScoped[o.GetKind()] {
			want = ""
		}
		if o.GetNamespace() != want {
			t.Errorf("%s %s: namespace %q, want %q", o.GetKind(), o.GetName(), o.GetNamespace(), want)
		}
	}
}

// An upgrade must never change the Deployment's selector: it is immutable.
func TestSelectorDoesNotDependOnVersion(t *testing.T) {
	selector := func(version string) string {
		opts := testOptions(t, nil)
		opts.Version = version
		m, err := Render(opts)
		if err != nil {
			t.Fatal(err)
		}
		d := m.Find("Deployment", wellknown.DefaultMeshNamespace, wellknown.ControllerName)
		sel, _, _ := unstructured.NestedStringMap(d.Object, "spec", "selector", "matchLabels")
		tmpl, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
		for k, v := range sel {
			if tmpl[k] != v {
				t.Errorf("selector label %s=%s is not on the pod template", k, v)
			}
		}
		if _, ok := sel[wellknown.LabelVersion]; ok {
			t.Errorf("selector holds the version label")
		}
		return strings.Join(sortedKeys(sel), ",") + "|" + sel[wellknown.LabelComponent]
	}
	if a, b := selector("v0.1.0"), selector("v0.2.0+build.7"); a != b {
		t.Errorf("selector changed with the version: %s, %s", a, b)
	}
}

func TestVersion(t *testing.T) {
	opts := testOptions(t, nil)
	opts.Version = "v1.2.3+meta"
	m, err := Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := m.MeshConfig()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mc.Spec.Proxy.Image, wellknown.ProxyImage+":v1.2.3+meta"; got != want {
		t.Errorf("image %q, want %q", got, want)
	}
	// "+" cannot be in a label value.
	if got := mc.Labels[wellknown.LabelVersion]; got != "v1.2.3_meta" {
		t.Errorf("version label %q, want v1.2.3_meta", got)
	}

	opts.Version = ""
	m, err = Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	_, appVersion := ChartVersion()
	if got := m.Objects[0].GetLabels()[wellknown.LabelVersion]; got != appVersion {
		t.Errorf("without a version, the label is %q, want the chart's appVersion %q", got, appVersion)
	}
}

// The chart's defaults and meshconfig.Default describe the same mesh: offline
// injection relies on it.
func TestDefaultMeshConfig(t *testing.T) {
	m, err := Render(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	mc, err := m.MeshConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.Spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if mc.Name != wellknown.MeshConfigName || mc.Namespace != wellknown.DefaultMeshNamespace {
		t.Errorf("MeshConfig %s/%s, want %s/%s", mc.Namespace, mc.Name, wellknown.DefaultMeshNamespace, wellknown.MeshConfigName)
	}
	want := meshconfig.Default(wellknown.ProxyImage + ":" + testVersion)
	gotYAML, wantYAML := mustYAML(t, mc.Spec), mustYAML(t, want)
	if gotYAML != wantYAML {
		t.Errorf("rendered spec:\n%s\nmeshconfig.Default:\n%s", gotYAML, wantYAML)
	}
}

func TestInvalidMeshConfigIsRefused(t *testing.T) {
	_, err := Render(testOptions(t, map[string]any{"identity": map[string]any{"certificateLifetime": "30s"}}))
	if err == nil || !strings.Contains(err.Error(), "spec.identity.certificateLifetime: 30s is shorter than the minimum of 1m0s") {
		t.Errorf("error %v, want the MeshConfig's validation error", err)
	}
}

func TestRenderRefuses(t *testing.T) {
	good := testOptions(t, nil)
	for name, tc := range map[string]struct {
		change  func(*Options)
		wantErr string
	}{
		"no namespace":      {func(o *Options) { o.Namespace = "" }, `namespace "" is not a valid namespace name`},
		"bad namespace":     {func(o *Options) { o.Namespace = "Mesh_System" }, `namespace "Mesh_System"`},
		"no issuer key":     {func(o *Options) { o.Identity.IssuerKeyPEM = nil }, "missing credentials: identity.issuer.keyPEM"},
		"no webhook at all": {func(o *Options) { o.Webhook = Webhook{} }, "missing credentials: webhook.caBundlePEM, webhook.certPEM, webhook.keyPEM"},
		"bad values":        {func(o *Options) { o.Values = map[string]any{"controler": map[string]any{}} }, "unknown value key controler"},
		"bad kube version":  {func(o *Options) { o.KubeVersion = "latest" }, `parsing Kubernetes version "latest"`},
	} {
		opts := good
		tc.change(&opts)
		_, err := Render(opts)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, tc.wantErr)
		}
	}
}

// `helm template` without --set-file for a credential must fail and say
// which value is missing.
func TestChartRequiresCredentials(t *testing.T) {
	id, wh := testCredentials(t)
	for _, key := range CredentialKeys {
		values := map[string]any{}
		for k, v := range map[string][]byte{
			KeyTrustAnchorsPEM: id.TrustAnchorsPEM, KeyIssuerCertPEM: id.IssuerCertPEM, KeyIssuerKeyPEM: id.IssuerKeyPEM,
			KeyWebhookCAPEM: wh.CABundlePEM, KeyWebhookCertPEM: wh.CertPEM, KeyWebhookKeyPEM: wh.KeyPEM,
		} {
			if k != key {
				setPath(values, k, string(v))
			}
		}
		_, err := renderChart(Options{Namespace: "mesh"}, values)
		want := "value " + key + " is required"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("without %s: error %v, want it to contain %q", key, err, want)
		}
	}
}

func TestCredentialsStayOutOfStoredValues(t *testing.T) {
	opts := testOptions(t, map[string]any{"controller": map[string]any{"replicas": 2}})
	m, err := Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := opts.Values["identity"]; ok {
		t.Error("Render changed the caller's values")
	}
	if m.Find("Secret", wellknown.DefaultMeshNamespace, wellknown.IdentitySecretName) == nil {
		t.Error("no issuer Secret")
	}
}

// The controller runs from the proxy's image under its own binary: the
// command the chart gives must be a file the Dockerfile puts there.
func TestControllerCommandIsInTheImage(t *testing.T) {
	m, err := Render(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	d := m.Find("Deployment", wellknown.DefaultMeshNamespace, wellknown.ControllerName)
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("controller pod has %d containers", len(containers))
	}
	command, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "command")
	if len(command) != 1 || command[0] != "/usr/local/bin/meshcontroller" {
		t.Fatalf("controller command %q, want [/usr/local/bin/meshcontroller]", command)
	}
	dockerfile, err := os.ReadFile(filepath.Join("..", "..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dockerfile), "COPY ${TARGETPLATFORM}/meshcontroller "+command[0]+"\n") {
		t.Errorf("the Dockerfile does not copy meshcontroller to %s", command[0])
	}
}
