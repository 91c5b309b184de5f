package check

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshctl/mesh/internal/inject"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/podstatus"
	"github.com/meshctl/mesh/internal/proxyinit"
	"github.com/meshctl/mesh/internal/wellknown"
)

// CategoryDataPlane holds the checks of the workloads the mesh serves.
const CategoryDataPlane = "data-plane"

// maxNamedPods bounds how many pods a data-plane error lists.
const maxNamedPods = 20

func dataPlane() Category {
	return Category{ID: CategoryDataPlane, Checks: []Check{{
		Description: "pods in injection-enabled namespaces run the proxy",
		Hint:        "dp-uninjected-pods",
		Severity:    Warning,
		Run:         checkUninjectedPods,
	}, {
		Description: "meshed pods trust every current trust anchor",
		Hint:        "dp-trust-anchors",
		Severity:    Warning,
		Run:         checkPodTrustAnchors,
	}, {
		Description: "the kubelet's probes reach meshed pods",
		Hint:        "dp-strict-probes",
		Severity:    Warning,
		Run:         checkStrictProbes,
	}}}
}

// checkUninjectedPods finds running pods that the webhook should have given
// a proxy and did not: created while the controller was down or before the
// namespace was labelled, with failure policy Ignore. One list of
// namespaces by label, one list of pods per such namespace.
func checkUninjectedPods(ctx context.Context, s *State) error {
	if err := s.clients(); err != nil {
		return err
	}
	nsList, err := s.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: wellknown.LabelInject + "=" + wellknown.InjectEnabled})
	if err != nil {
		return fmt.Errorf("listing the namespaces labelled %s=%s: %w", wellknown.LabelInject, wellknown.InjectEnabled, err)
	}
	var missing []string
	restarts := map[string]bool{}
	for _, ns := range nsList.Items {
		if ns.Name == s.cfg.Namespace || skippedNamespace(ns.Name) {
			continue
		}
		if s.cfg.WorkloadNamespace != "" && ns.Name != s.cfg.WorkloadNamespace {
			continue
		}
		pods, err := s.kube.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing the pods of namespace %s: %w", ns.Name, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if !shouldRunProxy(p) || podstatus.RunsProxy(p) {
				continue
			}
			missing = append(missing, p.Namespace+"/"+p.Name)
			restarts[restartCommand(p)] = true
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return podsError(fmt.Sprintf("%s in namespaces labelled %s=%s run without the proxy (created while the injector was unreachable, or before the label was set)",
		plural(len(missing), "pod", "pods"), wellknown.LabelInject, wellknown.InjectEnabled),
		missing, "restart their workloads so that the injector sees them again", restarts)
}

// plural is n with the noun that agrees with it.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// podsError is a data-plane warning: what is wrong, the pods it is wrong
// with, and the commands that fix it, each list bounded by maxNamedPods.
func podsError(what string, pods []string, fix string, restarts map[string]bool) error {
	sort.Strings(pods)
	var b strings.Builder
	b.WriteString(what + ":")
	for i, name := range pods {
		if i == maxNamedPods {
			fmt.Fprintf(&b, "\n  ... and %d more", len(pods)-i)
			break
		}
		b.WriteString("\n  pod " + name)
	}
	b.WriteString("\n" + fix)
	if len(restarts) == 0 {
		return fmt.Errorf("%s", b.String())
	}
	b.WriteString(":")
	cmds := make([]string, 0, len(restarts))
	for c := range restarts {
		cmds = append(cmds, c)
	}
	sort.Strings(cmds)
	for i, c := range cmds {
		if i == maxNamedPods {
			fmt.Fprintf(&b, "\n  ... and %d more", len(cmds)-i)
			break
		}
		b.WriteString("\n  " + c)
	}
	return fmt.Errorf("%s", b.String())
}

