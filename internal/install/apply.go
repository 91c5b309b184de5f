package install

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Clients are the cluster connections install, upgrade and uninstall use.
type Clients struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// Mapper maps kinds to resources; it is reset after CRDs are applied so
	// that their custom resources can be found.
	Mapper meta.ResettableRESTMapper
}

// Ref names one object, as the inventory and reports list it.
type Ref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

func refOf(obj *unstructured.Unstructured) Ref {
	return Ref{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// String is "Kind namespace/name", or "Kind name" when cluster-scoped.
func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

func (r Ref) groupKind() schema.GroupKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind).GroupKind()
}

// key identifies an object regardless of the API version it was read with.
func (r Ref) key() string {
	gk := r.groupKind()
	return gk.Kind + "." + gk.Group + "/" + r.Namespace + "/" + r.Name
}

func sortRefs(refs []Ref) {
	sort.Slice(refs, func(i, j int) bool { return refs[i].key() < refs[j].key() })
}

// resource returns the dynamic client for the object's kind, scoped to its
// namespace when the kind is namespaced.
func (c *Clients) resource(r Ref) (dynamic.ResourceInterface, error) {
	gvk := schema.FromAPIVersionAndKind(r.APIVersion, r.Kind)
	m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("finding the API resource of %s: %w", r, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(r.Namespace), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}

// apply server-side applies obj under meshctl's field manager. Conflicts with
// other managers are forced: the mesh's own objects are the mesh's to set.
func (c *Clients) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	ri, err := c.resource(refOf(obj))
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", refOf(obj), err)
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: wellknown.FieldManager, Force: &force}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
	if err != nil {
		return nil, fmt.Errorf("applying %s: %w", refOf(obj), err)
	}
	return out, nil
}

// get returns the live object, or nil when it does not exist.
func (c *Clients) get(ctx context.Context, r Ref) (*unstructured.Unstructured, error) {
	ri, err := c.resource(r)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, err
	}
	obj, err := ri.Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", r, err)
	}
	return obj, nil
}

// applyAll applies objs in order; CRDs first, waiting until the API server
// serves them, then the rest. It stops at the first failure and returns what
// it had applied, so the caller can report how far it got.
func (c *Clients) applyAll(ctx context.Context, crds, rest []*unstructured.Unstructured, observe Observer) ([]Ref, error) {
	var applied []Ref
	for _, obj := range crds {
		if _, err := c.apply(ctx, obj, false); err != nil {
			return applied, err
		}
		applied = append(applied, refOf(obj))
		observe(Event{Type: EventApplied, Object: refOf(obj)})
	}
	if len(crds) > 0 {
		if err := c.waitEstablished(ctx, crds, observe); err != nil {
			return applied, err
		}
		c.Mapper.Reset()
	}
	for _, obj := range rest {
		if _, err := c.apply(ctx, obj, false); err != nil {
			return applied, err
		}
		applied = append(applied, refOf(obj))
		observe(Event{Type: EventApplied, Object: refOf(obj)})
	}
	return applied, nil
}

// crdEstablishTimeout bounds the wait for the API server to serve new CRDs;
// it takes a second or two on a healthy server.
const crdEstablishTimeout = time.Minute

func (c *Clients) waitEstablished(ctx context.Context, crds []*unstructured.Unstructured, observe Observer) error {
	observe(Event{Type: EventInfo, Message: "waiting for the mesh's CRDs to be established"})
	ctx, cancel := context.WithTimeout(ctx, crdEstablishTimeout)
	defer cancel()
	for _, crd := range crds {
		r := refOf(crd)
		var last string
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			live, err := c.get(ctx, r)
			if err != nil || live == nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" {
					last = fmt.Sprint(m["message"])
					return m["status"] == "True", nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("waiting for %s to be established (last condition: %q): %w", r, last, err)
		}
	}
	return nil
}

// splitCRDs separates CustomResourceDefinitions from the other objects,
// keeping the order of each.
func splitCRDs(objs []*unstructured.Unstructured) (crds, rest []*unstructured.Unstructured) {
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" && strings.HasPrefix(o.GetAPIVersion(), "apiextensions.k8s.io/") {
			crds = append(crds, o)
		} else {
			rest = append(rest, o)
		}
	}
	return crds, rest
}

func isGone(err error) bool { return apierrors.IsNotFound(err) || apierrors.IsGone(err) }
