package install

import (
	"context"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/wellknown"
)

// ownedKinds are the kinds the chart renders, now or in any earlier version,
// which upgrade and uninstall search by the mesh's ownership label. A test
// checks that every kind the chart renders is here; a kind a chart version
// drops stays here, so its objects are still found.
var ownedKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "Namespace"},
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Version: "v1", Kind: "Secret"},
	{Version: "v1", Kind: "ConfigMap"},
	{Version: "v1", Kind: "Service"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingWebhookConfiguration"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingWebhookConfiguration"},
	{Group: wellknown.APIGroup, Version: meshconfig.Version, Kind: meshconfig.Kind},
}

// ownedSelector selects the objects of the control plane in namespace.
func ownedSelector(namespace string) string {
	return wellknown.LabelControlPlaneNamespace + "=" + namespace
}

// listOwned lists, once per kind and across all namespaces, the objects
// labelled as the control plane's in namespace. Kinds the cluster does not
// serve (a CRD already deleted) are skipped. extra adds kinds (from an
// inventory) to the search.
func (c *Clients) listOwned(ctx context.Context, namespace string, extra []Ref) ([]Ref, error) {
	kinds := map[schema.GroupKind]string{}
	for _, gvk := range ownedKinds {
		kinds[gvk.GroupKind()] = gvk.Version
	}
	for _, r := range extra {
		gvk := schema.FromAPIVersionAndKind(r.APIVersion, r.Kind)
		if _, ok := kinds[gvk.GroupKind()]; !ok {
			kinds[gvk.GroupKind()] = gvk.Version
		}
	}
	// Kinds in a fixed order, so that the first failure, which ends the
	// search, is the same on every run.
	order := make([]schema.GroupKind, 0, len(kinds))
	for gk := range kinds {
		order = append(order, gk)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].String() < order[j].String() })
	sel := ownedSelector(namespace)
	var found []Ref
	for _, gk := range order {
		version := kinds[gk]
		m, err := c.Mapper.RESTMapping(gk, version)
		if meta.IsNoMatchError(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("finding the API resource of %s: %w", gk, err)
		}
		list, err := c.Dynamic.Resource(m.Resource).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, fmt.Errorf("listing %s labelled %s: %w", m.Resource.Resource, sel, err)
		}
		for i := range list.Items {
			found = append(found, refOf(&list.Items[i]))
		}
	}
	sortRefs(found)
	return found, nil
}

// IsOwnedKind reports whether upgrade and uninstall search gk for the mesh's
// objects.
func IsOwnedKind(gk schema.GroupKind) bool {
	for _, k := range ownedKinds {
		if k.GroupKind() == gk {
			return true
		}
	}
	return false
}
