// Package meshconfig is the mesh-wide configuration: the MeshConfig custom
// resource that the chart installs (one object, named "mesh", in the
// control-plane namespace). The injector (`meshctl inject` and the admission
// webhook) takes its proxy defaults from it, and `meshctl check` verifies it.
// The CRD's OpenAPI schema in templates/ must accept exactly these fields.
package meshconfig

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Version is the API version of MeshConfig.
const Version = "v1alpha1"

// Kind and resource names of MeshConfig.
const (
	Kind     = "MeshConfig"
	Resource = "meshconfigs"
)

// GroupVersionResource locates MeshConfig objects for dynamic clients.
var GroupVersionResource = schema.GroupVersionResource{Group: wellknown.APIGroup, Version: Version, Resource: Resource}

// MeshConfig is the mesh-wide configuration object.
type MeshConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              Spec `json:"spec"`
}

// Spec is what an operator sets for the whole mesh, through the chart's values.
type Spec struct {
	// TrustDomain is the SPIFFE trust domain of workload identities:
	// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
	TrustDomain string `json:"trustDomain"`
	// Identity configures the certificates the controller issues to proxies.
	Identity Identity `json:"identity"`
	// Proxy holds the defaults of injected proxies; pod annotations override
	// them per workload.
	Proxy Proxy `json:"proxy"`
	// MTLS is the mesh-wide inbound mTLS mode, pushed to every proxy.
	MTLS MTLS `json:"mtls,omitzero"`
}

// MTLS is the mesh-wide inbound mutual TLS setting.
type MTLS struct {
	// Mode is MTLSPermissive (the default when empty: inbound ports accept
	// plaintext besides mesh TLS, for adoption) or MTLSStrict (they refuse
	// plaintext). A workload's own proxy configuration (inbound.mtls, and
	// per port inbound.strictMTLSPorts and inbound.permissiveMTLSPorts)
	// wins over it.
	Mode string `json:"mode,omitempty"`
}

// Modes of MTLS.Mode, the values of meshapi.MTLSMode.
const (
	MTLSPermissive = "permissive"
	MTLSStrict     = "strict"
)

// InboundMTLS is the mode in force: Mode, or permissive when it is empty.
func (m MTLS) InboundMTLS() string {
	if m.Mode == "" {
		return MTLSPermissive
	}
	return m.Mode
}

// Identity configures workload certificate issuance.
type Identity struct {
	// CertificateLifetime is the validity of a proxy's certificate, at
	// least MinCertificateLifetime. Proxies renew at about 70 % of it.
	CertificateLifetime metav1.Duration `json:"certificateLifetime"`
}

// MinCertificateLifetime is the shortest certificate lifetime accepted.
// Lifetimes of minutes are for rotation drills and tests: a proxy that
// cannot reach the controller for 30 % of the lifetime loses its
// identity. Istio and linkerd set no minimum; a minute keeps a renewal
// (about 42 s in) far from the controller's request rate limits.
const MinCertificateLifetime = time.Minute

// Proxy holds the defaults of every injected proxy.
type Proxy struct {
	// Image is the full image reference of meshproxy (repository:tag).
	Image string `json:"image"`
	// ImagePullPolicy of the injected containers.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// LogLevel is the proxy's initial log level: debug, info, warn or error.
	LogLevel string `json:"logLevel"`
	// Resources of the proxy container.
	Resources corev1.ResourceRequirements `json:"resources"`
	// UID is the user id the proxy runs as; the interception rules exclude it.
	UID int64 `json:"uid"`
	// Ports of the proxy's listeners.
	InboundPort  int32 `json:"inboundPort"`
	OutboundPort int32 `json:"outboundPort"`
	AdminPort    int32 `json:"adminPort"`
	// NativeSidecar runs the proxy as a native sidecar (an init container with
	// restartPolicy Always, Kubernetes 1.29 and later) instead of a container.
	NativeSidecar bool `json:"nativeSidecar,omitempty"`
}

// Default returns the configuration that the chart's default values produce,
// for the given proxy image. Offline injection uses it when no cluster is at
// hand.
func Default(proxyImage string) Spec {
	return Spec{
		TrustDomain: "cluster.local",
		Identity:    Identity{CertificateLifetime: metav1.Duration{Duration: 24 * time.Hour}},
		MTLS:        MTLS{Mode: MTLSPermissive},
		Proxy: Proxy{
			Image:           proxyImage,
			ImagePullPolicy: corev1.PullIfNotPresent,
			LogLevel:        "info",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("100m"),
					corev1.ResourceMemory: resource.MustParse("20Mi"),
				},
				Limits: corev1.ResourceList{
					corev1.ResourceMemory: resource.MustParse("250Mi"),
				},
			},
			UID:          wellknown.ProxyUID,
			InboundPort:  wellknown.ProxyInboundPort,
			OutboundPort: wellknown.ProxyOutboundPort,
			AdminPort:    wellknown.ProxyAdminPort,
		},
	}
}

// Validate reports the first field that no proxy could run with, naming it by
// its path in the object.
func (s Spec) Validate() error {
	switch {
	case s.TrustDomain == "":
		return fmt.Errorf("spec.trustDomain: must not be empty")
	case s.Identity.CertificateLifetime.Duration < MinCertificateLifetime:
		return fmt.Errorf("spec.identity.certificateLifetime: %s is shorter than the minimum of %s", s.Identity.CertificateLifetime.Duration, MinCertificateLifetime)
	case s.Proxy.Image == "":
		return fmt.Errorf("spec.proxy.image: must not be empty")
	case s.Proxy.UID <= 0:
		return fmt.Errorf("spec.proxy.uid: must be a positive user id, not %d", s.Proxy.UID)
	}
	for name, p := range map[string]int32{"inboundPort": s.Proxy.InboundPort, "outboundPort": s.Proxy.OutboundPort, "adminPort": s.Proxy.AdminPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("spec.proxy.%s: %d is not a port number", name, p)
		}
	}
	switch s.MTLS.Mode {
	case "", MTLSPermissive, MTLSStrict:
	default:
		return fmt.Errorf("spec.mtls.mode: %q is not one of %s, %s", s.MTLS.Mode, MTLSPermissive, MTLSStrict)
	}
	switch s.Proxy.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("spec.proxy.logLevel: %q is not one of debug, info, warn, error", s.Proxy.LogLevel)
	}
	return nil
}
