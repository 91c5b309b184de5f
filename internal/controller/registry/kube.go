package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/podstatus"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Kube is the registry of a Kubernetes cluster: Services, their
// EndpointSlices, and the Pods behind them for identities, the meshed flag
// and opaque ports. It needs get, list and watch on services, pods and
// discovery.k8s.io endpointslices, cluster-wide.
type Kube struct {
	client      kubernetes.Interface
	trustDomain string
	log         *slog.Logger

	mu        sync.Mutex
	dirty     map[string]struct{}
	wake      chan struct{}
	podSvcs   map[string]map[string]struct{} // pod key -> services it backs
	svcPods   map[string][]string            // service key -> pod keys
	synced    bool
	watchErrs map[string]error // by resource, the last list or watch failure
}

var _ Registry = (*Kube)(nil)

// NewKube returns the registry of the cluster client reaches; identities
// are SPIFFE ids in trustDomain.
func NewKube(client kubernetes.Interface, trustDomain string, log *slog.Logger) *Kube {
	return &Kube{
		client: client, trustDomain: trustDomain, log: log,
		dirty: map[string]struct{}{}, wake: make(chan struct{}, 1),
		podSvcs: map[string]map[string]struct{}{}, svcPods: map[string][]string{},
		watchErrs: map[string]error{},
	}
}

// byService indexes EndpointSlices by the "namespace/name" of their
// service.
const byService = "service"

// slimPod keeps only what the registry reads of a Pod, so that the cache of
// every pod in the cluster costs a fraction of the objects' size.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{ObjectMeta: p.ObjectMeta}
	slim.ManagedFields = nil
	slim.Labels = nil
	slim.OwnerReferences = nil
	slim.Spec.ServiceAccountName = p.Spec.ServiceAccountName
	slim.Spec.Containers = slimContainers(p.Spec.Containers)
	slim.Spec.InitContainers = slimContainers(p.Spec.InitContainers)
	return slim, nil
}

func slimContainers(cs []corev1.Container) []corev1.Container {
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports}
	}
	return out
}

// slim is the informers' transform: pods slimmed, managed fields dropped
// from everything.
func slim(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return slimPod(p)
	}
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Synced returns nil once the caches synced and the first state went to
// the sink.
func (k *Kube) Synced() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.synced {
		return nil
	}
	var reasons []string
	for _, res := range []string{"services", "endpointslices", "pods"} {
		if err := k.watchErrs[res]; err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", res, err))
		}
	}
	if len(reasons) > 0 {
		return fmt.Errorf("waiting for the caches of services, endpointslices and pods: %s (the controller's ClusterRole must allow get, list and watch on them)", strings.Join(reasons, "; "))
	}
	return errors.New("waiting for the caches of services, endpointslices and pods")
}

// Run watches until ctx is done.
func (k *Kube) Run(ctx context.Context, sink Sink) error {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTransform(slim))
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	podInf := factory.Core().V1().Pods()

	if err := sliceInf.Informer().AddIndexers(cache.Indexers{byService: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			return []string{Key(s.Namespace, name)}, nil
		}
		return nil, nil
	}}); err != nil {
		return fmt.Errorf("indexing endpointslices: %w", err)
	}
	for res, inf := range map[string]cache.SharedIndexInformer{"services": svcInf.Informer(), "endpointslices": sliceInf.Informer(), "pods": podInf.Informer()} {
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			k.mu.Lock()
			k.watchErrs[res] = err
			k.mu.Unlock()
			k.log.Warn("watching "+res+"; retrying", "error", err)
		}); err != nil {
			return fmt.Errorf("watching %s: %w", res, err)
		}
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		key func(any) []string
	}{
		{svcInf.Informer(), func(obj any) []string {
			if s, ok := obj.(*corev1.Service); ok {
				return []string{Key(s.Namespace, s.Name)}
			}
			return nil
		}},
		{sliceInf.Informer(), func(obj any) []string {
			if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
				return []string{Key(s.Namespace, s.Labels[discoveryv1.LabelServiceName])}
			}
			return nil
		}},
		{podInf.Informer(), func(obj any) []string {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return nil
			}
			k.mu.Lock()
			defer k.mu.Unlock()
			var out []string
			for s := range k.podSvcs[Key(p.Namespace, p.Name)] {
				out = append(out, s)
			}
			return out
		}},
	}
	for _, h := range handlers {
		mark := func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			k.markDirty(h.key(obj)...)
		}
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    mark,
			UpdateFunc: func(_, obj any) { mark(obj) },
			DeleteFunc: mark,
		}); err != nil {
			return fmt.Errorf("watching: %w", err)
		}
	}

	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("syncing the cache of %v", typ)
		}
	}
	k.log.Info("discovery caches synced")

	em := newEmitter(sink)
	view := kubeView{
		services: svcInf.Lister(), slices: sliceInf.Informer().GetIndexer(), pods: podInf.Lister(),
		trustDomain: k.trustDomain,
	}
	k.process(em, view)
	k.mu.Lock()
	k.synced = true
	k.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.wake:
			k.process(em, view)
		}
	}
}

