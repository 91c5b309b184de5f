package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Action is what an upgrade does to one object.
type Action string

const (
	ActionCreate    Action = "create"
	ActionUpdate    Action = "update"
	ActionUnchanged Action = "unchanged"
	ActionPrune     Action = "prune"
)

// Change is one object of an upgrade plan, with the diff of its live state
// against what the upgrade will make of it (secret values masked).
type Change struct {
	Object Ref
	Action Action
	Diff   string
}

// Plan is an upgrade worked out against the live cluster but not applied.
type Plan struct {
	From     *Installation
	Options  Options
	Manifest *render.Manifest
	Changes  []Change
}

// Skew reports the installed version when it differs from the one the plan
// installs.
func (p *Plan) Skew() (from, to string, differ bool) {
	return p.From.Version, p.Options.Version, p.From.Version != p.Options.Version
}

// PlanUpgrade re-renders the installed control plane with its stored values
// merged with opts.Values, keeping its identity CA, and compares the result
// with the cluster: each object's diff comes from a server-side dry-run
// apply, so it shows what the API server would really store.
func PlanUpgrade(ctx context.Context, c *Clients, opts Options) (*Plan, error) {
	if err := CheckMeshNamespace(opts.Namespace); err != nil {
		return nil, err
	}
	from, err := Find(ctx, c.Kube, opts.Namespace)
	if err != nil {
		return nil, err
	}
	if opts.Identity != nil {
		return nil, fmt.Errorf("planning the upgrade: the identity CA is kept across upgrades and cannot be replaced by one")
	}
	opts.Values = render.MergeValues(from.Values, opts.Values)
	if err := render.ValidateValues(opts.Values); err != nil {
		return nil, err
	}
	manifest, err := c.renderFor(ctx, opts, true)
	if err != nil {
		return nil, err
	}
	plan := &Plan{From: from, Options: opts, Manifest: manifest}
	rendered := map[string]bool{}
	for _, obj := range manifest.Objects {
		ch, err := c.planObject(ctx, obj)
		if err != nil {
			return nil, err
		}
		rendered[ch.Object.key()] = true
		plan.Changes = append(plan.Changes, ch)
	}
	owned, err := c.listOwned(ctx, opts.Namespace, from.Inventory)
	if err != nil {
		return nil, err
	}
	for _, r := range owned {
		if rendered[r.key()] || isInstallationRecord(r, opts.Namespace) {
			continue
		}
		live, err := c.get(ctx, r)
		if err != nil {
			return nil, err
		}
		if live == nil || live.GetLabels()[wellknown.LabelControlPlaneNamespace] != opts.Namespace {
			continue
		}
		plan.Changes = append(plan.Changes, Change{Object: r, Action: ActionPrune, Diff: diffObjects(r, live, nil)})
	}
	return plan, nil
}

func isInstallationRecord(r Ref, namespace string) bool {
	return r.Kind == "Secret" && r.Namespace == namespace && r.Name == wellknown.ValuesSecretName
}

func (c *Clients) planObject(ctx context.Context, obj *unstructured.Unstructured) (Change, error) {
	r := refOf(obj)
	live, err := c.get(ctx, r)
	if err != nil {
		return Change{}, err
	}
	if live == nil {
		return Change{Object: r, Action: ActionCreate, Diff: diffObjects(r, nil, obj)}, nil
	}
	after, err := c.apply(ctx, obj, true)
	if err != nil {
		if meta.IsNoMatchError(err) {
			// A custom resource whose new CRD is not served yet.
			return Change{Object: r, Action: ActionUpdate, Diff: diffObjects(r, live, obj)}, nil
		}
		return Change{}, fmt.Errorf("planning the upgrade: %w", err)
	}
	d := diffObjects(r, live, after)
	if d == "" {
		return Change{Object: r, Action: ActionUnchanged}, nil
	}
	return Change{Object: r, Action: ActionUpdate, Diff: d}, nil
}

