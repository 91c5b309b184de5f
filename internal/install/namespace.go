package install

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/wellknown"
)

// LabelNamespaceCreated marks the mesh's namespace as created by meshctl
// install. Uninstall deletes the namespace only when it carries this label:
// a namespace that held other things before the mesh came keeps them after
// it goes. Install sets it only when the namespace did not exist, and
// install and upgrade keep it once it is there.
const LabelNamespaceCreated = wellknown.Domain + "/created-by-install"

// systemNamespaces are the namespaces Kubernetes itself creates and uses;
// every name starting with "kube-" is reserved for Kubernetes too.
var systemNamespaces = append([]string{"default"}, wellknown.KubernetesNamespaces...)

// namespaceName is what Kubernetes accepts as a namespace name (an RFC 1123
// label).
var namespaceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// NamespaceError says why a namespace cannot be the mesh's.
type NamespaceError struct {
	Namespace string
	Reason    string
}

func (e *NamespaceError) Error() string {
	return fmt.Sprintf("namespace %q cannot hold the mesh: %s", e.Namespace, e.Reason)
}

// IsSystemNamespace reports whether Kubernetes owns ns: the mesh must never
// be installed there, nor delete it.
func IsSystemNamespace(ns string) bool {
	for _, s := range systemNamespaces {
		if ns == s {
			return true
		}
	}
	return strings.HasPrefix(ns, "kube-")
}

// ValidNamespaceName checks that ns is a namespace name at all.
func ValidNamespaceName(ns string) error {
	if ns == "" {
		return &NamespaceError{Namespace: ns, Reason: "it is empty"}
	}
	if len(ns) > 63 || !namespaceName.MatchString(ns) {
		return &NamespaceError{Namespace: ns, Reason: "a namespace name has at most 63 characters, lower-case letters, digits and '-', and starts and ends with a letter or digit"}
	}
	return nil
}

// CheckMeshNamespace checks that ns may hold the control plane: a valid
// name, and not one of Kubernetes' own namespaces, which hold the cluster's
// workloads (the webhook never injects there, and the mesh would own, label
// and one day prune a namespace it did not make).
func CheckMeshNamespace(ns string) error {
	if err := ValidNamespaceName(ns); err != nil {
		return err
	}
	if IsSystemNamespace(ns) {
		return &NamespaceError{Namespace: ns, Reason: "it is one of Kubernetes' own namespaces (default, kube-*); choose a namespace of the mesh's own, such as " + wellknown.DefaultMeshNamespace}
	}
	return nil
}

// markCreated sets LabelNamespaceCreated on the rendered Namespace when
// install creates it now, or when an earlier install created it; a
// namespace that existed without the label stays unmarked, so uninstall
// keeps it.
func (c *Clients) markCreated(ctx context.Context, m *render.Manifest, namespace string) error {
	obj := m.Find("Namespace", "", namespace)
	if obj == nil {
		return nil
	}
	live, err := c.Kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading namespace %s: %w", namespace, err)
	case live.Labels[LabelNamespaceCreated] == "":
		return nil
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelNamespaceCreated] = "true"
	obj.SetLabels(labels)
	return nil
}

// keepsNamespace reports whether uninstall must leave the namespace in
// place: Kubernetes' own, or one install did not create.
func keepsNamespace(live *unstructured.Unstructured) bool {
	return IsSystemNamespace(live.GetName()) || live.GetLabels()[LabelNamespaceCreated] != "true"
}

// releaseNamespace takes the mesh's labels off a namespace uninstall keeps:
// an apply with no fields under meshctl's field manager drops every field
// only meshctl set, and leaves those others set too.
func (c *Clients) releaseNamespace(ctx context.Context, name string) error {
	// An apply creates what is missing: never bring a deleted namespace back.
	if _, err := c.Kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil
	}
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion("v1")
	obj.SetKind("Namespace")
	obj.SetName(name)
	if _, err := c.apply(ctx, obj, false); err != nil && !isGone(err) {
		return fmt.Errorf("removing the mesh's labels from namespace %s: %w", name, err)
	}
	return nil
}