// checkPodTrustAnchors finds running meshed pods whose proxy bootstrap
// (written at injection) lacks one of the current trust anchors: injected
// before a rotation added it, such a proxy keeps working until it
// restarts, and then cannot verify a controller whose certificate chains
// to that anchor.
func checkPodTrustAnchors(ctx context.Context, s *State) error {
	if err := s.clients(); err != nil {
		return err
	}
	if s.anchors == nil {
		if err := checkTrustAnchors(ctx, s); err != nil {
			return err
		}
	}
	pods, err := s.podsOfWorkloads(ctx)
	if err != nil {
		return err
	}
	var stale []string
	restarts := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !podstatus.RunsProxy(p) {
			continue
		}
		trusted, ok := bootstrapAnchors(p)
		if !ok || !slices.ContainsFunc(s.anchors, func(a *x509.Certificate) bool {
			return !slices.ContainsFunc(trusted, a.Equal)
		}) {
			continue
		}
		stale = append(stale, p.Namespace+"/"+p.Name)
		restarts[restartCommand(p)] = true
	}
	if len(stale) == 0 {
		return nil
	}
	return podsError(plural(len(stale), "meshed pod lacks", "meshed pods lack")+" a current trust anchor (injected before it was added): "+
		"once the issuer chains to it, their proxies cannot verify the controller after a restart",
		stale, "restart their workloads so that they are injected with the current anchors", restarts)
}

// checkStrictProbes finds running meshed pods with an HTTP, TCP or gRPC
// probe on a port that refuses plaintext: the kubelet probes from the
// node, in plaintext, so such a pod is never Ready (or is restarted).
func checkStrictProbes(ctx context.Context, s *State) error {
	mc, err := s.meshConfig(ctx)
	if err != nil {
		return err
	}
	pods, err := s.podsOfWorkloads(ctx)
	if err != nil {
		return err
	}
	var refused []string
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !podstatus.RunsProxy(p) {
			continue
		}
		in, ok := inboundOf(p)
		if !ok {
			continue
		}
		skipped, _ := proxyinit.ParsePorts([]string{p.Annotations[wellknown.AnnotationSkipInboundPorts]})
		for _, pr := range probedPorts(p) {
			if !inRanges(skipped, pr.port) && in.strict(pr.port, mc.Spec.MTLS.Mode) {
				refused = append(refused, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, pr.what))
			}
		}
	}
	if len(refused) == 0 {
		return nil
	}
	return podsError(plural(len(refused), "probe of a meshed pod goes", "probes of meshed pods go")+
		" to a port that refuses plaintext (strict mTLS); the kubelet probes in plaintext, so they fail",
		refused, "list each probed port in the pod template's annotation "+wellknown.AnnotationPermissiveMTLSPorts+", or probe a port that serves nothing else", nil)
}

// inRanges reports whether port is in one of the ranges: a port whose
// connections bypass the proxy (skip-inbound-ports) is not refused.
func inRanges(ranges []proxyinit.PortRange, port int) bool {
	return slices.ContainsFunc(ranges, func(r proxyinit.PortRange) bool { return int(r.First) <= port && port <= int(r.Last) })
}

// bootstrapInbound is the inbound mTLS part of a pod's proxy bootstrap.
type bootstrapInbound struct {
	MTLS                string `json:"mtls"`
	StrictMTLSPorts     []int  `json:"strictMTLSPorts"`
	PermissiveMTLSPorts []int  `json:"permissiveMTLSPorts"`
}

// strict reports whether port refuses plaintext under the mesh-wide mode,
// with the proxy's precedence: the port lists, the workload's mode, the
// mesh's.
func (b bootstrapInbound) strict(port int, meshMode string) bool {
	switch {
	case slices.Contains(b.StrictMTLSPorts, port):
		return true
	case slices.Contains(b.PermissiveMTLSPorts, port):
		return false
	case b.MTLS != "":
		return b.MTLS == meshconfig.MTLSStrict
	}
	return meshMode == meshconfig.MTLSStrict
}

