package check

import (
	"sort"
	"testing"

	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/pki"
	meshversion "github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

const testNamespace = "mesh-under-test"

// renderChart renders the chart with its default values and fresh
// credentials.
func renderChart(t *testing.T, namespace, version string) *render.Manifest {
	t.Helper()
	id, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := pki.GenerateWebhookTLS(pki.WebhookOptions{ServiceName: wellknown.ControllerName, Namespace: namespace})
	if err != nil {
		t.Fatal(err)
	}
	return renderWith(t, namespace, version, id, wh)
}

func renderWith(t *testing.T, namespace, version string, id *pki.IdentityBundle, wh *pki.WebhookBundle) *render.Manifest {
	t.Helper()
	m, err := render.Render(render.Options{
		Namespace: namespace,
		Version:   version,
		Identity:  render.Identity{TrustAnchorsPEM: id.TrustAnchorsPEM, IssuerCertPEM: id.IssuerCertPEM, IssuerKeyPEM: id.IssuerKeyPEM},
		Webhook:   render.Webhook{CABundlePEM: wh.CABundlePEM, CertPEM: wh.CertPEM, KeyPEM: wh.KeyPEM},
	})
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	return m
}

// TestChartResourcesMatchTheChart keeps chartResources, which check --pre
// asks create permission for, in step with the kinds the chart renders.
func TestChartResourcesMatchTheChart(t *testing.T) {
	m := renderChart(t, testNamespace, "v0.0.0-test")
	rendered := map[string]bool{}
	for _, o := range m.Objects {
		gvk := o.GroupVersionKind()
		rendered[gvk.Group+"/"+gvk.Version+"/"+gvk.Kind] = true
	}
	listed := map[string]bool{}
	for _, r := range chartResources {
		listed[r.GVR.Group+"/"+r.GVR.Version+"/"+r.Kind] = true
	}
	for k := range rendered {
		if !listed[k] {
			t.Errorf("the chart renders %s, which chartResources lacks", k)
		}
	}
	for k := range listed {
		if !rendered[k] {
			t.Errorf("chartResources lists %s, which the chart does not render", k)
		}
	}
	for _, o := range m.Objects {
		for _, r := range chartResources {
			if r.Kind == o.GetKind() && r.Namespaced != (o.GetNamespace() != "") {
				t.Errorf("chartResources says %s is namespaced: %v; the chart disagrees", r.Kind, r.Namespaced)
			}
		}
	}
}

// TestChecksCoverTheChart keeps the objects the checks look for by name in
// step with what the chart renders: every rendered object is checked (but
// the optional PodDisruptionBudget), and every checked object is rendered.
func TestChecksCoverTheChart(t *testing.T) {
	m := renderChart(t, testNamespace, "v0.0.0-test")
	key := func(kind, name string) string { return kind + " " + name }
	rendered := map[string]bool{}
	for _, o := range m.Objects {
		if o.GetKind() == podDisruptionBudgets.Kind {
			continue
		}
		rendered[key(o.GetKind(), o.GetName())] = true
	}
	checked := map[string]bool{}
	for _, o := range checkedObjects(testNamespace) {
		checked[key(o.Kind, o.Name)] = true
	}
	var unchecked, unrendered []string
	for k := range rendered {
		if !checked[k] {
			unchecked = append(unchecked, k)
		}
	}
	for k := range checked {
		if !rendered[k] {
			unrendered = append(unrendered, k)
		}
	}
	sort.Strings(unchecked)
	sort.Strings(unrendered)
	if len(unchecked) > 0 {
		t.Errorf("no check looks for these rendered objects: %v", unchecked)
	}
	if len(unrendered) > 0 {
		t.Errorf("checks look for objects the chart does not render: %v", unrendered)
	}
}

// TestLabelVersionMatchesTheChart: the version check compares meshctl's
// version as the chart writes it into labels.
func TestLabelVersionMatchesTheChart(t *testing.T) {
	const version = "v1.2.3+build.7"
	m := renderChart(t, testNamespace, version)
	d := m.Find("Deployment", testNamespace, wellknown.ControllerName)
	if d == nil {
		t.Fatal("the chart renders no controller Deployment")
	}
	if got, want := d.GetLabels()[wellknown.LabelVersion], meshversion.LabelValue(version); got != want {
		t.Errorf("the chart writes version label %q, version.LabelValue gives %q", got, want)
	}
	if got := d.GetLabels()[wellknown.LabelComponent]; got != controllerComponent {
		t.Errorf("the controller's component label is %q, the pods check selects %q", got, controllerComponent)
	}
}
