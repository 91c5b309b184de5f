package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Errors of IssueWorkload, wrapped with the details, so that the mesh API
// can answer each with its own status.
var (
	// ErrInvalidCSR: the request is not one PEM certificate request with a
	// valid signature and a key of an accepted algorithm.
	ErrInvalidCSR = errors.New("invalid certificate request")
	// ErrCSRIdentity: the request is well formed but asks for names other
	// than exactly the expected SPIFFE id.
	ErrCSRIdentity = errors.New("the certificate request asks for another identity")
)

// WorkloadCertificate is a certificate the issuer signed.
type WorkloadCertificate struct {
	Leaf *x509.Certificate
	// ChainPEM is the leaf, then the issuer and any intermediates up to,
	// not including, a trust anchor: what a TLS peer sends.
	ChainPEM []byte
}

// ParseCSR decodes one PEM "CERTIFICATE REQUEST" and checks its signature
// and key algorithm. Errors wrap ErrInvalidCSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrInvalidCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: the PEM block is a %q, not a CERTIFICATE REQUEST", ErrInvalidCSR, block.Type)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: checking its signature: %w", ErrInvalidCSR, err)
	}
	if err := CheckAlgorithm(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	return csr, nil
}

// checkCSRNames reports whether csr asks for exactly the SPIFFE id id:
// one URI SAN equal to it, and no DNS, IP or email SAN.
func checkCSRNames(csr *x509.CertificateRequest, id string) error {
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n > 0 {
		return fmt.Errorf("%w: it has %d DNS, IP or email SANs (%v %v %v); a workload certificate carries only its SPIFFE id",
			ErrCSRIdentity, n, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
	}
	switch len(csr.URIs) {
	case 0:
		return fmt.Errorf("%w: it has no URI SAN; want %s", ErrCSRIdentity, id)
	case 1:
	default:
		return fmt.Errorf("%w: it has %d URI SANs; want only %s", ErrCSRIdentity, len(csr.URIs), id)
	}
	if got := csr.URIs[0].String(); got != id {
		return fmt.Errorf("%w: it asks for %s; the token is for %s", ErrCSRIdentity, got, id)
	}
	return nil
}

// IssueWorkload signs a workload certificate for the SPIFFE id id from a
// PEM certificate request. The request must carry a valid signature, a key
// that CheckAlgorithm accepts, and exactly one URI SAN equal to id and no
// other SAN (errors wrap ErrInvalidCSR or ErrCSRIdentity). Only the key and
// the id are taken from it; the certificate is a leaf for TLS servers and
// clients, valid from a little before now for lifetime, but never past the
// issuer's own expiry.
func (b *IdentityBundle) IssueWorkload(csrPEM []byte, id string, lifetime time.Duration) (*WorkloadCertificate, error) {
	if _, _, err := ValidateSPIFFEID(id); err != nil {
		return nil, fmt.Errorf("issuing a workload certificate: %w", err)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if err := checkCSRNames(csr, id); err != nil {
		return nil, err
	}
	return b.issueLeaf(csr.PublicKey, csr.URIs[0], nil, lifetime)
}

// IssueServer signs a certificate for a key the caller holds: the SPIFFE
// id id and, for clients that dial by name, dnsNames. The controller uses
// it for the mesh API's own serving certificate.
func (b *IdentityBundle) IssueServer(pub crypto.PublicKey, id string, dnsNames []string, lifetime time.Duration) (*WorkloadCertificate, error) {
	if _, _, err := ValidateSPIFFEID(id); err != nil {
		return nil, fmt.Errorf("issuing a server certificate: %w", err)
	}
	if err := CheckAlgorithm(pub); err != nil {
		return nil, fmt.Errorf("issuing a server certificate: %w", err)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("issuing a server certificate: %w", err)
	}
	return b.issueLeaf(pub, u, dnsNames, lifetime)
}

func (b *IdentityBundle) issueLeaf(pub crypto.PublicKey, id *url.URL, dnsNames []string, lifetime time.Duration) (*WorkloadCertificate, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("issuing a certificate for %s: the lifetime %s is not positive", id, lifetime)
	}
	issuer := b.Issuer()
	now := b.Source.now()
	if err := CheckValidity(issuer, now); err != nil {
		return nil, fmt.Errorf("issuing a certificate for %s: the issuer: %w", id, err)
	}
	serial, err := b.Source.serialNumber()
	if err != nil {
		return nil, fmt.Errorf("issuing a certificate for %s: %w", id, err)
	}
	notBefore, notAfter := now.Add(-backdate), now.Add(lifetime)
	if notBefore.Before(issuer.NotBefore) {
		notBefore = issuer.NotBefore
	}
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id},
		DNSNames:              dnsNames,
	}
	// RSA keys also encipher in TLS 1.2 key exchange; the mesh speaks TLS
	// 1.3 only, where digitalSignature is all a leaf needs.
	der, err := x509.CreateCertificate(b.Source.rand(), tmpl, issuer, pub, b.IssuerKey)
	if err != nil {
		return nil, fmt.Errorf("signing a certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate for %s: %w", id, err)
	}
	var chain bytes.Buffer
	pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range b.IssuerChain {
		if b.isAnchor(c) {
			continue // peers have it; an operator's chain file may hold it
		}
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &WorkloadCertificate{Leaf: leaf, ChainPEM: chain.Bytes()}, nil
}

func (b *IdentityBundle) isAnchor(c *x509.Certificate) bool {
	for _, a := range b.TrustAnchors {
		if a.Equal(c) {
			return true
		}
	}
	return false
}
