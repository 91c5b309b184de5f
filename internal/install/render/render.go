// Package render turns the control-plane chart (templates/, embedded) and a
// set of values into the objects to apply, in process, with Helm's own
// template engine: meshctl renders the objects `helm template` renders from
// the same folder and values, except that app.kubernetes.io/managed-by says
// meshctl rather than Helm.
//
// Rendering is pure: no cluster, clock, randomness or environment. Callers
// bring the credentials (see internal/pki) and the mesh version.
package render

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"github.com/meshctl/mesh/templates"
)

// ReleaseName is the Helm release name the chart is rendered with. The chart
// names its objects after the mesh (wellknown), not after the release, so the
// name only shows in .Release.Name.
const ReleaseName = "meshctl"

// DefaultKubeVersion is the Kubernetes version templates see in
// .Capabilities.KubeVersion when Options.KubeVersion is empty.
const DefaultKubeVersion = "v1.31.0"

// ManagedBy is the value of app.kubernetes.io/managed-by on what meshctl
// renders. The chart takes it from .Release.Service, so `helm install` writes
// "Helm" and meshctl writes this.
const ManagedBy = "meshctl"

// Options are the inputs of Render.
type Options struct {
	// Namespace is the control plane's namespace (the release namespace).
	Namespace string
	// Values are the user's values (from LoadValues, or stored values on
	// upgrade), without credentials; the chart's defaults fill the rest.
	// Credentials found here are overridden by Identity and Webhook.
	Values map[string]any
	// Identity and Webhook are the credentials, merged into the values under
	// the keys of CredentialKeys. All six are required.
	Identity Identity
	Webhook  Webhook
	// Version is the mesh version. It replaces the embedded chart's
	// appVersion, so it is written into the version labels and is the image
	// tag unless the values set image.tag. Empty keeps the chart's appVersion.
	Version string
	// KubeVersion is the cluster's version as templates see it ("v1.31.2");
	// empty means DefaultKubeVersion.
	KubeVersion string
	// Upgrade renders for an upgrade (.Release.IsUpgrade) instead of an
	// install (.Release.IsInstall).
	Upgrade bool
}

// Identity is the mesh's identity CA, PEM-encoded.
type Identity struct {
	TrustAnchorsPEM []byte
	IssuerCertPEM   []byte
	IssuerKeyPEM    []byte
}

// Webhook is the injection webhook's serving certificate, PEM-encoded, and
// the CA that signed it, which the API server trusts.
type Webhook struct {
	CABundlePEM []byte
	CertPEM     []byte
	KeyPEM      []byte
}

// Value keys of the credentials. Render sets them from Options; install must
// never store them with the user's values (see StripCredentials).
const (
	KeyTrustAnchorsPEM = "identity.trustAnchorsPEM"
	KeyIssuerCertPEM   = "identity.issuer.certPEM"
	KeyIssuerKeyPEM    = "identity.issuer.keyPEM"
	KeyWebhookCAPEM    = "webhook.caBundlePEM"
	KeyWebhookCertPEM  = "webhook.certPEM"
	KeyWebhookKeyPEM   = "webhook.keyPEM"
)

// CredentialKeys lists the dotted value keys that carry credentials.
var CredentialKeys = []string{KeyTrustAnchorsPEM, KeyIssuerCertPEM, KeyIssuerKeyPEM, KeyWebhookCAPEM, KeyWebhookCertPEM, KeyWebhookKeyPEM}

func (o Options) credentials() (map[string][]byte, error) {
	creds := map[string][]byte{
		KeyTrustAnchorsPEM: o.Identity.TrustAnchorsPEM,
		KeyIssuerCertPEM:   o.Identity.IssuerCertPEM,
		KeyIssuerKeyPEM:    o.Identity.IssuerKeyPEM,
		KeyWebhookCAPEM:    o.Webhook.CABundlePEM,
		KeyWebhookCertPEM:  o.Webhook.CertPEM,
		KeyWebhookKeyPEM:   o.Webhook.KeyPEM,
	}
	var missing []string
	for _, k := range CredentialKeys {
		if len(bytes.TrimSpace(creds[k])) == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing credentials: %s", strings.Join(missing, ", "))
	}
	return creds, nil
}

// namespaceName is what Kubernetes accepts as a namespace name (RFC 1123 label).
var namespaceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Render renders the chart for opts. The values are validated first (see
// ValidateValues), so a mistake is reported against the user's keys rather
// than as a template error.
func Render(opts Options) (*Manifest, error) {
	if !namespaceName.MatchString(opts.Namespace) || len(opts.Namespace) > 63 {
		return nil, fmt.Errorf("rendering the control plane: namespace %q is not a valid namespace name", opts.Namespace)
	}
	creds, err := opts.credentials()
	if err != nil {
		return nil, fmt.Errorf("rendering the control plane: %w", err)
	}
	if err := ValidateValues(opts.Values); err != nil {
		return nil, err
	}
	values := MergeValues(opts.Values, nil)
	for key, pem := range creds {
		setPath(values, key, string(pem))
	}
	m, err := renderChart(opts, values)
	if err != nil {
		return nil, fmt.Errorf("rendering the control plane: %w", err)
	}
	// A value the schema allows but the MeshConfig refuses (a certificate
	// lifetime under the minimum) is the user's input, like a schema error.
	if err := m.validateMeshConfig(); err != nil {
		return nil, &InvalidValuesError{Problems: []string{err.Error()}}
	}
	return m, nil
}

// renderChart runs Helm's engine on the embedded chart with values as they
// are, as `helm template` would.
func renderChart(opts Options, values map[string]any) (*Manifest, error) {
	chrt, err := loadChart()
	if err != nil {
		return nil, err
	}
	if opts.Version != "" {
		chrt.Metadata.AppVersion = opts.Version
	}
	kubeVersion := opts.KubeVersion
	if kubeVersion == "" {
		kubeVersion = DefaultKubeVersion
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("parsing Kubernetes version %q: %w", kubeVersion, err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv

	top, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{
		Name:      ReleaseName,
		Namespace: opts.Namespace,
		Revision:  1,
		IsInstall: !opts.Upgrade,
		IsUpgrade: opts.Upgrade,
	}, caps)
	if err != nil {
		return nil, err
	}
	top["Release"].(map[string]any)["Service"] = ManagedBy

	files, err := engine.Render(chrt, top)
	if err != nil {
		return nil, err
	}
	return decodeManifest(files)
}

// loadChart loads the embedded chart afresh: Render changes its metadata, and
// a chart shared between calls would make Render impure.
func loadChart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(templates.Chart(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(templates.Chart(), name)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: path.Clean(name), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded chart: %w", err)
	}
	chrt, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded chart: %w", err)
	}
	return chrt, nil
}

// Defaults returns the chart's default values (values.yaml), a fresh copy on
// each call.
func Defaults() map[string]any {
	chrt, err := loadChart()
	if err != nil {
		// The chart is compiled in; tests load it, so this cannot happen in a
		// released binary.
		panic(err)
	}
	return normalize(chrt.Values)
}

// ChartVersion returns the embedded chart's version and appVersion.
func ChartVersion() (version, appVersion string) {
	chrt, err := loadChart()
	if err != nil {
		panic(err)
	}
	return chrt.Metadata.Version, chrt.Metadata.AppVersion
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
