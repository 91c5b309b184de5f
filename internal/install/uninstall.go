package install

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/meshctl/mesh/internal/podstatus"
	"github.com/meshctl/mesh/internal/wellknown"
)

// UninstallPlan is what uninstall would delete and what stands in its way.
type UninstallPlan struct {
	Namespace string
	// Objects are the mesh's objects to delete, in deletion order.
	Objects []Ref
	// Injected lists the pods that still run the mesh's proxy.
	Injected []Ref
	// KeptCRDs are the mesh's CRDs left in place because custom resources
	// that the mesh did not create still use them (delete them with --purge).
	KeptCRDs []KeptCRD
	// KeptNamespace is the mesh's namespace when uninstall leaves it in
	// place: install did not create it (it existed before, or it is one of
	// Kubernetes' own). Uninstall takes the mesh's labels off it instead.
	KeptNamespace string
}

// KeptCRD is a CRD uninstall leaves, and why.
type KeptCRD struct {
	Name      string
	Resources []Ref
}

// UninstallOptions configure PlanUninstall.
type UninstallOptions struct {
	Namespace string
	// Purge deletes the mesh's CRDs even when custom resources the mesh did
	// not create still use them.
	Purge bool
}

// deleteOrder ranks kinds for deletion: the webhook first, so no pod is
// sent to a controller that is going away; the namespace last, so its
// contents are deleted by uninstall (and reported) rather than by the
// namespace controller.
func deleteRank(r Ref) int {
	switch r.Kind {
	case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
		return 0
	case "CustomResourceDefinition":
		return 3
	case "Namespace":
		return 4
	}
	if r.groupKind().Group == wellknown.APIGroup {
		return 2
	}
	return 1
}

// PlanUninstall finds every object of the control plane in opts.Namespace by
// its ownership label (once per kind, cluster-scoped kinds included), the
// injected pods, and the CRDs that must stay.
func PlanUninstall(ctx context.Context, c *Clients, opts UninstallOptions) (*UninstallPlan, error) {
	var inventory []Ref
	if inst, err := Find(ctx, c.Kube, opts.Namespace); err == nil {
		inventory = inst.Inventory
	}
	owned, err := c.listOwned(ctx, opts.Namespace, inventory)
	if err != nil {
		return nil, err
	}
	plan := &UninstallPlan{Namespace: opts.Namespace}
	for _, r := range owned {
		if r.Kind == "Namespace" && r.APIVersion == "v1" {
			live, err := c.get(ctx, r)
			if err != nil {
				return nil, err
			}
			if live == nil {
				continue
			}
			if keepsNamespace(live) {
				plan.KeptNamespace = r.Name
				continue
			}
		}
		if r.Kind == "CustomResourceDefinition" && !opts.Purge {
			foreign, err := c.foreignResources(ctx, r, opts.Namespace)
			if err != nil {
				return nil, err
			}
			if len(foreign) > 0 {
				plan.KeptCRDs = append(plan.KeptCRDs, KeptCRD{Name: r.Name, Resources: foreign})
				continue
			}
		}
		plan.Objects = append(plan.Objects, r)
	}
	sort.SliceStable(plan.Objects, func(i, j int) bool { return deleteRank(plan.Objects[i]) < deleteRank(plan.Objects[j]) })
	plan.Injected, err = c.injectedPods(ctx)
	if err != nil {
		return nil, err
	}
	return plan, nil
}

// foreignResources lists the custom resources of crd that do not carry the
// ownership label of namespace: users' objects, which only --purge deletes.
func (c *Clients) foreignResources(ctx context.Context, crd Ref, namespace string) ([]Ref, error) {
	live, err := c.get(ctx, crd)
	if err != nil || live == nil {
		return nil, err
	}
	group, _, _ := unstructured.NestedString(live.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(live.Object, "spec", "names", "kind")
	m, err := c.Mapper.RESTMapping(schema.GroupKind{Group: group, Kind: kind})
	if meta.IsNoMatchError(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("finding the API resource of %s: %w", kind, err)
	}
	list, err := c.Dynamic.Resource(m.Resource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", m.Resource.Resource, err)
	}
	var foreign []Ref
	for i := range list.Items {
		if list.Items[i].GetLabels()[wellknown.LabelControlPlaneNamespace] != namespace {
			foreign = append(foreign, refOf(&list.Items[i]))
		}
	}
	return foreign, nil
}

// injectedPods lists, in one paginated pass over all pods, those that run
// the mesh's proxy. Pods that have terminated (a Job's Succeeded or Failed
// pods) run nothing any more and are not counted.
func (c *Clients) injectedPods(ctx context.Context) ([]Ref, error) {
	var out []Ref
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := c.Kube.CoreV1().Pods("").List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing pods to find injected workloads: %w", err)
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			if podstatus.RunsProxy(p) {
				out = append(out, Ref{APIVersion: "v1", Kind: "Pod", Namespace: p.Namespace, Name: p.Name})
			}
		}
		if list.Continue == "" {
			return out, nil
		}
		opts.Continue = list.Continue
	}
}

// Uninstall deletes the plan's objects in order, removes the finalizers the
// mesh put on them, and waits up to timeout until they are gone.
func Uninstall(ctx context.Context, c *Clients, plan *UninstallPlan, timeout time.Duration, observe Observer) error {
	observe = observe.orDiscard()
	for _, r := range plan.Objects {
		if err := c.deleteOwned(ctx, r, plan.Namespace); err != nil {
			return err
		}
		if err := c.releaseFinalizers(ctx, r); err != nil {
			return err
		}
		observe(Event{Type: EventDeleted, Object: r})
	}
	if plan.KeptNamespace != "" {
		if err := c.releaseNamespace(ctx, plan.KeptNamespace); err != nil {
			return err
		}
		observe(Event{Type: EventInfo, Message: "kept namespace " + plan.KeptNamespace + ": meshctl install did not create it; removed the mesh's labels from it"})
	}
	observe(Event{Type: EventInfo, Message: "waiting for the deleted objects to be gone"})
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var remaining []Ref
	err := wait.PollUntilContextCancel(wctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		remaining = remaining[:0]
		for _, r := range plan.Objects {
			live, err := c.get(ctx, r)
			if err != nil {
				return false, nil
			}
			if live != nil {
				remaining = append(remaining, r)
				if err := c.releaseFinalizers(ctx, r); err != nil {
					return false, err
				}
			}
		}
		return len(remaining) == 0, nil
	})
	if err != nil {
		if ctx.Err() == nil && wctx.Err() != nil {
			names := make([]string, len(remaining))
			for i, r := range remaining {
				names[i] = r.String()
			}
			return &TimeoutError{Waited: timeout, Deleting: names}
		}
		return err
	}
	return nil
}

// releaseFinalizers removes the finalizers under the mesh's domain from an
// object being deleted; other finalizers are someone else's to remove.
func (c *Clients) releaseFinalizers(ctx context.Context, r Ref) error {
	live, err := c.get(ctx, r)
	if err != nil || live == nil || live.GetDeletionTimestamp() == nil {
		return err
	}
	var keep []string
	for _, f := range live.GetFinalizers() {
		if !strings.HasPrefix(f, wellknown.Domain+"/") {
			keep = append(keep, f)
		}
	}
	if len(keep) == len(live.GetFinalizers()) {
		return nil
	}
	ri, err := c.resource(r)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": keep, "resourceVersion": live.GetResourceVersion()}})
	if err != nil {
		return err
	}
	if _, err := ri.Patch(ctx, r.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !isGone(err) {
		return fmt.Errorf("removing the mesh's finalizers from %s: %w", r, err)
	}
	return nil
}
