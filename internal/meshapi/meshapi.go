// Package meshapi is the contract between the controller and the proxies:
// the wire types of identity issuance and of the discovery stream, their
// validation, and the Set a proxy holds. Both sides import it, so they
// cannot drift apart; it imports nothing outside the standard library and
// wellknown, because the sidecar links it.
//
// The API is HTTP/2 over TLS (see docs/meshapi.md for why not gRPC or xDS):
//
//   - POST PathCertificate: a CertificateRequest authenticated by a
//     projected ServiceAccount token ("Authorization: Bearer ...") gets a
//     CertificateResponse. The private key never leaves the proxy.
//   - POST PathDiscovery: one long-lived stream per proxy, authenticated by
//     the proxy's mesh certificate. The request body carries ClientMessages
//     (hello, subscriptions, ACK/NACK), the response body ServerMessages
//     (resources), each one JSON document on its own line.
//
// Resources are not specific to one proxy: each change is encoded once and
// the same bytes go to every subscriber. Every resource has a version of its
// own, so an endpoint change sends only that service's endpoints (or their
// delta), never the whole configuration.
package meshapi

import (
	"time"

	"github.com/meshctl/mesh/internal/wellknown"
)

// APIVersion is the version of every document in this package.
const APIVersion = "meshapi." + wellknown.Domain + "/v1"

// Paths of the controller's mesh API.
const (
	PathCertificate = "/meshapi/v1/certificate"
	PathDiscovery   = "/meshapi/v1/discovery"
)

// ContentType is the media type of both streams: JSON documents, one per
// line.
const ContentType = "application/x-ndjson"

// ALPN protocols of mesh TLS between two proxies. The client's proxy names
// the application protocol it detected, so the server's proxy skips
// detection.
const (
	ALPNHTTP2  = "meshctl.dev/h2"
	ALPNHTTP1  = "meshctl.dev/http1.1"
	ALPNOpaque = "meshctl.dev/opaque"
)

// CertificateRequest asks for a workload certificate.
type CertificateRequest struct {
	APIVersion string `json:"apiVersion"`
	// CSR is a PEM "CERTIFICATE REQUEST" whose only URI SAN is the SPIFFE
	// id of the ServiceAccount that the bearer token belongs to.
	CSR string `json:"csr"`
}

// CertificateResponse is the issued certificate.
type CertificateResponse struct {
	APIVersion string `json:"apiVersion"`
	// Identity is the SPIFFE id the certificate carries.
	Identity string `json:"identity"`
	// CertificateChain is PEM: the leaf, then the intermediates up to (not
	// including) a trust anchor.
	CertificateChain string `json:"certificateChain"`
	// Bundle is the trust bundle in force when the certificate was issued.
	Bundle Bundle `json:"bundle"`
	// NotAfter is the leaf's expiry.
	NotAfter time.Time `json:"notAfter"`
}

