package inject

import (
	"fmt"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Names and paths of what injection adds to a pod.
const (
	// IdentityVolumeName is the projected ServiceAccount token volume.
	IdentityVolumeName = "meshproxy-identity"
	// IdentityMountPath is where the proxy reads its identity token, in
	// the file "token".
	IdentityMountPath = "/var/run/secrets/" + wellknown.Domain + "/identity"
	// IdentityTokenSeconds is the lifetime of the projected token; the
	// kubelet refreshes it at 80 % of that.
	IdentityTokenSeconds = 3600
	// drainSeconds is how long a classic sidecar keeps serving after the pod
	// is asked to stop, so that the application can finish its own requests
	// through it before the proxy receives SIGTERM.
	drainSeconds = 5
	// waitReadyTimeout bounds the postStart hook that holds the application
	// until the proxy is ready.
	waitReadyTimeout = "120s"
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
// of the pod, and its postStart hook returns only once the proxy is ready:
// the kubelet starts containers in order and waits for each postStart hook,
// so the application starts after the proxy can carry its traffic. As a
// native sidecar, the startup probe does the same job: the kubelet starts the
// next container only once the sidecar's startup probe has succeeded.
func (p proxyConfig) proxyContainer() object {
	args := list{
		"run",
		"--log-level=" + p.logLevel,
		fmt.Sprintf("--inbound-port=%d", p.inbound),
		fmt.Sprintf("--outbound-port=%d", p.outbound),
		fmt.Sprintf("--admin-port=%d", p.admin),
		"--identity-token=" + IdentityMountPath + "/token",
	}
	if p.opaquePorts != "" {
		args = append(args, "--opaque-ports="+p.opaquePorts)
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
		lifecycle := object{{"postStart", object{{"exec", object{{"command", list{
			"meshproxy", "wait-ready",
			fmt.Sprintf("--admin-port=%d", p.admin),
			"--timeout=" + waitReadyTimeout,
		}}}}}}}
		// A pod whose grace period is shorter than the drain delay would be
		// killed during it; such a pod gets no delay.
		if p.terminationGrace < 0 || p.terminationGrace > drainSeconds {
			lifecycle = append(lifecycle, field{"preStop", object{{"sleep", object{{"seconds", drainSeconds}}}}})
		}
		c = append(c, field{"lifecycle", lifecycle})
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
			{"mountPath", IdentityMountPath},
			{"name", IdentityVolumeName},
			{"readOnly", true},
		}}},
	)
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

// identityVolume is the projected token the proxy presents to the
// controller; its audience is the mesh's, so it is useless to the API server
// and to anyone else.
func identityVolume() object {
	return object{
		{"name", IdentityVolumeName},
		{"projected", object{{"sources", list{object{{"serviceAccountToken", object{
			{"audience", wellknown.IdentityTokenAudience},
			{"expirationSeconds", IdentityTokenSeconds},
			{"path", "token"},
		}}}}}}},
	}
}
