package check

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Config is what a run checks and with what.
type Config struct {
	// RESTConfig gives the cluster's client configuration; it is called by
	// the first check, so a broken kubeconfig is reported as a failed check.
	RESTConfig func() (*rest.Config, error)
	// Namespace is the control plane's namespace.
	Namespace string
	// WorkloadNamespace limits the data-plane checks to one namespace;
	// empty checks every namespace.
	WorkloadNamespace string
	// Version is meshctl's version, which the control plane should run.
	Version string
	// Now is this machine's clock: certificates' validity and the clock
	// skew with the API server are judged by it. Nil means time.Now.
	Now func() time.Time
}

// State is what checks share during one run: the clients, and every list
// already fetched, so that each kind of the mesh's objects is listed once
// (by its ownership label) and checked in memory. A State serves one run
// and is not safe for concurrent use.
type State struct {
	cfg Config

	kube    kubernetes.Interface
	dynamic dynamic.Interface
	dates   *dateRecorder
	// serverVersion is the API server's gitVersion ("v1.36.3").
	serverVersion string

	lists map[schema.GroupVersionResource]listed

	// installedVersion is the version label of the installation.
	installedVersion string

	// Established by the identity checks for the ones after them.
	anchors     []*x509.Certificate
	issuerChain []*x509.Certificate
	webhookCert *x509.Certificate

	// workloadPods are the pods of the workloads' namespace (every
	// namespace without one), listed once for the data-plane checks.
	workloadPods []corev1.Pod
}

// podsOfWorkloads returns the pods of the workloads' namespace, or of
// every namespace, listing them on first use only.
func (s *State) podsOfWorkloads(ctx context.Context) ([]corev1.Pod, error) {
	if s.workloadPods != nil {
		return s.workloadPods, nil
	}
	if err := s.clients(); err != nil {
		return nil, err
	}
	l, err := s.kube.CoreV1().Pods(s.cfg.WorkloadNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	s.workloadPods = l.Items
	if s.workloadPods == nil {
		s.workloadPods = []corev1.Pod{}
	}
	return s.workloadPods, nil
}

type listed struct {
	items []unstructured.Unstructured
	err   error
}

// NewState returns the state of a run over cfg; it connects to nothing yet.
func NewState(cfg Config) *State {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &State{cfg: cfg, lists: map[schema.GroupVersionResource]listed{}}
}

func (s *State) now() time.Time { return s.cfg.Now() }

// connect builds the clients; the kubernetes-api category calls it first.
func (s *State) connect() error {
	if s.cfg.RESTConfig == nil {
		return errors.New("no client configuration")
	}
	cfg, err := s.cfg.RESTConfig()
	if err != nil {
		return err
	}
	cfg = rest.CopyConfig(cfg)
	s.dates = &dateRecorder{now: s.cfg.Now}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &dateTransport{next: rt, rec: s.dates}
	})
	if s.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	if s.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	return nil
}

func (s *State) clients() error {
	if s.kube == nil {
		return errors.New("no Kubernetes client: the kubernetes-api checks did not pass")
	}
	return nil
}

// ownedSelector selects the objects of the control plane in the checked
// namespace.
func (s *State) ownedSelector() string {
	return wellknown.LabelControlPlaneNamespace + "=" + s.cfg.Namespace
}

// list returns the control plane's objects of one kind, listing them on
// first use only.
func (s *State) list(ctx context.Context, r resource) ([]unstructured.Unstructured, error) {
	if l, ok := s.lists[r.GVR]; ok {
		return l.items, l.err
	}
	if err := s.clients(); err != nil {
		return nil, err
	}
	var ri dynamic.ResourceInterface = s.dynamic.Resource(r.GVR)
	if r.Namespaced {
		ri = s.dynamic.Resource(r.GVR).Namespace(s.cfg.Namespace)
	}
	var l listed
	ul, err := ri.List(ctx, metav1.ListOptions{LabelSelector: s.ownedSelector()})
	if err != nil {
		l.err = fmt.Errorf("listing %s: %w", r.GVR.GroupResource(), err)
	} else {
		l.items = ul.Items
	}
	// A cancelled or timed-out list is not a fact about the cluster; the
	// next check asks again.
	if ctx.Err() == nil {
		s.lists[r.GVR] = l
	}
	return l.items, l.err
}

// object returns the control plane's object of kind r named name, or an
// error saying it is missing.
func (s *State) object(ctx context.Context, r resource, name string) (*unstructured.Unstructured, error) {
	items, err := s.list(ctx, r)
	if err != nil {
		return nil, err
	}
	for i := range items {
		if items[i].GetName() == name {
			return &items[i], nil
		}
	}
	return nil, &missingError{r.describe(name, s.cfg.Namespace)}
}

// missingError names objects the control plane lacks.
type missingError struct{ what string }

func (e *missingError) Error() string {
	return e.what + " is missing (or lacks the label " + wellknown.LabelControlPlaneNamespace + ")"
}

// decode converts a listed object into its typed form.
func decode[T any](u *unstructured.Unstructured) (*T, error) {
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
		return nil, fmt.Errorf("decoding %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return &v, nil
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// dateRecorder keeps the Date header of the API server's latest response
// and this machine's time when it arrived, for the clock-skew check.
type dateRecorder struct {
	now func() time.Time

	mu       sync.Mutex
	server   time.Time
	local    time.Time
	recorded bool
}

func (d *dateRecorder) last() (server, local time.Time, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.server, d.local, d.recorded
}

type dateTransport struct {
	next http.RoundTripper
	rec  *dateRecorder
}

func (t *dateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	local := t.rec.now()
	if date, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
		t.rec.mu.Lock()
		t.rec.server, t.rec.local, t.rec.recorded = date, local, true
		t.rec.mu.Unlock()
	}
	return resp, nil
}