// Error is the body of every mesh API response that is not a success.
type Error struct {
	APIVersion string `json:"apiVersion"`
	Status     int    `json:"status"`
	// Reason is a stable word for metrics and scripts (see the Reason*
	// constants); Error is for people.
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// Reasons of refused certificate requests.
const (
	ReasonUnauthenticated = "unauthenticated" // no, expired or invalid token
	ReasonWrongAudience   = "wrong-audience"
	ReasonBadRequest      = "bad-request" // not JSON, not a CSR, bad signature
	ReasonWrongIdentity   = "wrong-identity"
	ReasonInternal        = "internal"
	// ReasonRateLimited: the requester's or the controller's rate, or the
	// requester's concurrency, is spent (429, with Retry-After).
	ReasonRateLimited = "rate-limited"
	// ReasonBusy: the controller has too many requests in hand (503, with
	// Retry-After).
	ReasonBusy = "busy"
)

// Kind names a kind of resource.
type Kind string

// The kinds of resource on the discovery stream.
const (
	// KindMesh is the mesh-wide settings; one resource, named "".
	KindMesh Kind = "Mesh"
	// KindBundle is the trust bundle; one resource, named "".
	KindBundle Kind = "Bundle"
	// KindService is a service's addresses and ports, named
	// "namespace/name".
	KindService Kind = "Service"
	// KindEndpoints is a service's endpoints, named like the service.
	KindEndpoints Kind = "Endpoints"
	// KindResolution answers a subscription by address, named by the
	// address ("10.96.0.12:80"): which service, if any, owns it.
	KindResolution Kind = "Resolution"
)

// ClientMessage is one line of the stream a proxy sends. Exactly one field
// is set.
type ClientMessage struct {
	Hello       *Hello        `json:"hello,omitempty"`
	Subscribe   *Subscription `json:"subscribe,omitempty"`
	Unsubscribe *Subscription `json:"unsubscribe,omitempty"`
	Ack         *Ack          `json:"ack,omitempty"`
}

// Hello opens a discovery stream. The controller trusts the identity of
// the client certificate, not these fields, which are for diagnosis.
type Hello struct {
	APIVersion   string `json:"apiVersion"`
	ProxyVersion string `json:"proxyVersion"`
	Namespace    string `json:"namespace,omitempty"`
	Pod          string `json:"pod,omitempty"`
}

// Subscription names what a proxy wants. The mesh settings and the bundle
// come to every proxy without asking.
type Subscription struct {
	// Services are "namespace/name"; a subscription to a service brings
	// its Service and Endpoints resources.
	Services []string `json:"services,omitempty"`
	// Addresses are virtual addresses ("10.96.0.12:80", "[fd00::1]:80")
	// that the proxy met and does not know: each gets a Resolution, and
	// the service it names is subscribed as if by name.
	Addresses []string `json:"addresses,omitempty"`
}

// Ack acknowledges one resource version. A non-empty Error makes it a
// NACK: the proxy could not apply that version and keeps the last one it
// could.
type Ack struct {
	Kind    Kind   `json:"kind"`
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Error   string `json:"error,omitempty"`
}

// ServerMessage is one line of the stream the controller sends: one
// version of one resource. Exactly one of the resource fields is set, or
// none when Removed is true.
type ServerMessage struct {
	Kind    Kind   `json:"kind"`
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	// Removed says the resource no longer exists.
	Removed bool `json:"removed,omitempty"`

	Mesh           *MeshSettings   `json:"mesh,omitempty"`
	Bundle         *Bundle         `json:"bundle,omitempty"`
	Service        *Service        `json:"service,omitempty"`
	Endpoints      *Endpoints      `json:"endpoints,omitempty"`
	EndpointsDelta *EndpointsDelta `json:"endpointsDelta,omitempty"`
	Resolution     *Resolution     `json:"resolution,omitempty"`
}

// MTLSMode says whether an inbound port accepts plaintext.
type MTLSMode string

const (
	// MTLSPermissive accepts mesh TLS and plaintext (the default, for
	// adoption).
	MTLSPermissive MTLSMode = "permissive"
	// MTLSStrict refuses plaintext connections.
	MTLSStrict MTLSMode = "strict"
)

// MeshSettings are the mesh-wide settings a proxy needs.
type MeshSettings struct {
	TrustDomain string `json:"trustDomain"`
	// InboundMTLS is the mesh-wide default; a workload's bootstrap may
	// override it per port.
	InboundMTLS MTLSMode `json:"inboundMTLS"`
	// PeerIdentityHeader, when set, is the request header in which the
	// inbound proxy passes the client's verified SPIFFE id to the
	// application (and which it strips from every request that did not
	// arrive over mesh TLS).
	PeerIdentityHeader string `json:"peerIdentityHeader,omitempty"`
}

// Bundle is the set of trust anchors. It can hold several, so that an
// anchor can be replaced without downtime: the new one is added, every
// issuer and certificate moves to it, then the old one is removed.
type Bundle struct {
	TrustDomain string `json:"trustDomain"`
	// Anchors are PEM "CERTIFICATE" blocks, one per anchor.
	Anchors []string `json:"anchors"`
}

// Protocol is the application protocol of a service port.
type Protocol string

const (
	// ProtocolDetect (the empty value) peeks at the first bytes.
	ProtocolDetect Protocol = ""
	ProtocolHTTP1  Protocol = "http1"
	ProtocolHTTP2  Protocol = "http2"
	ProtocolGRPC   Protocol = "grpc"
	// ProtocolOpaque forwards bytes without looking at them.
	ProtocolOpaque Protocol = "opaque"
)

// Service is a destination known by virtual address.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Addresses are the virtual IPs (Kubernetes ClusterIPs), IPv4 or IPv6.
	Addresses []string      `json:"addresses"`
	Ports     []ServicePort `json:"ports"`
}

