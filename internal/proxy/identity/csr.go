package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// SPIFFEID returns the SPIFFE id of a Kubernetes ServiceAccount:
// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) (string, error) {
	if trustDomain == "" || namespace == "" || serviceAccount == "" {
		return "", errors.New("building the SPIFFE id: trust domain, namespace and ServiceAccount are all required")
	}
	id := "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
	if _, err := parseSPIFFEID(id); err != nil {
		return "", fmt.Errorf("building the SPIFFE id: %w", err)
	}
	return id, nil
}

// parseSPIFFEID checks the shape the SPIFFE standard gives an id: scheme
// spiffe, a lowercase trust domain without port or user info, a non-empty
// path without dot segments, no query or fragment.
func parseSPIFFEID(id string) (*url.URL, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URI", id)
	}
	switch {
	case u.Scheme != "spiffe":
		return nil, fmt.Errorf("%q is not a SPIFFE id: the scheme is not spiffe", id)
	case u.Host == "" || u.User != nil || u.Port() != "" || u.Host != strings.ToLower(u.Host):
		return nil, fmt.Errorf("%q is not a SPIFFE id: bad trust domain", id)
	case u.Path == "" || u.Path == "/" || strings.HasSuffix(u.Path, "/") || strings.Contains(u.Path, "//") ||
		strings.Contains(u.Path+"/", "/./") || strings.Contains(u.Path+"/", "/../"):
		return nil, fmt.Errorf("%q is not a SPIFFE id: bad path", id)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%q is not a SPIFFE id: it has a query or fragment", id)
	}
	return u, nil
}

// newKeyAndCSR makes a fresh ECDSA P-256 key and a PEM CSR whose only
// subject alternative name is the URI id. Every issuance gets a new key, so
// a key that leaked is worth one certificate's lifetime at most. The key
// lives only in memory: it is never encoded, written or logged.
func newKeyAndCSR(id *url.URL) (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating an ECDSA P-256 key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id},
	}, key)
	if err != nil {
		return nil, "", fmt.Errorf("creating the certificate request: %w", err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// uriSAN returns a certificate's only URI SAN, or an error when it has
// none or several: a mesh identity is one SPIFFE id, and a certificate
// naming several would let its holder pick.
func uriSAN(c *x509.Certificate) (string, error) {
	if len(c.URIs) != 1 {
		return "", fmt.Errorf("certificate %q has %d URI SANs, want exactly one SPIFFE id", c.Subject.CommonName, len(c.URIs))
	}
	u := c.URIs[0]
	if u.Scheme != "spiffe" {
		return "", fmt.Errorf("certificate %q: URI SAN %q is not a SPIFFE id", c.Subject.CommonName, u.String())
	}
	return u.String(), nil
}
