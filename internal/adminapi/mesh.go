package adminapi

import "time"

// Identity is the proxy's mesh identity as GET /identity returns it:
// metadata about the certificate and its renewal, never key material.
type Identity struct {
	APIVersion string `json:"apiVersion"`
	// Identity is the workload's SPIFFE id.
	Identity string `json:"identity"`
	// Ready is true while a certificate valid now is held.
	Ready bool `json:"ready"`
	// SerialNumber, NotBefore and NotAfter describe the certificate held;
	// zero before the first issuance.
	SerialNumber string    `json:"serialNumber,omitempty"`
	NotBefore    time.Time `json:"notBefore,omitzero"`
	NotAfter     time.Time `json:"notAfter,omitzero"`
	// IssuerKeyID is the certificate's authority key id in hex: the
	// subject key id of the issuer that signed it, which tells an old
	// issuer from a new one during a rotation (both have the same name).
	IssuerKeyID string `json:"issuerKeyID,omitempty"`
	// RenewAt is when the next renewal is planned (or the next retry after
	// a failure).
	RenewAt time.Time `json:"renewAt,omitzero"`
	// LastRenewal is when a certificate was last obtained.
	LastRenewal time.Time `json:"lastRenewal,omitzero"`
	// ConsecutiveFailures counts the failed requests since the last success;
	// LastError is the last one's message.
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	LastError           string `json:"lastError,omitempty"`
	// RenewalsTotal counts certificates obtained, the first one included;
	// FailuresTotal counts failed requests by reason.
	RenewalsTotal uint64            `json:"renewalsTotal"`
	FailuresTotal map[string]uint64 `json:"failuresTotal,omitempty"`
	// Trust is the bundle in force.
	Trust Trust `json:"trust"`
}

// Trust describes the trust bundle a proxy verifies peers against.
type Trust struct {
	TrustDomain string `json:"trustDomain,omitempty"`
	// Version is the Bundle resource's version from discovery; zero while
	// the bundle is the one that came with the certificate.
	Version uint64 `json:"version"`
	// Anchors are the anchors' subjects and expiries.
	Anchors []Anchor `json:"anchors"`
}

// Anchor is one trust anchor.
type Anchor struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	// KeyID is the anchor's subject key id in hex (empty when it has
	// none), which names it during a rotation.
	KeyID string `json:"keyID,omitempty"`
}

// Discovery is the proxy's discovery client as GET /discovery returns it.
type Discovery struct {
	APIVersion string `json:"apiVersion"`
	// Controller is the mesh API's address.
	Controller string `json:"controller"`
	Connected  bool   `json:"connected"`
	// ConnectedSince is when the current stream opened.
	ConnectedSince time.Time `json:"connectedSince,omitzero"`
	// LastUpdate is when a resource was last applied.
	LastUpdate time.Time `json:"lastUpdate,omitzero"`
	// Reconnects counts streams opened after the first.
	Reconnects uint64 `json:"reconnects"`
	// LastStreamError says why the last stream ended or failed to open.
	LastStreamError string `json:"lastStreamError,omitempty"`
	// NACKsTotal counts versions the proxy refused; LastNACK is the last.
	NACKsTotal uint64 `json:"nacksTotal"`
	LastNACK   string `json:"lastNACK,omitempty"`
	// Resources are the resources held, sorted by kind and name.
	Resources []Resource `json:"resources"`
	// PendingAddresses are addresses subscribed on demand whose answer has
	// not come yet.
	PendingAddresses []string `json:"pendingAddresses,omitempty"`
}

// Resource is one resource a proxy holds.
type Resource struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Version uint64 `json:"version"`
}
