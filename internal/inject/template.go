package inject

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshctl/mesh/internal/suggest"
	"github.com/meshctl/mesh/internal/wellknown"
)

const annotationInjected = wellknown.AnnotationInjected

// templatePaths says where each workload kind keeps its pod template; a Pod
// is its own template.
var templatePaths = map[string][]string{
	"Pod":                   nil,
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

// otherMeshSidecars are the containers of meshes a pod cannot join twice.
var otherMeshSidecars = map[string]string{
	"istio-proxy":   "Istio",
	"istio-init":    "Istio",
	"linkerd-proxy": "Linkerd",
	"linkerd-init":  "Linkerd",
}

// OtherMesh names the mesh whose sidecar or init container is called
// container ("Istio" for istio-proxy), or returns "" for any other name.
// Injection leaves the pods of another mesh alone, and so does
// `meshctl check` when it looks for pods the injector missed.
func OtherMesh(container string) string { return otherMeshSidecars[container] }

// workload is one object with a pod template, located in a parsed document.
type workload struct {
	kind, name, namespace string
	node                  *yaml.Node
	// item is the workload's index in a List, -1 outside one.
	item int
	// where is the path of the pod template, for messages.
	where string
	tmpl  *yaml.Node
	// skip is set when the template is there but cannot be edited safely.
	skip string
}

// podTemplate holds the nodes of a pod template that injection reads and
// edits; a nil value node means the key is absent.
type podTemplate struct {
	node                         *yaml.Node
	meta, ann, spec              *yaml.Node
	containers, initCtrs, volume *yaml.Node
	annKey                       *yaml.Node
}

// mapGet returns the key and value nodes of key in mapping m.
func mapGet(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if c := m.Content[i]; c.Kind == yaml.ScalarNode && c.Value == key {
			return c, m.Content[i+1]
		}
	}
	return nil, nil
}

func scalar(m *yaml.Node, key string) string {
	_, v := mapGet(m, key)
	if v == nil || v.Kind != yaml.ScalarNode {
		return ""
	}
	return v.Value
}

