package push

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/controller/registry"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

func ptr[T any](v T) *T { return &v }

type podSpec struct {
	name, sa string
	meshed   string // "", "container" or "annotation"
	opaque   string
}

func makePod(ns, app string, p podSpec) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: ns, Labels: map[string]string{"app": app}, Annotations: map[string]string{}},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.sa,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9000}}}},
		},
	}
	switch p.meshed {
	case "container":
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: wellknown.ProxyContainerName, Image: "registry.example/meshproxy:1"})
	case "annotation":
		pod.Annotations[wellknown.AnnotationInjected] = `{"version":"test"}`
	}
	if p.opaque != "" {
		pod.Annotations[wellknown.AnnotationOpaquePorts] = p.opaque
	}
	return pod
}

// kubeFixture is a namespace with ServiceAccounts, ready Pods and a
// Service whose EndpointSlices kube-controller-manager writes.
type kubeFixture struct {
	env  *testenv.Env
	kube kubernetes.Interface
	ns   string
}

func newKubeFixture(ctx context.Context, t testing.TB, ns string) *kubeFixture {
	t.Helper()
	env := testenv.Shared(t)
	f := &kubeFixture{env: env, kube: env.Clientset(), ns: ns}
	if _, err := f.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	return f
}

func (f *kubeFixture) serviceAccount(ctx context.Context, t testing.TB, name string) {
	t.Helper()
	if _, err := f.kube.CoreV1().ServiceAccounts(f.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (f *kubeFixture) readyPod(ctx context.Context, t testing.TB, app string, p podSpec, ip string) {
	t.Helper()
	if _, err := f.kube.CoreV1().Pods(f.ns).Create(ctx, makePod(f.ns, app, p), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := testenv.PodState{Ready: true}
	if ip != "" {
		st.IP = mustAddr(ip)
	}
	if _, err := f.env.SetPodState(ctx, f.ns, p.name, st); err != nil {
		t.Fatal(err)
	}
}

func (f *kubeFixture) service(ctx context.Context, t testing.TB, name string, ports []corev1.ServicePort) *corev1.Service {
	t.Helper()
	svc, err := f.kube.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// startKube runs the Kubernetes registry into a push server served over
// TLS, and waits until the registry synced.
func startKube(ctx context.Context, t testing.TB, f *kubeFixture, ca *testCA) (*Server, *registry.Kube, string) {
	t.Helper()
	s := startServer(t, ca, Options{})
	reg := registry.NewKube(f.kube, trustDomain, slog.New(slog.DiscardHandler))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reg.Run(rctx, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry: %v", err)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for reg.Synced() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("registry not synced: %v", reg.Synced())
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv := ca.serve(t, s.Handler())
	return s, reg, srv.URL
}

func TestKubeDiscovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newKubeFixture(ctx, t, "push-kube")
	f.serviceAccount(ctx, t, "web")
	f.serviceAccount(ctx, t, "legacy")
	f.readyPod(ctx, t, "web", podSpec{name: "web-a", sa: "web", meshed: "container"}, "10.244.50.1")
	f.readyPod(ctx, t, "web", podSpec{name: "web-b", sa: "web", meshed: "annotation"}, "10.244.50.2")
	f.readyPod(ctx, t, "web", podSpec{name: "web-c", sa: "legacy", opaque: "9000"}, "10.244.50.3")
	svc := f.service(ctx, t, "web", []corev1.ServicePort{
		{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: ptr("http")},
		{Name: "grpc", Port: 9000, TargetPort: intstr.FromInt32(9000), AppProtocol: ptr("kubernetes.io/h2c")},
	})
	f.serviceAccount(ctx, t, "marker")
	f.readyPod(ctx, t, "marker", podSpec{name: "marker-a", sa: "marker"}, "10.244.50.9")
	f.service(ctx, t, "marker", []corev1.ServicePort{{Name: "tcp", Port: 5432, AppProtocol: ptr("tcp")}})

	ca := newTestCA(t)
	s, _, url := startKube(ctx, t, f, ca)
	p, err := dialProxy(ca.client(t, "spiffe://cluster.local/ns/push-kube/sa/client"), url, "client", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	vip := svc.Spec.ClusterIP
	key := f.ns + "/web"
	if err := p.subscribe([]string{f.ns + "/marker"}, []string{vip + ":80"}); err != nil {
		t.Fatal(err)
	}

	t.Run("an address resolves to its service with identities, meshed flags and ports", func(t *testing.T) {
		err := p.wait(30*time.Second, "three endpoints", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
			st := set.Services[key]
			return set.Resolutions[vip+":80"].Service == key && st != nil && st.Service != nil && len(st.Endpoints) == 3
		})
		if err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		st := p.set.Services[key]
		p.mu.Unlock()
		wantPorts := []meshapi.ServicePort{
			{Name: "http", Port: 80, Protocol: meshapi.ProtocolHTTP1},
			{Name: "grpc", Port: 9000, TargetPort: 9000, Protocol: meshapi.ProtocolOpaque}, // web-c says 9000 is opaque
		}
		if !slices.Equal(st.Service.Ports, wantPorts) || !slices.Contains(st.Service.Addresses, vip) {
			t.Errorf("service: %+v, want ports %+v and address %s", st.Service, wantPorts, vip)
		}
		want := map[string]meshapi.Endpoint{
			"10.244.50.1": {Meshed: true, Identity: "spiffe://cluster.local/ns/push-kube/sa/web", Pod: "push-kube/web-a"},
			"10.244.50.2": {Meshed: true, Identity: "spiffe://cluster.local/ns/push-kube/sa/web", Pod: "push-kube/web-b"},
			"10.244.50.3": {Meshed: false, Identity: "spiffe://cluster.local/ns/push-kube/sa/legacy", Pod: "push-kube/web-c"},
		}
		for _, e := range st.Endpoints {
			w := want[e.Address]
			if e.Meshed != w.Meshed || e.Identity != w.Identity || e.Pod != w.Pod || e.Ports["http"] != 8080 || e.Terminating {
				t.Errorf("endpoint %s: %+v, want %+v with port http 8080", e.Address, e, w)
			}
		}
	})

	endpointsAfter := func(n int) []*meshapi.ServerMessage {
		var out []*meshapi.ServerMessage
		for _, m := range p.messages()[n:] {
			if m.Name == key && (m.Kind == meshapi.KindEndpoints || m.Kind == meshapi.KindService) {
				out = append(out, m)
			}
		}
		return out
	}
	// markerRoundTrip changes the marker service's endpoints and waits for
	// the proxy to get them: the registry has then handled the events
	// written before.
	markerIP := 9
	markerRoundTrip := func(t *testing.T) {
		t.Helper()
		markerIP++
		name := fmt.Sprintf("marker-%d", markerIP)
		ip := fmt.Sprintf("10.244.50.%d", markerIP)
		f.readyPod(ctx, t, "marker", podSpec{name: name, sa: "marker"}, ip)
		if err := p.wait(30*time.Second, "the marker", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
			st := set.Services[f.ns+"/marker"]
			return st != nil && slices.ContainsFunc(st.Endpoints, func(e meshapi.Endpoint) bool { return e.Address == ip })
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // more than the debounce window
	}

	t.Run("an annotation-only pod change and a service status change push nothing", func(t *testing.T) {
		n := len(p.messages())
		pushed := s.Metrics().Pushes(meshapi.KindEndpoints) + s.Metrics().Pushes(meshapi.KindService)
		patch := []byte(`{"metadata":{"annotations":{"example.com/note":"hello"},"labels":{"tier":"front"}}}`)
		if _, err := f.kube.CoreV1().Pods(f.ns).Patch(ctx, "web-a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		cur, err := f.kube.CoreV1().Services(f.ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Status.Conditions = []metav1.Condition{{Type: "Example", Status: metav1.ConditionTrue, Reason: "Test", LastTransitionTime: metav1.Now()}}
		if _, err := f.kube.CoreV1().Services(f.ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		markerRoundTrip(t)
		if got := endpointsAfter(n); len(got) != 0 {
			t.Errorf("pushed %q", describe(got))
		}
		// The marker is the only push, to this one proxy.
		if d := s.Metrics().Pushes(meshapi.KindEndpoints) + s.Metrics().Pushes(meshapi.KindService) - pushed; d != 1 {
			t.Errorf("%d pushes, want the marker's 1", d)
		}
	})

	t.Run("a pod that stops being ready leaves as a delta within a second", func(t *testing.T) {
		n := len(p.messages())
		start := time.Now()
		if _, err := f.env.SetPodState(ctx, f.ns, "web-b", testenv.PodState{Ready: false}); err != nil {
			t.Fatal(err)
		}
		if err := p.wait(10*time.Second, "web-b gone", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
			return len(set.Services[key].Endpoints) == 2
		}); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		got := endpointsAfter(n)
		if len(got) != 1 || got[0].EndpointsDelta == nil || !slices.Equal(got[0].EndpointsDelta.Remove, []string{"10.244.50.2"}) {
			t.Errorf("got %q, want one delta removing 10.244.50.2", describe(got))
		}
		t.Logf("not ready -> delta at the proxy: %s", took)
	})

	t.Run("a deleted pod leaves as a delta", func(t *testing.T) {
		n := len(p.messages())
		start := time.Now()
		if err := f.kube.CoreV1().Pods(f.ns).Delete(ctx, "web-c", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
			t.Fatal(err)
		}
		if err := p.wait(10*time.Second, "web-c gone", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
			return len(set.Services[key].Endpoints) == 1
		}); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		var deltas int
		for _, m := range endpointsAfter(n) {
			if m.Kind == meshapi.KindEndpoints && m.EndpointsDelta == nil {
				t.Errorf("got the whole set: %q", describe([]*meshapi.ServerMessage{m}))
			}
			deltas++
		}
		t.Logf("deleted -> delta at the proxy: %s (%d messages)", took, deltas)
	})

	t.Run("metrics", func(t *testing.T) {
		var b bytesBuffer
		s.Metrics().WriteMetrics(&b)
		for _, name := range MetricNames {
			if !b.contains(name) {
				t.Errorf("metrics lack %s", name)
			}
		}
	})
}
