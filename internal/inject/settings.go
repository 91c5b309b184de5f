package inject

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/proxyinit"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Settings are the mesh-wide inputs of injection. Per-workload annotations
// override the proxy defaults for one pod template.
type Settings struct {
	// Proxy holds the defaults of the injected proxy, from the MeshConfig.
	Proxy meshconfig.Proxy
	// MeshNamespace is the control plane's namespace; workloads in it are
	// never injected.
	MeshNamespace string
	// Version is the mesh version recorded in the status annotation, so
	// that output of another version is recognised and re-injected.
	Version string
	// NativeSidecar runs the proxy as an init container with
	// restartPolicy Always (Kubernetes 1.29 and later). The caller checks
	// that the cluster supports it.
	NativeSidecar bool
	// Namespaces maps namespace names to the value of their
	// meshctl.dev/inject label, for namespaces known from outside the
	// stream. Namespace documents in the stream are added to it.
	Namespaces map[string]string
	// KubernetesVersion is the cluster's version ("v1.33.1"), empty when
	// unknown. It decides how Job pods get the proxy: as a native sidecar,
	// which the kubelet stops when the Job's containers are done, where the
	// cluster has them (1.29 and later), and as a classic one, which never
	// exits and keeps the Job from completing, with a warning, where not.
	// Unknown counts as new enough, with a warning.
	KubernetesVersion string
	// TrustDomain is the mesh's SPIFFE trust domain, from the MeshConfig;
	// it names the identity the controller presents to proxies.
	TrustDomain string
	// TrustAnchors are the mesh's trust anchors, one PEM certificate
	// each (see ParseTrustAnchors), from the trust-anchors ConfigMap.
	// Injecting a workload without them is an error: its proxy could never
	// obtain an identity.
	TrustAnchors []string

	// controller is built once per stream from the fields above.
	controller    *meshapi.Bootstrap
	controllerErr error
}

// NewSettings returns the settings of a mesh whose configuration is spec.
func NewSettings(spec meshconfig.Spec, meshNamespace, version string) Settings {
	return Settings{
		Proxy:         spec.Proxy,
		MeshNamespace: meshNamespace,
		Version:       version,
		NativeSidecar: spec.Proxy.NativeSidecar,
		TrustDomain:   spec.TrustDomain,
	}
}

// proxyConfig is the proxy of one workload: the mesh's defaults with the
// workload's annotations applied, values as they are written into the pod.
type proxyConfig struct {
	image             string
	pullPolicy        string
	logLevel          string
	uid               int64
	inbound           int32
	outbound          int32
	admin             int32
	requests, limits  object
	skipInboundPorts  string
	skipOutboundPorts string
	skipOutboundCIDRs string
	// opaque, strictMTLS and permissiveMTLS list ports one by one, as the
	// proxy's configuration wants them.
	opaque, strictMTLS, permissiveMTLS []int
	// mtls is the workload's inbound mTLS mode; empty: the mesh's.
	mtls   string
	native bool
	// terminationGrace is the pod's terminationGracePeriodSeconds, -1 when
	// unset.
	terminationGrace int64
	// controller is the same for every workload of a stream; a pointer, so
	// that the cache keys made from the configuration stay short.
	controller *meshapi.Bootstrap
}

