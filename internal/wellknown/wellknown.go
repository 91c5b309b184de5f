// Package wellknown holds the names the mesh owns and that more than one
// component must agree on: its domain prefix, labels, annotations, ports,
// user id and object names. docs/reference/names.md lists the same values for
// users; a change here is a change to a public interface.
package wellknown

// Domain is the one prefix of every label, annotation and API group the mesh
// owns.
const Domain = "meshctl.dev"

// APIGroup is the group of the mesh's custom resources.
const APIGroup = Domain

// Labels on every object the chart renders. Upgrade and uninstall find the
// mesh's objects, cluster-scoped ones included, by LabelControlPlaneNamespace.
const (
	// LabelControlPlaneNamespace names the namespace of the control plane that
	// owns the object. It is the ownership key of prune and uninstall.
	LabelControlPlaneNamespace = Domain + "/control-plane-ns"
	// LabelComponent names the part of the mesh the object belongs to.
	LabelComponent = Domain + "/component"
	// LabelVersion is the mesh version that rendered the object.
	LabelVersion = Domain + "/version"

	LabelK8sName      = "app.kubernetes.io/name"
	LabelK8sPartOf    = "app.kubernetes.io/part-of"
	LabelK8sManagedBy = "app.kubernetes.io/managed-by"
	LabelK8sVersion   = "app.kubernetes.io/version"
	LabelK8sComponent = "app.kubernetes.io/component"

	// PartOf is the value of app.kubernetes.io/part-of on the mesh's objects.
	PartOf = "meshctl"
)

// Injection: a namespace label, and the pod annotations that control and
// record injection.
const (
	// LabelInject on a namespace, or AnnotationInject on a pod template:
	// "enabled" or "disabled".
	LabelInject      = Domain + "/inject"
	AnnotationInject = Domain + "/inject"
	InjectEnabled    = "enabled"
	InjectDisabled   = "disabled"

	// AnnotationInjected records, as JSON, the version of the injection and
	// what it added, so that uninject and re-injection can remove exactly that.
	AnnotationInjected = Domain + "/injected"

	// AnnotationProxyConfig carries the proxy's bootstrap configuration in
	// the pod template; the downward API projects it into the proxy's
	// config file, so the configuration needs no object of its own.
	AnnotationProxyConfig = Domain + "/proxy-config"

	AnnotationProxyImage         = Domain + "/proxy-image"
	AnnotationProxyVersion       = Domain + "/proxy-version"
	AnnotationProxyCPURequest    = Domain + "/proxy-cpu-request"
	AnnotationProxyCPULimit      = Domain + "/proxy-cpu-limit"
	AnnotationProxyMemoryRequest = Domain + "/proxy-memory-request"
	AnnotationProxyMemoryLimit   = Domain + "/proxy-memory-limit"
	AnnotationProxyLogLevel      = Domain + "/proxy-log-level"
	AnnotationSkipInboundPorts   = Domain + "/skip-inbound-ports"
	AnnotationSkipOutboundPorts  = Domain + "/skip-outbound-ports"
	AnnotationSkipOutboundCIDRs  = Domain + "/skip-outbound-cidrs"
	AnnotationOpaquePorts        = Domain + "/opaque-ports"
	// AnnotationMTLSMode (permissive or strict) is the workload's inbound
	// mTLS mode, over the MeshConfig's; the port lists override it per
	// port.
	AnnotationMTLSMode            = Domain + "/mtls-mode"
	AnnotationStrictMTLSPorts     = Domain + "/strict-mtls-ports"
	AnnotationPermissiveMTLSPorts = Domain + "/permissive-mtls-ports"
)

// Ports of the proxy and the controller. The proxy's are container ports in
// every meshed pod, so they are chosen away from common application ports.
const (
	ProxyOutboundPort = 15100
	ProxyInboundPort  = 15101
	ProxyAdminPort    = 15190

	ControllerWebhookPort = 15143
	ControllerAdminPort   = 15191
	// ControllerMeshAPIPort serves identity issuance and the discovery
	// stream to proxies (internal/meshapi), over TLS.
	ControllerMeshAPIPort = 15112
)

// ProxyUID is the user id the proxy runs as. The interception rules exclude
// this user's traffic so that the proxy's own connections are not redirected
// back to itself.
const ProxyUID = 2710

// Container names the injector adds; other tools and checks recognise a meshed
// pod by them.
const (
	ProxyContainerName = "meshproxy"
	InitContainerName  = "meshproxy-init"
)

// IdentityTokenAudience is the audience of the projected ServiceAccount token
// that a proxy presents to the controller to obtain its certificate.
const IdentityTokenAudience = "identity." + Domain

// Object names in the control-plane namespace.
const (
	DefaultMeshNamespace = "meshctl-system"
	MeshConfigName       = "mesh"
	ControllerName       = "meshctl-controller"
	// ControllerServiceAccount is the controller's ServiceAccount; its
	// SPIFFE id is the identity the controller presents to proxies.
	ControllerServiceAccount = "meshctl-controller"
	IdentitySecretName       = "meshctl-identity-issuer"
	TrustAnchorsName         = "meshctl-identity-trust-anchors"
	WebhookSecretName        = "meshctl-webhook-tls"
	WebhookName              = "meshctl-proxy-injector"
	ValuesSecretName         = "meshctl-install-values"
	FieldManager             = "meshctl"
)

// ProxyImage is the image of meshproxy unless the chart's values say otherwise.
const ProxyImage = "ghcr.io/meshctl/meshproxy"

// KubernetesNamespaces are the namespaces Kubernetes creates for its own
// components. The mesh never injects their pods (the webhook's
// namespaceSelector in templates/ lists the same names) and never installs
// into them.
var KubernetesNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}