func isNull(n *yaml.Node) bool {
	return n != nil && n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// findWorkloads returns the workloads of a document's root mapping, items
// of Lists included.
func findWorkloads(root *yaml.Node) ([]*workload, error) {
	if root == nil || root.Kind != yaml.MappingNode {
		return nil, nil
	}
	kind := scalar(root, "kind")
	if strings.HasSuffix(kind, "List") {
		_, items := mapGet(root, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return nil, nil
		}
		var out []*workload
		for i, it := range items.Content {
			w, err := findWorkload(it, i)
			if err != nil {
				return nil, err
			}
			if w != nil {
				out = append(out, w)
			}
		}
		return out, nil
	}
	w, err := findWorkload(root, -1)
	if w == nil || err != nil {
		return nil, err
	}
	return []*workload{w}, nil
}

func findWorkload(n *yaml.Node, item int) (*workload, error) {
	if n.Kind != yaml.MappingNode {
		return nil, nil
	}
	kind := scalar(n, "kind")
	_, meta := mapGet(n, "metadata")
	w := &workload{kind: kind, node: n, item: item, name: scalar(meta, "name"), namespace: scalar(meta, "namespace")}
	path, ok := templatePaths[kind]
	if !ok {
		if w.skip = unknownKind(n, kind); w.skip == "" {
			return nil, nil
		}
		return w, nil
	}
	cur := n
	var walked []string
	for _, seg := range path {
		if reason := unsafeNode(cur, strings.Join(walked, ".")); reason != "" {
			w.skip = reason
			return w, nil
		}
		walked = append(walked, seg)
		_, next := mapGet(cur, seg)
		if next == nil || isNull(next) {
			return nil, fmt.Errorf("%s %q has no pod template: %s is missing", kind, w.name, strings.Join(walked, "."))
		}
		if next.Kind != yaml.MappingNode && next.Kind != yaml.AliasNode {
			return nil, fmt.Errorf("%s %q has no pod template: %s is not a mapping", kind, w.name, strings.Join(walked, "."))
		}
		cur = next
	}
	w.where = strings.Join(walked, ".")
	w.tmpl = cur
	return w, nil
}

// unsafeNode says why a node on the way to what injection edits cannot be
// edited: an edit to an anchored node would also change every alias of it,
// and an alias or merge key puts the text to edit somewhere else.
func unsafeNode(n *yaml.Node, path string) string {
	if path == "" {
		path = "the object"
	}
	switch {
	case n.Kind == yaml.AliasNode:
		return fmt.Sprintf("%s is a YAML alias (*%s); inject does not edit shared nodes", path, n.Value)
	case n.Anchor != "":
		return fmt.Sprintf("%s carries the YAML anchor &%s; inject does not edit shared nodes", path, n.Anchor)
	case n.Style&yaml.TaggedStyle != 0:
		return fmt.Sprintf("%s carries the explicit YAML tag %s; inject does not edit tagged nodes", path, n.Tag)
	case n.Kind == yaml.MappingNode:
		if k, _ := mapGet(n, "<<"); k != nil {
			return fmt.Sprintf("%s uses a YAML merge key (<<); inject does not edit merged nodes", path)
		}
	}
	return ""
}

// readTemplate locates the nodes injection reads and edits. It returns a
// skip reason for templates that are there but cannot be edited safely.
func readTemplate(w *workload) (*podTemplate, string, error) {
	t := &podTemplate{node: w.tmpl}
	at := func(p string) string {
		if w.where == "" {
			return p
		}
		return w.where + "." + p
	}
	if r := unsafeNode(w.tmpl, w.where); r != "" {
		return nil, r, nil
	}
	_, t.meta = mapGet(w.tmpl, "metadata")
	_, t.spec = mapGet(w.tmpl, "spec")
	if t.spec == nil || isNull(t.spec) {
		return nil, "", fmt.Errorf("%s %q has no pod spec: %s is missing", w.kind, w.name, at("spec"))
	}
	for _, c := range []struct {
		n    *yaml.Node
		path string
	}{{t.meta, "metadata"}, {t.spec, "spec"}} {
		if c.n == nil {
			continue
		}
		if r := unsafeNode(c.n, at(c.path)); r != "" {
			return nil, r, nil
		}
		if isNull(c.n) {
			return nil, fmt.Sprintf("%s is null; write {} or remove it", at(c.path)), nil
		}
		if c.n.Kind != yaml.MappingNode {
			return nil, "", fmt.Errorf("%s %q: %s is not a mapping", w.kind, w.name, at(c.path))
		}
	}
	if t.meta != nil {
		t.annKey, t.ann = mapGet(t.meta, "annotations")
	}
	_, t.containers = mapGet(t.spec, "containers")
	_, t.initCtrs = mapGet(t.spec, "initContainers")
	_, t.volume = mapGet(t.spec, "volumes")
	if t.containers == nil || isNull(t.containers) {
		return nil, "", fmt.Errorf("%s %q has no containers: %s is missing", w.kind, w.name, at("spec.containers"))
	}
	if t.containers.Kind == yaml.SequenceNode && len(t.containers.Content) == 0 {
		return nil, "", fmt.Errorf("%s %q has no containers: %s is empty", w.kind, w.name, at("spec.containers"))
	}
	for _, c := range []struct {
		n    *yaml.Node
		path string
		kind yaml.Kind
	}{
		{t.ann, "metadata.annotations", yaml.MappingNode},
		{t.containers, "spec.containers", yaml.SequenceNode},
		{t.initCtrs, "spec.initContainers", yaml.SequenceNode},
		{t.volume, "spec.volumes", yaml.SequenceNode},
	} {
		if c.n == nil {
			continue
		}
		if r := unsafeNode(c.n, at(c.path)); r != "" {
			return nil, r, nil
		}
		if isNull(c.n) {
			return nil, fmt.Sprintf("%s is null; write %s or remove it", at(c.path), map[yaml.Kind]string{yaml.MappingNode: "{}", yaml.SequenceNode: "[]"}[c.kind]), nil
		}
		if c.n.Kind != c.kind {
			return nil, "", fmt.Errorf("%s %q: %s is not a %s", w.kind, w.name, at(c.path), map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}[c.kind])
		}
	}
	// The items whose dashes or brackets injection edits around must be
	// where the parser says; an alias among them would be elsewhere.
	for _, seq := range []*yaml.Node{t.containers, t.initCtrs, t.volume} {
		if seq == nil {
			continue
		}
		for _, it := range seq.Content {
			if it.Kind == yaml.AliasNode {
				return nil, fmt.Sprintf("an item of %s is a YAML alias (*%s); inject does not edit shared nodes", at("spec"), it.Value), nil
			}
		}
	}
	return t, "", nil
}

