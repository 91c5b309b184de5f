package render

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Manifest is the rendered control plane: its objects in apply order.
//
// Namespaced objects carry the control plane's namespace; cluster-scoped
// ones (the Namespace, the CRD, the MutatingWebhookConfiguration) carry none,
// so GetNamespace() == "" tells them apart without a RESTMapper. All carry
// the labels of the chart's "mesh.labels" helper, among them
// meshctl.dev/control-plane-ns, by which prune and uninstall find them.
type Manifest struct {
	// Objects are sorted: the Namespace, the CRDs, then the other kinds in
	// installOrder, then custom resources (whose CRDs come before them), and
	// within a kind by namespace and name.
	Objects []*unstructured.Unstructured
}

// installOrder is the apply order of the kinds the chart renders, after
// Helm's: what others refer to comes before them. Kinds not listed come
// last, ordered by group and kind; custom resources are among them, after
// the CRDs that define them.
var installOrder = []string{
	"Namespace",
	"CustomResourceDefinition",
	"ServiceAccount",
	"Secret",
	"ConfigMap",
	"ClusterRole",
	"ClusterRoleBinding",
	"Role",
	"RoleBinding",
	"Service",
	"Deployment",
	"PodDisruptionBudget",
	"MutatingWebhookConfiguration",
	"ValidatingWebhookConfiguration",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}

// IsCRD reports whether obj is a CustomResourceDefinition.
func IsCRD(obj *unstructured.Unstructured) bool {
	gvk := obj.GroupVersionKind()
	return gvk.Group == "apiextensions.k8s.io" && gvk.Kind == "CustomResourceDefinition"
}

// CRDs returns the CustomResourceDefinitions, which install applies and waits
// for before the rest.
func (m *Manifest) CRDs() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m.Objects {
		if IsCRD(o) {
			out = append(out, o)
		}
	}
	return out
}

// Resources returns every object but the CRDs, in apply order.
func (m *Manifest) Resources() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m.Objects {
		if !IsCRD(o) {
			out = append(out, o)
		}
	}
	return out
}

// YAML returns the objects as a YAML stream, one document per object
// separated by "---", with keys sorted: the same inputs give the same bytes.
func (m *Manifest) YAML() []byte {
	var b bytes.Buffer
	for i, o := range m.Objects {
		if i > 0 {
			b.WriteString("---\n")
		}
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			// Objects come from decoded JSON; they always marshal.
			panic(fmt.Sprintf("encoding %s %s: %v", o.GetKind(), o.GetName(), err))
		}
		b.Write(data)
	}
	return b.Bytes()
}

// JSON returns the objects as an indented v1 List, keys sorted.
func (m *Manifest) JSON() []byte {
	items := make([]map[string]any, len(m.Objects))
	for i, o := range m.Objects {
		items[i] = o.Object
	}
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("encoding the manifest: %v", err))
	}
	return append(data, '\n')
}

// Find returns the object of the given kind, namespace and name, or nil.
func (m *Manifest) Find(kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range m.Objects {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	return nil
}

// decodeManifest decodes the engine's output, template by template, dropping
// empty documents and partials.
func decodeManifest(files map[string]string) (*Manifest, error) {
	m := &Manifest{}
	for _, name := range sortedKeys(files) {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") || !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")) {
			continue
		}
		objs, err := decodeDocuments(files[name])
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", name, err)
		}
		m.Objects = append(m.Objects, objs...)
	}
	sort.SliceStable(m.Objects, func(i, j int) bool { return less(m.Objects[i], m.Objects[j]) })
	return m, nil
}

func decodeDocuments(stream string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		data, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if t := bytes.TrimSpace(data); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			continue // a template that rendered nothing, or only comments
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, obj)
	}
}

func less(a, b *unstructured.Unstructured) bool {
	ra, rb := kindRank(a.GetKind()), kindRank(b.GetKind())
	if ra != rb {
		return ra < rb
	}
	ga, gb := a.GroupVersionKind(), b.GroupVersionKind()
	if ga.Group != gb.Group {
		return ga.Group < gb.Group
	}
	if ga.Kind != gb.Kind {
		return ga.Kind < gb.Kind
	}
	if a.GetNamespace() != b.GetNamespace() {
		return a.GetNamespace() < b.GetNamespace()
	}
	return a.GetName() < b.GetName()
}

// MeshConfig returns the rendered MeshConfig, decoded.
func (m *Manifest) MeshConfig() (*meshconfig.MeshConfig, error) {
	var found *unstructured.Unstructured
	for _, o := range m.Objects {
		if o.GetKind() == meshconfig.Kind && o.GroupVersionKind().Group == wellknown.APIGroup {
			found = o
		}
	}
	if found == nil {
		return nil, errors.New("the manifest has no MeshConfig")
	}
	mc := &meshconfig.MeshConfig{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(found.Object, mc, true); err != nil {
		return nil, fmt.Errorf("decoding MeshConfig %s: %w", found.GetName(), err)
	}
	return mc, nil
}

// validateMeshConfig catches values the schema lets through but no proxy
// could run with (a certificate lifetime under a minute, say).
func (m *Manifest) validateMeshConfig() error {
	mc, err := m.MeshConfig()
	if err != nil {
		return err
	}
	if err := mc.Spec.Validate(); err != nil {
		return fmt.Errorf("validating the MeshConfig the values produce: %w", err)
	}
	return nil
}
