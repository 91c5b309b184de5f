package push

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/controller/registry"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

// BenchmarkPush measures the push path end to end: N simulated proxies,
// each a real HTTP/2 client over loopback TLS with its own connection and
// certificate, subscribe to one hot service every proxy uses plus -push.subs
// random others. Each iteration is one endpoint change of the hot service;
// it ends when every proxy has applied and ACKed it.
//
// -push.source=kube (the default) writes the change as an EndpointSlice
// update to the real test API server and runs the Kubernetes registry;
// -push.source=sink feeds the Sink directly (the registry and the API
// server left out). Run with a fixed count, e.g.
//
//	go test -run '^$' -bench BenchmarkPush -benchtime 200x ./internal/controller/push \
//	  -push.proxies 1000 -push.services 500 -push.endpoints 5000
//
// Reported: p50 and p99 latency from the change to the last proxy's ACK,
// the process heap after GC (which holds the proxies' side too) and the
// part of it that was there before any proxy connected (the controller's
// state), and bytes of Endpoints messages sent per change per subscribed
// proxy.
var (
	benchProxies        = flag.Int("push.proxies", 1000, "simulated proxies")
	benchServices       = flag.Int("push.services", 500, "services")
	benchEndpoints      = flag.Int("push.endpoints", 5000, "endpoints, spread over the services")
	benchSubs           = flag.Int("push.subs", 10, "services each proxy subscribes to besides the hot one")
	benchSource         = flag.String("push.source", "kube", "kube: EndpointSlices on the test API server; sink: feed the Sink directly")
	benchChurn          = flag.Float64("push.churn", 0, "pods per second replaced in the other services' endpoints while the changes are measured")
	benchClientsProcess = flag.Bool("push.clients-process", false, "run the simulated proxies in a child process (the test binary again), so that this process runs the controller alone: cpu-ms/change and the latency are the controller's, and each process holds one descriptor per proxy (10,000 proxies fit a 20,000 limit)")
	benchClientsCPUs    = flag.String("push.clients-cpus", "", "with -push.clients-process: the CPUs of the child process, as taskset -c takes them (pin this process to the others with taskset too)")
	benchProfile        = flag.String("push.cpuprofile", "", "write a CPU profile of the measured changes only (not the setup) to this file; its samples carry the label side=controller or side=proxy")
)

type benchFixture struct {
	server   *Server
	nProxies int
	hotKey   string
	change   func(ctx context.Context, gen int) error
	// churn replaces endpoint slot of service svc (not the hot one) with
	// a new pod numbered n.
	churn        func(ctx context.Context, svc, slot, n int) error
	nSvc, perSvc int
	churnErr     atomic.Pointer[error] // the first churn failure
	churnNext    int                   // the next churned pod's number, across runs
	stateHeap    uint64

	// current is the newest generation of the hot service that every
	// proxy applied; waiters hear when a generation gets there.
	current atomic.Int64
	mu      sync.Mutex
	waiters map[int]chan struct{}
}

// allApplied records that every proxy applied generation gen.
func (f *benchFixture) allApplied(gen int) {
	f.current.Store(int64(gen))
	f.mu.Lock()
	defer f.mu.Unlock()
	if w, ok := f.waiters[gen]; ok {
		close(w)
		delete(f.waiters, gen)
	}
}

var (
	benchOnce sync.Once
	benchFix  *benchFixture
	benchErr  error
)

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// processCPU is the CPU time the process used so far, user and system:
// the controller's and the simulated proxies' together (the profile of
// -push.cpuprofile tells them apart).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// churnAddr is the address of the n-th churned pod.
func churnAddr(n int) string { return fmt.Sprintf("10.%d.%d.%d", 150+n/62500%50, n/250%250, n%250+1) }

// runChurn replaces pods in the other services at rate per second until
// stop is closed, with a few calls in flight (an API write takes longer
// than the interval: 16 at a time); ticks that find every worker busy are
// dropped. It
// returns the pods replaced.
func (f *benchFixture) runChurn(ctx context.Context, rate float64, stop <-chan struct{}) func() (int64, int64) {
	var done, failed atomic.Int64
	if rate <= 0 || f.nSvc < 2 {
		return func() (int64, int64) { return 0, 0 }
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for n := range jobs {
				svc := 1 + n%(f.nSvc-1)
				if err := f.churn(ctx, svc, (n/(f.nSvc-1))%f.perSvc, n); err != nil {
					if failed.Add(1) == 1 {
						f.churnErr.Store(&err)
					}
					continue
				}
				done.Add(1)
			}
		})
	}
	go func() {
		defer close(jobs)
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			select {
			case jobs <- f.churnNext:
				f.churnNext++
			default:
			}
		}
	}()
	return func() (int64, int64) { wg.Wait(); return done.Load(), failed.Load() }
}

func endpointAddr(svc, i int) string { return fmt.Sprintf("10.%d.%d.%d", 100+svc/250, svc%250, i+1) }