// annotations returns the template's annotations as strings.
func (t *podTemplate) annotations() map[string]string {
	m := map[string]string{}
	if t.ann == nil {
		return m
	}
	for i := 0; i+1 < len(t.ann.Content); i += 2 {
		k, v := t.ann.Content[i], t.ann.Content[i+1]
		if k.Kind == yaml.ScalarNode && v.Kind == yaml.ScalarNode {
			m[k.Value] = v.Value
		}
	}
	return m
}

// names returns the names of the items of a list of containers or volumes.
func names(seq *yaml.Node) []string {
	if seq == nil {
		return nil
	}
	out := make([]string, 0, len(seq.Content))
	for _, it := range seq.Content {
		out = append(out, scalar(it, "name"))
	}
	return out
}

// skipReason says why a workload that could be injected must not be, or "".
func skipReason(w *workload, t *podTemplate, s *Settings) string {
	ann := t.annotations()
	for _, seq := range []*yaml.Node{t.containers, t.initCtrs} {
		for _, n := range names(seq) {
			if mesh, ok := otherMeshSidecars[n]; ok {
				return fmt.Sprintf("already has %s's %s container", mesh, n)
			}
		}
	}
	if _, v := mapGet(t.spec, "hostNetwork"); v != nil && v.Kind == yaml.ScalarNode && v.Value == "true" {
		return "uses the host's network (hostNetwork: true)"
	}
	if w.namespace != "" {
		for _, ns := range append(slices.Clone(wellknown.KubernetesNamespaces), s.MeshNamespace) {
			if w.namespace == ns {
				return fmt.Sprintf("namespace %s is a control-plane namespace", ns)
			}
		}
	}
	switch ann[wellknown.AnnotationInject] {
	case wellknown.InjectDisabled:
		return fmt.Sprintf("opted out (%s: %s)", wellknown.AnnotationInject, wellknown.InjectDisabled)
	case wellknown.InjectEnabled:
		return ""
	}
	if w.namespace != "" && s.Namespaces[w.namespace] == wellknown.InjectDisabled {
		return fmt.Sprintf("namespace %s opted out (label %s: %s)", w.namespace, wellknown.LabelInject, wellknown.InjectDisabled)
	}
	return ""
}

// unknownKind says why an object of a kind inject does not know is
// reported rather than passed over in silence: a pod template where
// workloads keep theirs (a custom workload, or a misspelt kind), or a kind
// one typo away from a workload's. Other objects are not workloads.
func unknownKind(n *yaml.Node, kind string) string {
	near := suggest.Nearest(kind, maps.Keys(templatePaths), 2)
	hint := ""
	if near != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", near)
	}
	for _, path := range [][]string{{"spec", "template"}, {"spec", "jobTemplate", "spec", "template"}, {}} {
		cur := n
		for _, seg := range path {
			_, cur = mapGet(cur, seg)
		}
		_, spec := mapGet(cur, "spec")
		if _, cs := mapGet(spec, "containers"); cs != nil {
			where := strings.Join(append(path, "spec", "containers"), ".")
			return fmt.Sprintf("kind %q is not one inject knows%s; it has containers at %s, left as they are", kind, hint, where)
		}
	}
	if near != "" {
		return fmt.Sprintf("kind %q is not one inject knows%s", kind, hint)
	}
	return ""
}