func (k *Kube) markDirty(keys ...string) {
	if len(keys) == 0 {
		return
	}
	k.mu.Lock()
	for _, key := range keys {
		k.dirty[key] = struct{}{}
	}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// process derives every dirty service from the caches and tells the sink
// what changed.
func (k *Kube) process(em *emitter, view kubeView) {
	k.mu.Lock()
	dirty := k.dirty
	k.dirty = make(map[string]struct{}, len(dirty))
	k.mu.Unlock()
	for key := range dirty {
		svc, eps, pods := view.derive(key)
		if !em.set(key, svc, eps) {
			k.log.Debug("no change a proxy sees", "service", key)
		}
		k.setPods(key, pods)
	}
}

// setPods records which pods back a service, so that a pod's change marks
// the services it backs.
func (k *Kube) setPods(svc string, pods []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.svcPods[svc] {
		if m := k.podSvcs[p]; m != nil {
			delete(m, svc)
			if len(m) == 0 {
				delete(k.podSvcs, p)
			}
		}
	}
	if len(pods) == 0 {
		delete(k.svcPods, svc)
		return
	}
	k.svcPods[svc] = pods
	for _, p := range pods {
		m := k.podSvcs[p]
		if m == nil {
			m = map[string]struct{}{}
			k.podSvcs[p] = m
		}
		m[svc] = struct{}{}
	}
}

// kubeView derives meshapi values from the informers' caches.
type kubeView struct {
	services    corelisters.ServiceLister
	slices      cache.Indexer
	pods        corelisters.PodLister
	trustDomain string
}

// derive returns the service key names, its serving endpoints and the pods
// behind its slices; a nil service when it does not exist.
func (v kubeView) derive(key string) (*meshapi.Service, []meshapi.Endpoint, []string) {
	ns, name, _ := strings.Cut(key, "/")
	s, err := v.services.Services(ns).Get(name)
	if err != nil {
		return nil, nil, nil
	}
	svc := serviceOf(s)
	objs, _ := v.slices.ByIndex(byService, key)
	slices := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl, ok := o.(*discoveryv1.EndpointSlice); ok {
			slices = append(slices, sl)
		}
	}
	eps, pods, opaque := v.endpointsOf(svc, slices)
	for i := range svc.Ports {
		if opaque[svc.Ports[i].Name] {
			svc.Ports[i].Protocol = meshapi.ProtocolOpaque
		}
	}
	return svc, eps, pods
}

// serviceOf maps a Service to what proxies see of it: TCP ports only
// (the mesh intercepts TCP), every ClusterIP family.
func serviceOf(s *corev1.Service) *meshapi.Service {
	svc := &meshapi.Service{Namespace: s.Namespace, Name: s.Name, Addresses: []string{}, Ports: []meshapi.ServicePort{}}
	for _, ip := range s.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone {
			svc.Addresses = append(svc.Addresses, ip)
		}
	}
	for _, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		sp := meshapi.ServicePort{Name: p.Name, Port: uint16(p.Port), Protocol: protocolOf(p.AppProtocol)}
		switch {
		case p.TargetPort.Type == intstr.String:
			// named: each endpoint says its number
		case p.TargetPort.IntVal == 0:
			sp.TargetPort = uint16(p.Port)
		default:
			sp.TargetPort = uint16(p.TargetPort.IntVal)
		}
		svc.Ports = append(svc.Ports, sp)
	}
	return svc
}

// protocolOf maps a port's appProtocol to the proxy's protocol; unknown
// values leave detection on.
func protocolOf(appProtocol *string) meshapi.Protocol {
	if appProtocol == nil {
		return meshapi.ProtocolDetect
	}
	switch strings.ToLower(*appProtocol) {
	case "kubernetes.io/h2c", "http2", "h2c":
		return meshapi.ProtocolHTTP2
	case "grpc":
		return meshapi.ProtocolGRPC
	case "http", "http1", "kubernetes.io/http":
		return meshapi.ProtocolHTTP1
	case "tcp", "opaque":
		return meshapi.ProtocolOpaque
	}
	return meshapi.ProtocolDetect
}