// zoneGen reads the generation a change wrote into the zone of the hot
// service's first endpoint ("g<N>").
func zoneGen(set *meshapi.Set, key string) int {
	st := set.Services[key]
	if st == nil {
		return -1
	}
	for _, e := range st.Endpoints {
		if e.Address == endpointAddr(0, 0) {
			n, err := strconv.Atoi(strings.TrimPrefix(e.Zone, "g"))
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// keepTB lets the fixture, made once for every run of the benchmark,
// outlive the first run's cleanups.
type keepTB struct{ testing.TB }

func (keepTB) Cleanup(func()) {}

func setupBench(tb *testing.B) (*benchFixture, error) {
	b := keepTB{tb}
	ctx := context.Background()
	ca := newTestCA(b)
	nSvc, nEps, nProx := *benchServices, *benchEndpoints, *benchProxies
	perSvc := max(1, nEps/nSvc)
	f := &benchFixture{waiters: map[int]chan struct{}{}, nProxies: nProx}
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	mesh := make(chan meshapi.MeshSettings, 1)
	mesh <- meshapi.MeshSettings{TrustDomain: trustDomain, InboundMTLS: meshapi.MTLSPermissive}
	bundle := make(chan meshapi.Bundle, 1)
	bundle <- ca.bundle
	s.opts.Mesh, s.opts.Bundle = mesh, bundle
	// Profile labels separate the controller's CPU from the simulated
	// proxies' (go tool pprof -tagfocus side=controller): goroutines
	// inherit the labels of the goroutine that starts them.
	asController := func(fn func()) {
		pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("side", "controller")))
		defer pprof.SetGoroutineLabels(ctx)
		fn()
	}
	asController(func() { go s.Run(ctx) })
	f.server = s

	names := make([]string, nSvc)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%d", i)
	}
	const ns = "push-bench"
	epsOf := func(svc, gen int) []meshapi.Endpoint {
		out := make([]meshapi.Endpoint, perSvc)
		for i := range out {
			out[i] = meshapi.Endpoint{Address: endpointAddr(svc, i), Meshed: true, Pod: fmt.Sprintf("%s/%s-%d", ns, names[svc], i),
				Identity: "spiffe://cluster.local/ns/" + ns + "/sa/" + names[svc]}
		}
		if svc == 0 {
			out[0].Zone = fmt.Sprintf("g%d", gen)
		}
		return out
	}

	switch *benchSource {
	case "sink":
		for i, n := range names {
			key := ns + "/" + n
			s.UpsertService(key, &meshapi.Service{Namespace: ns, Name: n, Addresses: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)},
				Ports: []meshapi.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: meshapi.ProtocolHTTP1}}})
			s.UpsertEndpoints(key, epsOf(i, 0))
		}
		f.change = func(_ context.Context, gen int) error {
			s.UpsertEndpoints(ns+"/"+names[0], epsOf(0, gen))
			return nil
		}
		current := map[int][]meshapi.Endpoint{}
		var cmu sync.Mutex
		f.churn = func(_ context.Context, svc, slot, n int) error {
			cmu.Lock()
			defer cmu.Unlock()
			e := current[svc]
			if e == nil {
				e = epsOf(svc, 0)
			}
			e = slices.Clone(e)
			e[slot].Address, e[slot].Pod = churnAddr(n), fmt.Sprintf("%s/churn-%d", ns, n)
			registry.SortEndpoints(e)
			current[svc] = e
			s.UpsertEndpoints(ns+"/"+names[svc], e)
			return nil
		}
	case "kube":
		env := testenv.Shared(b)
		kube := env.Clientset()
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		// Services without selectors whose EndpointSlices the benchmark
		// writes itself, as another controller would: the change under
		// test is one EndpointSlice update. Pods exist (without status)
		// so that endpoints carry identities and the meshed flag.
		work := make(chan int)
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range work {
					if err := createBenchService(ctx, kube, ns, names[i], perSvc, i); err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				}
			})
		}
		for i := range names {
			work <- i
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errs:
			return nil, err
		default:
		}
		reg := registry.NewKube(kube, trustDomain, slog.New(slog.DiscardHandler))
		asController(func() { go reg.Run(ctx, s) })
		for reg.Synced() != nil {
			time.Sleep(50 * time.Millisecond)
		}
		f.change = func(ctx context.Context, gen int) error {
			sl, err := kube.DiscoveryV1().EndpointSlices(ns).Get(ctx, names[0], metav1.GetOptions{})
			if err != nil {
				return err
			}
			sl.Endpoints[0].Zone = ptr(fmt.Sprintf("g%d", gen))
			_, err = kube.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{})
			return err
		}
		// A churned pod: the new pod is created, the slice names it
		// instead of the old one, the old one is deleted.
		f.churn = func(ctx context.Context, svc, slot, n int) error {
			pod := fmt.Sprintf("churn-%d", n)
			if _, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: pod, Annotations: map[string]string{wellknown.AnnotationInjected: "{}"}},
				Spec:       corev1.PodSpec{ServiceAccountName: names[svc], Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			}, metav1.CreateOptions{}); err != nil {
				return err
			}
			sl, err := kube.DiscoveryV1().EndpointSlices(ns).Get(ctx, names[svc], metav1.GetOptions{})
			if err != nil {
				return err
			}
			old := sl.Endpoints[slot].TargetRef.Name
			sl.Endpoints[slot].Addresses = []string{churnAddr(n)}
			sl.Endpoints[slot].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}
			if _, err := kube.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
				return err
			}
			return kube.CoreV1().Pods(ns).Delete(ctx, old, metav1.DeleteOptions{})
		}
	default:
		return nil, fmt.Errorf("-push.source %q: want kube or sink", *benchSource)
	}
	f.hotKey = ns + "/" + names[0]
	f.nSvc, f.perSvc = nSvc, perSvc
	// Wait until the server holds every service's endpoints.
	for deadline := time.Now().Add(5 * time.Minute); ; {
		s.mu.RLock()
		n := 0
		for k, r := range s.resources {
			if k.kind == meshapi.KindEndpoints && len(r.eps) == perSvc {
				n++
			}
		}
		s.mu.RUnlock()
		if n == nSvc {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d services loaded", n, nSvc)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.stateHeap = heapAfterGC()

	var srv *httptest.Server
	asController(func() { srv = ca.serve(b, s.Handler()) })
	rnd := rand.New(rand.NewPCG(1, 2))
	subs := make([][]string, nProx)
	for i := range subs {
		subs[i] = []string{f.hotKey}
		for range *benchSubs {
			subs[i] = append(subs[i], ns+"/"+names[rnd.IntN(nSvc)])
		}
	}
	if *benchClientsProcess {
		if err := startClientsProcess(ca, srv.URL, ns, f.hotKey, subs, f.allApplied); err != nil {
			return nil, err
		}
		return f, nil
	}
	pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("side", "proxy")))
	defer pprof.SetGoroutineLabels(ctx)
	if _, err := startSwarm(b, ca, srv.URL, ns, f.hotKey, subs, f.allApplied); err != nil {
		return nil, err
	}
	return f, nil
}