// configure applies a pod template's annotations to the settings. An
// invalid annotation value is an error: a pod that cannot start is worse than
// a manifest that cannot be injected.
func (s *Settings) configure(ann map[string]string) (proxyConfig, error) {
	if s.controller == nil && s.controllerErr == nil {
		s.controller, s.controllerErr = s.controllerBootstrap()
	}
	if s.controllerErr != nil {
		return proxyConfig{}, s.controllerErr
	}
	p := proxyConfig{
		controller: s.controller,
		image:      s.Proxy.Image,
		pullPolicy: string(s.Proxy.ImagePullPolicy),
		logLevel:   s.Proxy.LogLevel,
		uid:        s.Proxy.UID,
		inbound:    s.Proxy.InboundPort,
		outbound:   s.Proxy.OutboundPort,
		admin:      s.Proxy.AdminPort,
		native:     s.NativeSidecar,
	}
	if p.logLevel == "" {
		p.logLevel = "info"
	}
	if p.uid == 0 {
		p.uid = wellknown.ProxyUID
	}
	if p.inbound == 0 {
		p.inbound = wellknown.ProxyInboundPort
	}
	if p.outbound == 0 {
		p.outbound = wellknown.ProxyOutboundPort
	}
	if p.admin == 0 {
		p.admin = wellknown.ProxyAdminPort
	}
	if v, ok := ann[wellknown.AnnotationProxyImage]; ok {
		p.image = strings.TrimSpace(v)
	}
	if v, ok := ann[wellknown.AnnotationProxyVersion]; ok {
		p.image = withTag(p.image, strings.TrimSpace(v))
	}
	if p.image == "" {
		return p, fmt.Errorf("no proxy image: set %s or the mesh's proxy image", wellknown.AnnotationProxyImage)
	}
	if v, ok := ann[wellknown.AnnotationProxyLogLevel]; ok {
		p.logLevel = strings.TrimSpace(v)
	}
	switch p.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return p, fmt.Errorf("%s: %q is not one of debug, info, warn, error", wellknown.AnnotationProxyLogLevel, p.logLevel)
	}

	requests := quantities(s.Proxy.Resources.Requests)
	limits := quantities(s.Proxy.Resources.Limits)
	for _, o := range []struct {
		annotation string
		into       map[string]string
		name       string
	}{
		{wellknown.AnnotationProxyCPURequest, requests, "cpu"},
		{wellknown.AnnotationProxyMemoryRequest, requests, "memory"},
		{wellknown.AnnotationProxyCPULimit, limits, "cpu"},
		{wellknown.AnnotationProxyMemoryLimit, limits, "memory"},
	} {
		v, ok := ann[o.annotation]
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if _, err := resource.ParseQuantity(v); err != nil {
			return p, fmt.Errorf("%s: %q is not a quantity: %w", o.annotation, v, err)
		}
		o.into[o.name] = v
	}
	p.requests, p.limits = sortedObject(requests), sortedObject(limits)

	for _, o := range []struct {
		annotation string
		into       *string
		parse      func([]string) error
	}{
		{wellknown.AnnotationSkipInboundPorts, &p.skipInboundPorts, parsePorts},
		{wellknown.AnnotationSkipOutboundPorts, &p.skipOutboundPorts, parsePorts},
		{wellknown.AnnotationSkipOutboundCIDRs, &p.skipOutboundCIDRs, parseCIDRs},
	} {
		v, ok := ann[o.annotation]
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		if err := o.parse([]string{v}); err != nil {
			return p, fmt.Errorf("%s: %w", o.annotation, err)
		}
		*o.into = v
	}
	for _, o := range []struct {
		annotation string
		into       *[]int
	}{
		{wellknown.AnnotationOpaquePorts, &p.opaque},
		{wellknown.AnnotationStrictMTLSPorts, &p.strictMTLS},
		{wellknown.AnnotationPermissiveMTLSPorts, &p.permissiveMTLS},
	} {
		ports, err := portList(ann, o.annotation)
		if err != nil {
			return p, err
		}
		*o.into = ports
	}
	for _, n := range p.strictMTLS {
		if slices.Contains(p.permissiveMTLS, n) {
			return p, fmt.Errorf("%s and %s both list port %d", wellknown.AnnotationStrictMTLSPorts, wellknown.AnnotationPermissiveMTLSPorts, n)
		}
	}
	switch v := strings.TrimSpace(ann[wellknown.AnnotationMTLSMode]); v {
	case "", "permissive", "strict":
		p.mtls = v
	default:
		return p, fmt.Errorf("%s: %q is neither permissive nor strict", wellknown.AnnotationMTLSMode, v)
	}
	return p, nil
}

// maxListedPorts bounds each list of ports of one pod: the proxy's
// configuration lists them one by one, and it travels in an annotation.
const maxListedPorts = 1024

// portList reads an annotation of ports and ranges into the ports one by
// one; none when the annotation is absent or blank.
func portList(ann map[string]string, annotation string) ([]int, error) {
	v, ok := ann[annotation]
	if !ok || strings.TrimSpace(v) == "" {
		return nil, nil
	}
	ranges, err := proxyinit.ParsePorts([]string{v})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", annotation, err)
	}
	var ports []int
	for _, r := range ranges {
		if len(ports)+int(r.Last-r.First) >= maxListedPorts {
			return nil, fmt.Errorf("%s: more than %d ports", annotation, maxListedPorts)
		}
		for n := int(r.First); n <= int(r.Last); n++ {
			ports = append(ports, n)
		}
	}
	return ports, nil
}

func parsePorts(v []string) error { _, err := proxyinit.ParsePorts(v); return err }
func parseCIDRs(v []string) error { _, err := proxyinit.ParseCIDRs(v); return err }

// withTag replaces the tag (or digest) of an image reference.
func withTag(image, tag string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image + ":" + tag
}

func quantities(l corev1.ResourceList) map[string]string {
	m := make(map[string]string, len(l))
	for k, q := range l {
		m[string(k)] = q.String()
	}
	return m
}

func sortedObject(m map[string]string) object {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	o := make(object, 0, len(keys))
	for _, k := range keys {
		o = append(o, field{k, m[k]})
	}
	return o
}
