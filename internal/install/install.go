package install

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/pki"
)

// Options configure Install and PlanUpgrade.
type Options struct {
	// Namespace is the control plane's namespace.
	Namespace string
	// Values are the user's values: for install everything given on the
	// command line; for upgrade the new ones, merged over the stored ones.
	Values map[string]any
	// Identity is the user's identity CA; nil reuses the one in the cluster
	// or, on a first install, generates one.
	Identity *render.Identity
	// Webhook is the user's webhook certificate; nil reuses the one in the
	// cluster while it is valid for long enough, or generates one.
	Webhook *render.Webhook
	// Version is the mesh version to install.
	Version string
	// Wait bounds the wait for the control plane to become ready; zero
	// does not wait.
	Wait time.Duration
	// Observer receives progress; nil discards it.
	Observer Observer
	// PKI is the clock and randomness of generated credentials.
	PKI pki.Source
	// Render renders the control plane; nil means render.Render. Tests wrap
	// it to add or drop objects.
	Render func(render.Options) (*render.Manifest, error)
}

func (o Options) render(ro render.Options) (*render.Manifest, error) {
	if o.Render != nil {
		return o.Render(ro)
	}
	return render.Render(ro)
}

func (o Options) trustDomain() string {
	merged := render.MergeValues(render.Defaults(), o.Values)
	if td, ok := merged["trustDomain"].(string); ok && td != "" {
		return td
	}
	return "cluster.local"
}

// ErrAlreadyInstalled refuses an install over an existing mesh.
var ErrAlreadyInstalled = errors.New("the mesh is already installed")

// AlreadyInstalledError says where and which version is installed.
type AlreadyInstalledError struct{ Installation *Installation }

func (e *AlreadyInstalledError) Error() string {
	return fmt.Sprintf("the mesh %s is already installed in namespace %s", e.Installation.Version, e.Installation.Namespace)
}

func (e *AlreadyInstalledError) Unwrap() error { return ErrAlreadyInstalled }

// PartialError reports an apply that stopped half way: what was applied
// before the failure, out of how many objects.
type PartialError struct {
	Applied []Ref
	Total   int
	Err     error
}

func (e *PartialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v\napplied %d of %d objects before the failure", e.Err, len(e.Applied), e.Total)
	for _, r := range e.Applied {
		fmt.Fprintf(&b, "\n  %s", r)
	}
	return b.String()
}

func (e *PartialError) Unwrap() error { return e.Err }

// Result is what an install or upgrade changed.
type Result struct {
	Applied []Ref
	Pruned  []Ref
}

// RenderOffline renders the control plane without a cluster, for
// `install --dry-run`: with the user's identity CA or a new one, and a new
// webhook certificate.
func RenderOffline(opts Options, kubeVersion string) (*render.Manifest, error) {
	if err := CheckMeshNamespace(opts.Namespace); err != nil {
		return nil, err
	}
	id := opts.Identity
	if id == nil {
		gen, err := GenerateIdentity(opts.trustDomain(), opts.PKI)
		if err != nil {
			return nil, err
		}
		id = &gen
	}
	wh := opts.Webhook
	if wh == nil {
		gen, err := GenerateWebhook(opts.Namespace, opts.PKI)
		if err != nil {
			return nil, err
		}
		wh = &gen
	}
	return opts.render(render.Options{Namespace: opts.Namespace, Values: opts.Values, Identity: *id, Webhook: *wh, Version: opts.Version, KubeVersion: kubeVersion})
}

// Install applies the control plane to a cluster that does not have one:
// CRDs first (waiting until they are served), then the rest, then the record
// of the installation, then it waits for readiness. Re-running it after a
// failure finishes the job, keeping the identity CA the failed run applied.
func Install(ctx context.Context, c *Clients, opts Options) (*Result, error) {
	observe := opts.Observer.orDiscard()
	if err := CheckMeshNamespace(opts.Namespace); err != nil {
		return nil, err
	}
	if inst, err := Find(ctx, c.Kube, opts.Namespace); err == nil {
		return nil, &AlreadyInstalledError{Installation: inst}
	} else if !errors.Is(err, ErrNotInstalled) {
		return nil, err
	}
	manifest, err := c.renderFor(ctx, opts, false)
	if err != nil {
		return nil, err
	}
	if w := DevelopmentImageWarning(manifest); w != "" {
		observe(Event{Type: EventWarning, Message: w})
	}
	crds, rest := splitCRDs(manifest.Objects)
	applied, err := c.applyAll(ctx, crds, rest, observe)
	if err != nil {
		return nil, &PartialError{Applied: applied, Total: len(manifest.Objects), Err: err}
	}
	if err := c.record(ctx, opts, manifest); err != nil {
		return nil, &PartialError{Applied: applied, Total: len(manifest.Objects), Err: err}
	}
	res := &Result{Applied: applied}
	if opts.Wait > 0 {
		observe(Event{Type: EventInfo, Message: fmt.Sprintf("waiting up to %s for the control plane to be ready", opts.Wait)})
		return res, c.WaitReady(ctx, applied, opts.Wait, observe)
	}
	return res, nil
}

// renderFor renders for the cluster: its Kubernetes version, and the
// credentials that are there or new ones.
func (c *Clients) renderFor(ctx context.Context, opts Options, upgrade bool) (*render.Manifest, error) {
	sv, err := c.Kube.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("reading the Kubernetes version: %w", err)
	}
	id, wh, err := c.credentials(ctx, opts.Namespace, opts.trustDomain(), opts.Identity, opts.Webhook, upgrade, opts.PKI)
	if err != nil {
		return nil, err
	}
	m, err := opts.render(render.Options{Namespace: opts.Namespace, Values: opts.Values, Identity: id, Webhook: wh, Version: opts.Version, KubeVersion: sv.GitVersion, Upgrade: upgrade})
	if err != nil {
		return nil, err
	}
	if err := c.markCreated(ctx, m, opts.Namespace); err != nil {
		return nil, err
	}
	return m, nil
}

// record writes the installation's Secret: the user's non-default values
// and the inventory of what was applied, which the next upgrade prunes
// against. It is written after everything else, so its presence means the
// install completed.
func (c *Clients) record(ctx context.Context, opts Options, m *render.Manifest) error {
	ns := m.Find("Namespace", "", opts.Namespace)
	if ns == nil {
		return fmt.Errorf("recording the installation: the rendering holds no Namespace %s", opts.Namespace)
	}
	inventory := make([]Ref, 0, len(m.Objects))
	for _, o := range m.Objects {
		inventory = append(inventory, refOf(o))
	}
	values := render.StripCredentials(render.NonDefault(opts.Values))
	labels := ns.GetLabels()
	delete(labels, LabelNamespaceCreated)
	sec, err := valuesSecret(opts.Namespace, opts.Version, labels, values, inventory)
	if err != nil {
		return err
	}
	obj, err := toUnstructured(sec)
	if err != nil {
		return err
	}
	if _, err := c.apply(ctx, obj, false); err != nil {
		return fmt.Errorf("recording the installation: %w", err)
	}
	return nil
}