// createBenchService creates a selector-less Service, its pods (objects
// only) and one EndpointSlice naming them.
func createBenchService(ctx context.Context, kube kubernetes.Interface, ns, name string, perSvc, idx int) error {
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), AppProtocol: ptr("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "bench.meshctl.dev"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for i := range perSvc {
		pod := fmt.Sprintf("%s-%d", name, i)
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: pod, Annotations: map[string]string{wellknown.AnnotationInjected: "{}"}},
			Spec:       corev1.PodSpec{ServiceAccountName: name, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		e := discoveryv1.Endpoint{Addresses: []string{endpointAddr(idx, i)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}
		if idx == 0 && i == 0 {
			e.Zone = ptr("g0")
		}
		sl.Endpoints = append(sl.Endpoints, e)
	}
	_, err = kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{})
	return err
}

// applied records that proxy idx applied generation gen (and so every one
// before it that coalescing skipped).
func BenchmarkPush(b *testing.B) {
	benchOnce.Do(func() { benchFix, benchErr = setupBench(b) })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	f := benchFix
	ctx := context.Background()
	var lat []time.Duration
	bytesBefore := f.server.Metrics().Bytes(meshapi.KindEndpoints)
	gen0 := int(f.current.Load())
	if *benchProfile != "" {
		out, err := os.Create(*benchProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		defer pprof.StopCPUProfile()
	}
	stopChurn := make(chan struct{})
	churned := f.runChurn(ctx, *benchChurn, stopChurn)
	churnStart := time.Now()
	if *benchChurn > 0 {
		time.Sleep(2 * time.Second) // the churn is on before the first change
	}
	cpu0 := processCPU()
	b.ResetTimer()
	for i := range b.N {
		gen := gen0 + i + 1
		done := make(chan struct{})
		f.mu.Lock()
		f.waiters[gen] = done
		f.mu.Unlock()
		start := time.Now()
		if err := f.change(ctx, gen); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatalf("change %d: not every one of %d proxies applied it after 30s", gen, f.nProxies)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	close(stopChurn)
	if n, failed := churned(); *benchChurn > 0 {
		b.ReportMetric(float64(n)/time.Since(churnStart).Seconds(), "churn-pods/s")
		if failed > 0 {
			b.Logf("%d churned pods failed, the first: %v", failed, *f.churnErr.Load())
		}
	}
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/change")
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(heapAfterGC())/(1<<20), "heap-MB")
	b.ReportMetric(float64(f.stateHeap)/(1<<20), "state-heap-MB")
	sent := f.server.Metrics().Bytes(meshapi.KindEndpoints) - bytesBefore
	b.ReportMetric(float64(sent)/float64(b.N)/float64(f.nProxies), "B/change/proxy")
}