// Apply carries out the plan: CRDs, then the rest, then the record of the
// installation, then it prunes what the new rendering no longer holds, and
// waits for readiness.
func (p *Plan) Apply(ctx context.Context, c *Clients) (*Result, error) {
	observe := p.Options.Observer.orDiscard()
	if w := DevelopmentImageWarning(p.Manifest); w != "" {
		observe(Event{Type: EventWarning, Message: w})
	}
	crds, rest := splitCRDs(p.Manifest.Objects)
	applied, err := c.applyAll(ctx, crds, rest, observe)
	if err != nil {
		return nil, &PartialError{Applied: applied, Total: len(p.Manifest.Objects), Err: err}
	}
	if err := c.record(ctx, p.Options, p.Manifest); err != nil {
		return nil, &PartialError{Applied: applied, Total: len(p.Manifest.Objects), Err: err}
	}
	res := &Result{Applied: applied}
	for _, ch := range p.Changes {
		if ch.Action != ActionPrune {
			continue
		}
		if err := c.deleteOwned(ctx, ch.Object, p.Options.Namespace); err != nil {
			return res, fmt.Errorf("pruning: %w", err)
		}
		res.Pruned = append(res.Pruned, ch.Object)
		observe(Event{Type: EventPruned, Object: ch.Object})
	}
	if p.Options.Wait > 0 {
		observe(Event{Type: EventInfo, Message: fmt.Sprintf("waiting up to %s for the control plane to be ready", p.Options.Wait)})
		return res, c.WaitReady(ctx, applied, p.Options.Wait, observe)
	}
	return res, nil
}

// deleteOwned deletes r only if it still carries the ownership label of
// namespace: between planning and pruning someone may have taken it over.
func (c *Clients) deleteOwned(ctx context.Context, r Ref, namespace string) error {
	live, err := c.get(ctx, r)
	if err != nil || live == nil {
		return err
	}
	if live.GetLabels()[wellknown.LabelControlPlaneNamespace] != namespace {
		return nil
	}
	ri, err := c.resource(r)
	if err != nil {
		return err
	}
	policy := metav1.DeletePropagationBackground
	uid := live.GetUID()
	err = ri.Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isGone(err) {
		return fmt.Errorf("deleting %s: %w", r, err)
	}
	return nil
}

// diffObjects is a unified diff of two states of r as YAML, without the
// fields the server owns and with Secret values masked; "" when equal.
func diffObjects(r Ref, before, after *unstructured.Unstructured) string {
	a, b := comparable(before), comparable(after)
	if a == b {
		return ""
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(a), B: difflib.SplitLines(b),
		FromFile: "live " + r.String(), ToFile: "upgraded " + r.String(), Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("(diff failed: %v)", err)
	}
	return d
}

func comparable(obj *unstructured.Unstructured) string {
	if obj == nil {
		return ""
	}
	o := obj.DeepCopy()
	for _, f := range [][]string{
		{"status"},
		{"metadata", "managedFields"}, {"metadata", "resourceVersion"}, {"metadata", "generation"},
		{"metadata", "uid"}, {"metadata", "creationTimestamp"}, {"metadata", "selfLink"},
		{"metadata", "annotations", "deployment.kubernetes.io/revision"},
	} {
		unstructured.RemoveNestedField(o.Object, f...)
	}
	if ann := o.GetAnnotations(); ann != nil && len(ann) == 0 {
		unstructured.RemoveNestedField(o.Object, "metadata", "annotations")
	}
	if o.GetKind() == "Secret" {
		maskSecret(o)
	}
	b, err := yaml.Marshal(o.Object)
	if err != nil {
		return fmt.Sprintf("(cannot encode: %v)", err)
	}
	return string(b)
}

// maskSecret replaces each Secret value by a digest, so a diff shows that a
// key changed without showing it: private keys never reach a terminal or a
// CI log this way.
func maskSecret(o *unstructured.Unstructured) {
	for _, field := range []string{"data", "stringData"} {
		m, ok, _ := unstructured.NestedMap(o.Object, field)
		if !ok {
			continue
		}
		for k, v := range m {
			m[k] = fmt.Sprintf("(masked, %d characters, digest %s)", len(fmt.Sprint(v)), shortDigest(fmt.Sprint(v)))
		}
		_ = unstructured.SetNestedMap(o.Object, m, field)
	}
}

// Summary counts the plan's changes by action, e.g. "2 to create, 1 to
// update, 12 unchanged, 1 to prune".
func (p *Plan) Summary() string {
	counts := map[Action]int{}
	for _, ch := range p.Changes {
		counts[ch.Action]++
	}
	parts := []string{}
	for _, a := range []struct {
		act  Action
		verb string
	}{{ActionCreate, "to create"}, {ActionUpdate, "to update"}, {ActionPrune, "to prune"}, {ActionUnchanged, "unchanged"}} {
		if counts[a.act] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a.act], a.verb))
		}
	}
	return strings.Join(parts, ", ")
}

func shortDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