// inboundOf reads the inbound part of a pod's proxy bootstrap; ok is
// false when the pod has none that parses.
func inboundOf(p *corev1.Pod) (in bootstrapInbound, ok bool) {
	var cfg struct {
		Inbound bootstrapInbound `json:"inbound"`
	}
	raw, found := p.Annotations[wellknown.AnnotationProxyConfig]
	if !found || json.Unmarshal([]byte(raw), &cfg) != nil {
		return bootstrapInbound{}, false
	}
	return cfg.Inbound, true
}

type probedPort struct {
	port int
	what string // e.g. "container web, readiness probe, port 8080"
}

// probedPorts lists the ports the kubelet probes in the application's
// containers, named ports resolved.
func probedPorts(p *corev1.Pod) []probedPort {
	var out []probedPort
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == wellknown.ProxyContainerName {
			continue
		}
		for _, pr := range []struct {
			kind  string
			probe *corev1.Probe
		}{{"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}, {"startup", c.StartupProbe}} {
			if pr.probe == nil {
				continue
			}
			var port intstr.IntOrString
			switch h := pr.probe.ProbeHandler; {
			case h.HTTPGet != nil:
				port = h.HTTPGet.Port
			case h.TCPSocket != nil:
				port = h.TCPSocket.Port
			case h.GRPC != nil:
				port = intstr.FromInt32(h.GRPC.Port)
			default:
				continue
			}
			n := port.IntValue()
			if port.Type == intstr.String {
				n = 0
				for _, cp := range c.Ports {
					if cp.Name == port.StrVal {
						n = int(cp.ContainerPort)
					}
				}
			}
			if n > 0 {
				out = append(out, probedPort{n, fmt.Sprintf("container %s, %s probe, port %d", c.Name, pr.kind, n)})
			}
		}
	}
	return out
}

// bootstrapAnchors returns the trust anchors of a pod's proxy bootstrap;
// ok is false when the pod carries no bootstrap with a controller (an
// injection of a version without identity) or one that does not parse.
func bootstrapAnchors(p *corev1.Pod) (anchors []*x509.Certificate, ok bool) {
	var cfg struct {
		Controller *meshapi.Bootstrap `json:"controller"`
	}
	raw, found := p.Annotations[wellknown.AnnotationProxyConfig]
	if !found || json.Unmarshal([]byte(raw), &cfg) != nil || cfg.Controller == nil {
		return nil, false
	}
	anchors, err := pki.ParseCertificates([]byte(strings.Join(cfg.Controller.TrustAnchors, "\n")))
	return anchors, err == nil
}

// skippedNamespace: the webhook's namespaceSelector never sends pods of
// Kubernetes' own namespaces.
func skippedNamespace(ns string) bool {
	return slices.Contains(wellknown.KubernetesNamespaces, ns)
}

// shouldRunProxy reports whether the webhook would inject p: a pod that is
// not finished, not opted out, not on the host's network, and not in
// another mesh (the injector leaves those alone on purpose).
func shouldRunProxy(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	if p.Spec.HostNetwork || p.Annotations[wellknown.AnnotationInject] == wellknown.InjectDisabled {
		return false
	}
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for _, c := range cs {
			if inject.OtherMesh(c.Name) != "" {
				return false
			}
		}
	}
	return true
}

// restartCommand is how to recreate p so that the webhook injects it: a
// rollout restart of its workload, or deleting a pod nothing recreates.
func restartCommand(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		switch o.Kind {
		case "ReplicaSet":
			if hash := p.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(o.Name, "-"+hash) {
				return "kubectl rollout restart -n " + p.Namespace + " deployment/" + strings.TrimSuffix(o.Name, "-"+hash)
			}
			return "kubectl delete pod -n " + p.Namespace + " " + p.Name + "  # owned by ReplicaSet " + o.Name
		case "StatefulSet", "DaemonSet":
			return "kubectl rollout restart -n " + p.Namespace + " " + strings.ToLower(o.Kind) + "/" + o.Name
		default:
			return "kubectl delete pod -n " + p.Namespace + " " + p.Name + "  # " + o.Kind + " " + o.Name + " recreates it"
		}
	}
	return "kubectl delete pod -n " + p.Namespace + " " + p.Name + "  # then create it again: no controller recreates it"
}