// endpointsOf merges the service's slices into its serving endpoints. It
// also returns the pods they name and the service ports (by name) that
// some pod declares opaque.
func (v kubeView) endpointsOf(svc *meshapi.Service, slices []*discoveryv1.EndpointSlice) ([]meshapi.Endpoint, []string, map[string]bool) {
	named := map[string]bool{} // service ports whose target port is named
	targets := map[string]uint16{}
	for _, p := range svc.Ports {
		if p.TargetPort == 0 {
			named[p.Name] = true
		} else {
			targets[p.Name] = p.TargetPort
		}
	}
	byAddr := map[string]*meshapi.Endpoint{}
	var pods []string
	opaque := map[string]bool{}
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		slicePorts := map[string]uint16{}
		for _, p := range sl.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			slicePorts[name] = uint16(*p.Port)
		}
		for _, e := range sl.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := e.Conditions.Serving == nil && ready || e.Conditions.Serving != nil && *e.Conditions.Serving
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			if !ready && !(serving && terminating) {
				continue
			}
			ep := meshapi.Endpoint{Address: e.Addresses[0], Terminating: !ready && terminating}
			if e.Zone != nil {
				ep.Zone = *e.Zone
			}
			for name := range named {
				if n, ok := slicePorts[name]; ok {
					if ep.Ports == nil {
						ep.Ports = map[string]uint16{}
					}
					ep.Ports[name] = n
				}
			}
			var podOpaque func(uint16) bool
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
				ep.Pod = Key(ref.Namespace, ref.Name)
				pods = append(pods, ep.Pod)
				if pod, err := v.pods.Pods(ref.Namespace).Get(ref.Name); err == nil {
					ep.Meshed = podstatus.RunsProxy(pod)
					sa := pod.Spec.ServiceAccountName
					if sa == "" {
						sa = "default"
					}
					ep.Identity = "spiffe://" + v.trustDomain + "/ns/" + pod.Namespace + "/sa/" + sa
					podOpaque = opaquePorts(pod)
				}
			}
			if podOpaque != nil {
				for name, port := range targets {
					if podOpaque(port) {
						opaque[name] = true
					}
				}
				for name, port := range ep.Ports {
					if podOpaque(port) {
						opaque[name] = true
					}
				}
			}
			if old := byAddr[ep.Address]; old != nil {
				// The same address in two slices, as while the slice
				// controller moves endpoints: the serving one wins, and
				// the ports of both are known.
				if old.Terminating && !ep.Terminating {
					old.Terminating, old.Zone = false, ep.Zone
				}
				for n, p := range ep.Ports {
					if old.Ports == nil {
						old.Ports = map[string]uint16{}
					}
					old.Ports[n] = p
				}
				continue
			}
			byAddr[ep.Address] = &ep
		}
	}
	eps := make([]meshapi.Endpoint, 0, len(byAddr))
	for _, ep := range byAddr {
		eps = append(eps, *ep)
	}
	SortEndpoints(eps)
	return eps, pods, opaque
}

// opaquePorts parses the pod's opaque-ports annotation: a comma-separated
// list of port numbers, ranges ("8000-8100") and container port names.
// Parts that are none of those are ignored. It returns nil when the pod has
// no such annotation.
func opaquePorts(p *corev1.Pod) func(uint16) bool {
	val, ok := p.Annotations[wellknown.AnnotationOpaquePorts]
	if !ok || strings.TrimSpace(val) == "" {
		return nil
	}
	type span struct{ lo, hi uint16 }
	var spans []span
	for part := range strings.SplitSeq(val, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, errA := strconv.ParseUint(lo, 10, 16)
		switch {
		case isRange:
			b, errB := strconv.ParseUint(hi, 10, 16)
			if errA == nil && errB == nil && a <= b {
				spans = append(spans, span{uint16(a), uint16(b)})
			}
		case errA == nil:
			spans = append(spans, span{uint16(a), uint16(a)})
		default:
			for _, c := range p.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == part {
						spans = append(spans, span{uint16(cp.ContainerPort), uint16(cp.ContainerPort)})
					}
				}
			}
		}
	}
	return func(port uint16) bool {
		for _, s := range spans {
			if s.lo <= port && port <= s.hi {
				return true
			}
		}
		return false
	}
}
