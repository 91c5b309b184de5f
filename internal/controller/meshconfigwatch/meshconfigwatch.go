// Package meshconfigwatch keeps the controller's copy of the mesh-wide
// configuration, the MeshConfig object "mesh" in the control-plane
// namespace, current by watching the API server.
//
// Only a configuration that passes Spec.Validate is used. An invalid update,
// or the object's deletion, leaves the last valid configuration in use (the
// mesh keeps working with its last good configuration rather than with none),
// and is logged and counted.
package meshconfigwatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/promtext"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Watcher holds the current valid MeshConfig of one namespace. It is safe
// for concurrent use.
type Watcher struct {
	client    dynamic.Interface
	namespace string
	log       *slog.Logger

	mu       sync.RWMutex
	current  *meshconfig.Spec
	version  string // resourceVersion of current
	rejected error  // why the newest object seen was not used, if it was not
	rejects  uint64
	listErr  error // of the last list or watch call
}

// New returns a Watcher of the MeshConfig "mesh" in namespace. It needs
// list and watch on meshconfigs in that namespace, nothing else.
func New(client dynamic.Interface, namespace string, log *slog.Logger) *Watcher {
	return &Watcher{client: client, namespace: namespace, log: log.With("meshconfig", namespace+"/"+wellknown.MeshConfigName)}
}

// Run watches until ctx is done. Failures to list or watch (the CRD not yet
// installed, RBAC missing, the API server away) are logged and retried with
// the informer's backoff; Run returns only when ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	res := w.client.Resource(meshconfig.GroupVersionResource).Namespace(w.namespace)
	byName := fields.OneTermEqualSelector("metadata.name", wellknown.MeshConfigName).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = byName
			list, err := res.List(ctx, opts)
			return list, w.failed("listing", err)
		},
		// The informer may list through a watch (WatchListClient), so
		// watch errors count as list errors too.
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = byName
			wi, err := res.Watch(ctx, opts)
			return wi, w.failed("watching", err)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 0, cache.Indexers{})
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.log.Warn("watching the MeshConfig; retrying", "error", err)
	}); err != nil {
		return fmt.Errorf("watching the MeshConfig: %w", err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.observe,
		UpdateFunc: func(_, obj any) { w.observe(obj) },
		DeleteFunc: func(any) {
			w.log.Warn("MeshConfig deleted; keeping the last valid configuration")
		},
	}); err != nil {
		return fmt.Errorf("watching the MeshConfig: %w", err)
	}
	inf.RunWithContext(ctx)
	return nil
}

// failed records the outcome of a list or watch call, for readiness to say
// why there is no MeshConfig, and adds to the API server's error the likely
// cause an operator can act on.
func (w *Watcher) failed(verb string, err error) error {
	err = w.explain(verb, err)
	w.mu.Lock()
	w.listErr = err
	w.mu.Unlock()
	return err
}

func (w *Watcher) explain(verb string, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s %s in %s: %w (is the MeshConfig CRD installed?)", verb, meshconfig.GroupVersionResource.GroupResource(), w.namespace, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s %s in %s: %w (the controller's Role must allow get, list and watch on them)", verb, meshconfig.GroupVersionResource.GroupResource(), w.namespace, err)
	}
	return fmt.Errorf("%s %s in %s: %w", verb, meshconfig.GroupVersionResource.GroupResource(), w.namespace, err)
}

func (w *Watcher) observe(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	spec, err := decode(u)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.rejected = fmt.Errorf("MeshConfig %s/%s at resourceVersion %s is invalid: %w", u.GetNamespace(), u.GetName(), u.GetResourceVersion(), err)
		w.rejects++
		w.log.Error("rejecting the MeshConfig; keeping the last valid configuration", "resourceVersion", u.GetResourceVersion(), "error", err, "previousResourceVersion", w.version)
		return
	}
	w.current, w.version, w.rejected = &spec, u.GetResourceVersion(), nil
	w.log.Info("using the MeshConfig", "resourceVersion", u.GetResourceVersion(), "generation", u.GetGeneration(), "proxyImage", spec.Proxy.Image, "trustDomain", spec.TrustDomain)
}

func decode(u *unstructured.Unstructured) (meshconfig.Spec, error) {
	var mc meshconfig.MeshConfig
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mc); err != nil {
		return meshconfig.Spec{}, fmt.Errorf("decoding: %w", err)
	}
	if err := mc.Spec.Validate(); err != nil {
		return meshconfig.Spec{}, err
	}
	return mc.Spec, nil
}

// Current returns a copy of the current valid configuration, or an error
// saying why there is none yet.
func (w *Watcher) Current() (meshconfig.Spec, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.current == nil {
		return meshconfig.Spec{}, w.missing()
	}
	spec := *w.current
	spec.Proxy.Resources = *w.current.Proxy.Resources.DeepCopy()
	return spec, nil
}

// Loaded reports, for readiness, whether a valid configuration is in use and
// if not, why.
func (w *Watcher) Loaded() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.current == nil {
		return w.missing()
	}
	return nil
}

func (w *Watcher) missing() error {
	if w.rejected != nil {
		return fmt.Errorf("no valid MeshConfig yet: %w", w.rejected)
	}
	if w.listErr != nil {
		return fmt.Errorf("no valid MeshConfig %s/%s seen yet: %w", w.namespace, wellknown.MeshConfigName, w.listErr)
	}
	return fmt.Errorf("no valid MeshConfig %s/%s seen yet", w.namespace, wellknown.MeshConfigName)
}

// WriteMetrics writes the watcher's series in the Prometheus text format.
func (w *Watcher) WriteMetrics(out io.Writer) error {
	w.mu.RLock()
	loaded, invalid, rejects := w.current != nil, w.rejected != nil, w.rejects
	w.mu.RUnlock()
	pw := promtext.NewWriter(out)
	pw.Header("meshctl_controller_meshconfig_loaded", promtext.Gauge, "1 when a valid MeshConfig is in use.")
	pw.SampleInt("meshctl_controller_meshconfig_loaded", b2i(loaded))
	pw.Header("meshctl_controller_meshconfig_invalid", promtext.Gauge, "1 when the newest MeshConfig seen failed validation and an older one (or none) is in use.")
	pw.SampleInt("meshctl_controller_meshconfig_invalid", b2i(invalid))
	pw.Header("meshctl_controller_meshconfig_rejected_total", promtext.Counter, "MeshConfig versions that failed validation.")
	pw.SampleUint("meshctl_controller_meshconfig_rejected_total", rejects)
	return pw.Flush()
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
