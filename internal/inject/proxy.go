package inject

import (
	"fmt"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Names and paths of what injection adds to a pod.
const (
	// VolumeName is the projected volume of the proxy's files: its
	// identity token and its bootstrap configuration.
	VolumeName = "meshproxy"
	// MountPath is where the proxy finds them.
	MountPath = "/var/run/secrets/" + wellknown.Domain + "/proxy"
	// TokenFile is the ServiceAccount token, audience
	// wellknown.IdentityTokenAudience, that the proxy presents to the
	// controller for its certificate.
	TokenFile = "token"
	// ConfigFile is the bootstrap configuration of `meshproxy run`.
	ConfigFile = "config.json"
	// IdentityTokenSeconds is the lifetime of the projected token; the
	// kubelet refreshes it at 80 % of that.
	IdentityTokenSeconds = 3600
	// ProxyBinary is where the image (Dockerfile) installs meshproxy.
	ProxyBinary = "/usr/local/bin/meshproxy"

	// defaultGrace is Kubernetes' terminationGracePeriodSeconds default.
	defaultGrace = 30
	// maxDrainDelay bounds how long a classic sidecar keeps accepting after
	// SIGTERM, so that the application, stopped at the same moment, can
	// still open connections through it while it finishes its own work.
	maxDrainDelay = 5
	// waitReadyTimeout bounds how long the postStart hook holds the
	// application back; past it the application starts anyway, and the
	// proxy's own probes report the problem.
	waitReadyTimeout = 120
)

// initContainer is the `meshproxy init` step: root with NET_ADMIN and
// NET_RAW, which iptables needs, and nothing else.
func (p proxyConfig) initContainer() object {
	args := list{
		"init",
		fmt.Sprintf("--inbound-port=%d", p.inbound),
		fmt.Sprintf("--outbound-port=%d", p.outbound),
		fmt.Sprintf("--proxy-uid=%d", p.uid),
		fmt.Sprintf("--admin-port=%d", p.admin),
	}
	if p.skipInboundPorts != "" {
		args = append(args, "--skip-inbound-ports="+p.skipInboundPorts)
	}
	if p.skipOutboundPorts != "" {
		args = append(args, "--skip-outbound-ports="+p.skipOutboundPorts)
	}
	if p.skipOutboundCIDRs != "" {
		args = append(args, "--skip-outbound-cidrs="+p.skipOutboundCIDRs)
	}
	c := object{
		{"name", wellknown.InitContainerName},
		{"image", p.image},
	}
	if p.pullPolicy != "" {
		c = append(c, field{"imagePullPolicy", p.pullPolicy})
	}
	return append(c,
		field{"args", args},
		field{"resources", object{
			{"limits", object{{"memory", "64Mi"}}},
			{"requests", object{{"cpu", "10m"}, {"memory", "16Mi"}}},
		}},
		field{"securityContext", object{
			{"allowPrivilegeEscalation", false},
			{"capabilities", object{
				{"add", list{"NET_ADMIN", "NET_RAW"}},
				{"drop", list{"ALL"}},
			}},
			{"readOnlyRootFilesystem", true},
			{"runAsNonRoot", false},
			{"runAsUser", 0},
		}},
		field{"terminationMessagePolicy", "FallbackToLogsOnError"},
	)
}

// proxyContainer is `meshproxy run`. As a classic container it is the first
// of the pod, so the kubelet starts it first; as a native sidecar its startup
// probe holds the pod's other containers until the proxy is ready (the
// kubelet starts the next container only once a sidecar's startup probe has
// succeeded).
//
// Draining follows the pod's grace period: on SIGTERM the proxy keeps
// accepting for a drain delay (classic containers only: the application is
// stopped at the same moment and may still call out while it finishes; a
// native sidecar is stopped after the application has exited), then lets
// in-flight requests finish within what remains of the grace period.
func (p proxyConfig) proxyContainer() object {
	grace := p.terminationGrace
	if grace < 0 {
		grace = defaultGrace
	}
	delay := int64(0)
	if !p.native {
		delay = min(maxDrainDelay, grace/4)
	}
	timeout := max(grace-delay-1, 1)
	args := list{
		"run",
		"--config=" + MountPath + "/" + ConfigFile,
		fmt.Sprintf("--admin-address=:%d", p.admin),
		"--log-level=" + p.logLevel,
		fmt.Sprintf("--drain-delay=%ds", delay),
		fmt.Sprintf("--drain-timeout=%ds", timeout),
	}
	c := object{
		{"name", wellknown.ProxyContainerName},
		{"image", p.image},
	}
	if p.pullPolicy != "" {
		c = append(c, field{"imagePullPolicy", p.pullPolicy})
	}
	c = append(c,
		field{"args", args},
		field{"env", list{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("POD_IP", "status.podIP"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		}},
		field{"ports", list{
			object{{"name", "meshproxy-in"}, {"containerPort", int(p.inbound)}, {"protocol", "TCP"}},
			object{{"name", "meshproxy-admin"}, {"containerPort", int(p.admin)}, {"protocol", "TCP"}},
		}},
	)
	res := object{}
	if len(p.limits) > 0 {
		res = append(res, field{"limits", p.limits})
	}
	if len(p.requests) > 0 {
		res = append(res, field{"requests", p.requests})
	}
	c = append(c, field{"resources", res})
	if p.native {
		c = append(c,
			field{"restartPolicy", "Always"},
			field{"startupProbe", p.probe("/ready", 1, 300)},
		)
	} else {
		// The kubelet starts the next container only when this hook has
		// returned, so the application, after the proxy, starts once the
		// proxy is ready (a native sidecar's startup probe does the same).
		c = append(c, field{"lifecycle", object{{"postStart", object{{"exec", object{{"command", list{
			ProxyBinary, "wait-ready", fmt.Sprintf("--admin-port=%d", p.admin), fmt.Sprintf("--timeout=%ds", waitReadyTimeout),
		}}}}}}}})
	}
	return append(c,
		field{"readinessProbe", p.probe("/ready", 2, 3)},
		field{"livenessProbe", p.probe("/live", 10, 3)},
		field{"securityContext", object{
			{"allowPrivilegeEscalation", false},
			{"capabilities", object{{"drop", list{"ALL"}}}},
			{"readOnlyRootFilesystem", true},
			{"runAsGroup", p.uid},
			{"runAsNonRoot", true},
			{"runAsUser", p.uid},
		}},
		field{"terminationMessagePolicy", "FallbackToLogsOnError"},
		field{"volumeMounts", list{object{
			{"mountPath", MountPath},
			{"name", VolumeName},
			{"readOnly", true},
		}}},
	)
}

// bootstrapConfig is the configuration file of `meshproxy run` (see
// docs/proxy.md): the listeners on the mesh's ports, the opaque ports, and
// how to reach the controller for an identity (meshapi.Bootstrap).
// Services and endpoints are the controller's to push.
func (p proxyConfig) bootstrapConfig() string {
	in := object{{"address", fmt.Sprintf(":%d", p.inbound)}}
	out := object{{"address", fmt.Sprintf(":%d", p.outbound)}}
	if len(p.opaque) > 0 {
		in = append(in, field{"opaquePorts", portsList(p.opaque)})
		out = append(out, field{"opaquePorts", portsList(p.opaque)})
	}
	if p.mtls != "" {
		in = append(in, field{"mtls", p.mtls})
	}
	if len(p.strictMTLS) > 0 {
		in = append(in, field{"strictMTLSPorts", portsList(p.strictMTLS)})
	}
	if len(p.permissiveMTLS) > 0 {
		in = append(in, field{"permissiveMTLSPorts", portsList(p.permissiveMTLS)})
	}
	return flowText(object{
		{"version", "bootstrap"},
		{"inbound", in},
		{"outbound", out},
		{"controller", bootstrapObject(p.controller)},
	})
}

func portsList(ports []int) list {
	l := make(list, len(ports))
	for i, n := range ports {
		l[i] = n
	}
	return l
}

func (p proxyConfig) probe(path string, period, failures int) object {
	return object{
		{"httpGet", object{{"path", path}, {"port", int(p.admin)}}},
		{"periodSeconds", period},
		{"failureThreshold", failures},
	}
}

func fieldEnv(name, path string) object {
	return object{
		{"name", name},
		{"valueFrom", object{{"fieldRef", object{{"fieldPath", path}}}}},
	}
}

// volume holds the proxy's token, whose audience is the mesh's so that it
// is useless to the API server and to anyone else, and its configuration.
func volume() object {
	return object{
		{"name", VolumeName},
		{"projected", object{{"sources", list{
			object{{"serviceAccountToken", object{
				{"audience", wellknown.IdentityTokenAudience},
				{"expirationSeconds", IdentityTokenSeconds},
				{"path", TokenFile},
			}}},
			object{{"downwardAPI", object{{"items", list{object{
				{"path", ConfigFile},
				{"fieldRef", object{{"fieldPath", "metadata.annotations['" + wellknown.AnnotationProxyConfig + "']"}}},
			}}}}}},
		}}}},
	}
}
