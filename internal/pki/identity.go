package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// IdentityOptions configure GenerateIdentity.
type IdentityOptions struct {
	// TrustDomain names the certificates: root.identity.<trustDomain> and
	// issuer.identity.<trustDomain>.
	TrustDomain string
	// AnchorLifetime and IssuerLifetime default to DefaultAnchorLifetime and
	// DefaultIssuerLifetime.
	AnchorLifetime time.Duration
	IssuerLifetime time.Duration
	Source
}

// IdentityBundle is the mesh's identity CA: trust anchors, which every proxy
// trusts, and the issuer, which signs proxy certificates and chains to one of
// the anchors.
type IdentityBundle struct {
	// TrustAnchorsPEM, IssuerCertPEM and IssuerKeyPEM are the encoded forms the
	// chart takes (identity.trustAnchorsPEM, identity.issuer.certPEM,
	// identity.issuer.keyPEM).
	TrustAnchorsPEM []byte
	IssuerCertPEM   []byte
	IssuerKeyPEM    []byte

	TrustAnchors []*x509.Certificate
	// IssuerChain is the issuer certificate first, then any intermediates
	// that IssuerCertPEM holds between it and an anchor.
	IssuerChain []*x509.Certificate
	IssuerKey   crypto.Signer

	// Source gives the time and randomness of the certificates the issuer
	// signs (IssueWorkload, IssueServer); the zero value uses the wall
	// clock and crypto/rand.
	Source Source
}

// Issuer returns the issuer's certificate.
func (b *IdentityBundle) Issuer() *x509.Certificate { return b.IssuerChain[0] }

// GenerateIdentity makes a new trust anchor (a self-signed CA) and an issuer
// signed by it (path length 0: it signs only leaf certificates).
func GenerateIdentity(opts IdentityOptions) (*IdentityBundle, error) {
	if opts.TrustDomain == "" {
		return nil, errors.New("generating the identity CA: the trust domain is empty")
	}
	anchorLifetime := opts.AnchorLifetime
	if anchorLifetime == 0 {
		anchorLifetime = DefaultAnchorLifetime
	}
	issuerLifetime := opts.IssuerLifetime
	if issuerLifetime == 0 {
		issuerLifetime = DefaultIssuerLifetime
	}
	if issuerLifetime > anchorLifetime {
		return nil, fmt.Errorf("generating the identity CA: the issuer lifetime %s outlasts the trust anchor's %s", issuerLifetime, anchorLifetime)
	}

	anchorKey, err := opts.newKey()
	if err != nil {
		return nil, fmt.Errorf("generating the trust anchor: %w", err)
	}
	anchorTmpl, err := opts.caTemplate("root.identity."+opts.TrustDomain, anchorLifetime, -1)
	if err != nil {
		return nil, fmt.Errorf("generating the trust anchor: %w", err)
	}
	anchor, anchorPEM, err := opts.sign(anchorTmpl, nil, anchorKey.Public(), anchorKey)
	if err != nil {
		return nil, fmt.Errorf("generating the trust anchor: %w", err)
	}

	issuerKey, err := opts.newKey()
	if err != nil {
		return nil, fmt.Errorf("generating the issuer: %w", err)
	}
	issuerTmpl, err := opts.caTemplate("issuer.identity."+opts.TrustDomain, issuerLifetime, 0)
	if err != nil {
		return nil, fmt.Errorf("generating the issuer: %w", err)
	}
	issuer, issuerPEM, err := opts.sign(issuerTmpl, anchor, issuerKey.Public(), anchorKey)
	if err != nil {
		return nil, fmt.Errorf("generating the issuer: %w", err)
	}
	keyPEM, err := EncodePrivateKey(issuerKey)
	if err != nil {
		return nil, fmt.Errorf("generating the issuer: %w", err)
	}
	return &IdentityBundle{
		TrustAnchorsPEM: anchorPEM,
		IssuerCertPEM:   issuerPEM,
		IssuerKeyPEM:    keyPEM,
		TrustAnchors:    []*x509.Certificate{anchor},
		IssuerChain:     []*x509.Certificate{issuer},
		IssuerKey:       issuerKey,
		Source:          opts.Source,
	}, nil
}

// LoadIdentity parses an identity CA, from meshctl or from the operator's own
// PKI, and verifies that it can work at now: the anchors and the issuer are
// CAs of a supported algorithm and valid at now, the issuer chains to one of
// the anchors (through intermediates that follow it in issuerCertPEM, if
// any), and the key is the issuer's. The first problem found is returned;
// internal/check runs the same checks one by one to report each.
func LoadIdentity(anchorsPEM, issuerCertPEM, issuerKeyPEM []byte, now time.Time) (*IdentityBundle, error) {
	anchors, err := ParseCertificates(anchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the trust anchors: %w", err)
	}
	for _, a := range anchors {
		if err := checkCACert(a, now); err != nil {
			return nil, fmt.Errorf("loading the trust anchors: %w", err)
		}
	}
	chain, err := ParseCertificates(issuerCertPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the issuer certificate: %w", err)
	}
	for _, c := range chain {
		if err := checkCACert(c, now); err != nil {
			return nil, fmt.Errorf("loading the issuer certificate: %w", err)
		}
	}
	if err := VerifyChain(chain[0], anchors, chain[1:], now, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("loading the issuer certificate: %w", err)
	}
	key, err := ParsePrivateKey(issuerKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the issuer key: %w", err)
	}
	if err := CheckKeyPair(chain[0], key); err != nil {
		return nil, fmt.Errorf("loading the issuer key: %w", err)
	}
	return &IdentityBundle{
		TrustAnchorsPEM: anchorsPEM,
		IssuerCertPEM:   issuerCertPEM,
		IssuerKeyPEM:    issuerKeyPEM,
		TrustAnchors:    anchors,
		IssuerChain:     chain,
		IssuerKey:       key,
	}, nil
}

func checkCACert(c *x509.Certificate, now time.Time) error {
	if err := CheckCA(c); err != nil {
		return err
	}
	if err := CheckAlgorithm(c.PublicKey); err != nil {
		return fmt.Errorf("certificate %q: %w", c.Subject.CommonName, err)
	}
	return CheckValidity(c, now)
}