// ServicePort maps a port of the virtual addresses to a port of the
// endpoints.
type ServicePort struct {
	// Name is the port's name; endpoints refer to it in Endpoint.Ports.
	Name string `json:"name,omitempty"`
	Port uint16 `json:"port"`
	// TargetPort is the endpoints' port when it is a number; zero when the
	// target port is named, and then each endpoint names its own number
	// in Endpoint.Ports.
	TargetPort uint16   `json:"targetPort,omitempty"`
	Protocol   Protocol `json:"protocol,omitempty"`
}

// Endpoints are all endpoints of one service.
type Endpoints struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// EndpointsDelta changes the endpoints of one service from version Base:
// Upsert adds or replaces endpoints by address, Remove removes addresses.
// A proxy that does not hold Base NACKs it and gets the whole set.
type EndpointsDelta struct {
	Base   uint64     `json:"base"`
	Upsert []Endpoint `json:"upsert,omitempty"`
	Remove []string   `json:"remove,omitempty"`
}

// Endpoint is one backend of a service. The controller sends only
// endpoints that serve (ready, or terminating and still serving).
type Endpoint struct {
	// Address is the endpoint's IP.
	Address string `json:"address"`
	// Ports maps a service port's Name to this endpoint's port, for ports
	// whose TargetPort is zero (named target ports).
	Ports map[string]uint16 `json:"ports,omitempty"`
	// Weight is the relative share of new requests; zero means 1.
	Weight uint32 `json:"weight,omitempty"`
	Zone   string `json:"zone,omitempty"`
	// Meshed says a proxy serves this endpoint: connections to it use mesh
	// TLS and the server must present Identity.
	Meshed   bool   `json:"meshed,omitempty"`
	Identity string `json:"identity,omitempty"`
	// Terminating endpoints are used only when no other endpoint serves.
	Terminating bool `json:"terminating,omitempty"`
	// Pod names the endpoint's pod, "namespace/name", for diagnosis.
	Pod string `json:"pod,omitempty"`
}

// Resolution says which service owns a virtual address; an empty Service
// says none does (a destination outside the mesh's services), which the
// proxy may cache until the resolution's next version.
type Resolution struct {
	Address string `json:"address"`
	Service string `json:"service,omitempty"`
}

// Bootstrap is how a proxy reaches the controller before it has a mesh
// certificate: injection writes it into the proxy's configuration file
// under "controller".
type Bootstrap struct {
	// Address is the mesh API's host:port, e.g.
	// "meshctl-controller.meshctl-system.svc:15112".
	Address string `json:"address"`
	// ServerIdentity is the SPIFFE id the controller must present.
	ServerIdentity string `json:"serverIdentity"`
	// TrustAnchors are the PEM anchors that the controller's certificate
	// chains to; the bundle pushed later replaces them for everything
	// else.
	TrustAnchors []string `json:"trustAnchors"`
	// TokenFile is the projected ServiceAccount token (audience
	// wellknown.IdentityTokenAudience), re-read for every certificate
	// request because the kubelet refreshes it.
	TokenFile string `json:"tokenFile"`
}
