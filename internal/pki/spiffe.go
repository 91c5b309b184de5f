package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// SPIFFE ids, as the SPIFFE ID specification defines them
// (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md):
// "spiffe://" + trust domain + path, where the trust domain is lowercase
// letters, digits, '.', '-' and '_', and the path is zero or more segments
// "/" + one or more of letters, digits, '.', '-' and '_', none of them "."
// or "..". Nothing else is allowed: no port, no userinfo, no query, no
// fragment, no percent-encoding, no trailing slash. The mesh names a
// workload by its ServiceAccount:
//
//	spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>
//
// The parser is written out rather than built on net/url, which accepts
// (and normalises) much that the specification refuses.

// spiffeScheme prefixes every SPIFFE id.
const spiffeScheme = "spiffe://"

// maxSPIFFEIDLength is the specification's limit, in bytes, on a SPIFFE
// id used as a URI SAN.
const maxSPIFFEIDLength = 2048

// maxTrustDomainLength is the specification's limit on the trust domain.
const maxTrustDomainLength = 255

// ValidateTrustDomain reports whether td is a valid SPIFFE trust domain
// name: not empty, at most 255 bytes, only lowercase letters, digits, '.',
// '-' and '_'.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("the trust domain is empty")
	}
	if len(td) > maxTrustDomainLength {
		return fmt.Errorf("the trust domain is %d bytes long, more than %d", len(td), maxTrustDomainLength)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("trust domain %q: must be lowercase", td)
		case c == ':':
			return fmt.Errorf("trust domain %q: a port is not allowed", td)
		case c == '@':
			return fmt.Errorf("trust domain %q: userinfo is not allowed", td)
		default:
			return fmt.Errorf("trust domain %q: character %q is not allowed (only a-z, 0-9, '.', '-', '_')", td, c)
		}
	}
	return nil
}

// validatePathSegment reports whether seg is a valid segment of a SPIFFE
// id's path.
func validatePathSegment(seg string) error {
	switch seg {
	case "":
		return errors.New("empty path segment")
	case ".", "..":
		return fmt.Errorf("path segment %q is not allowed", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		case c == '?':
			return errors.New("a query is not allowed")
		case c == '#':
			return errors.New("a fragment is not allowed")
		case c == '%':
			return errors.New("percent-encoding is not allowed")
		default:
			return fmt.Errorf("character %q is not allowed in a path segment (only a-z, A-Z, 0-9, '.', '-', '_')", c)
		}
	}
	return nil
}

// ValidateSPIFFEID reports whether id is a valid SPIFFE id (of any path,
// the trust domain's own id included) and returns its trust domain and its
// path ("" or starting with '/').
func ValidateSPIFFEID(id string) (trustDomain, path string, err error) {
	if len(id) > maxSPIFFEIDLength {
		return "", "", fmt.Errorf("SPIFFE id is %d bytes long, more than %d", len(id), maxSPIFFEIDLength)
	}
	if !strings.HasPrefix(id, spiffeScheme) {
		return "", "", fmt.Errorf("%q is not a SPIFFE id: it does not start with %q", id, spiffeScheme)
	}
	rest := id[len(spiffeScheme):]
	trustDomain, path = rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		trustDomain, path = rest[:i], rest[i:]
	}
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return "", "", fmt.Errorf("SPIFFE id %q: %w", id, err)
	}
	if path == "" {
		return trustDomain, "", nil
	}
	if path[0] != '/' {
		if err := validatePathSegment("x" + path); err != nil {
			return "", "", fmt.Errorf("SPIFFE id %q: %w", id, err)
		}
	}
	for _, seg := range strings.Split(path[1:], "/") {
		if err := validatePathSegment(seg); err != nil {
			if seg == "" {
				err = errors.New("empty path segment (a trailing slash or \"//\")")
			}
			return "", "", fmt.Errorf("SPIFFE id %q: %w", id, err)
		}
	}
	return trustDomain, path, nil
}

// WorkloadID is the identity of a ServiceAccount in a trust domain.
type WorkloadID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// NewWorkloadID checks its parts and returns the id. Kubernetes names
// (DNS labels and subdomains) are always valid path segments; the check
// guards against names that did not come from Kubernetes.
func NewWorkloadID(trustDomain, namespace, serviceAccount string) (WorkloadID, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return WorkloadID{}, err
	}
	if err := validatePathSegment(namespace); err != nil {
		return WorkloadID{}, fmt.Errorf("namespace %q: %w", namespace, err)
	}
	if err := validatePathSegment(serviceAccount); err != nil {
		return WorkloadID{}, fmt.Errorf("service account %q: %w", serviceAccount, err)
	}
	return WorkloadID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}, nil
}

// String returns the SPIFFE id.
func (w WorkloadID) String() string {
	return spiffeScheme + w.TrustDomain + "/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
}

// ParseWorkloadID reads a SPIFFE id of the mesh's workload form.
func ParseWorkloadID(id string) (WorkloadID, error) {
	td, path, err := ValidateSPIFFEID(id)
	if err != nil {
		return WorkloadID{}, err
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return WorkloadID{}, fmt.Errorf("SPIFFE id %q is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>", id)
	}
	return WorkloadID{TrustDomain: td, Namespace: segs[1], ServiceAccount: segs[3]}, nil
}

// SPIFFEIDOf returns the SPIFFE id of an X.509 SVID: its one URI SAN,
// which must be a valid SPIFFE id. A certificate with no URI SAN or with
// several is refused, as the X509-SVID specification requires.
func SPIFFEIDOf(cert *x509.Certificate) (string, error) {
	switch len(cert.URIs) {
	case 0:
		return "", errors.New("the certificate has no URI SAN, so no SPIFFE id")
	case 1:
	default:
		return "", fmt.Errorf("the certificate has %d URI SANs; a SPIFFE certificate has exactly one", len(cert.URIs))
	}
	id := cert.URIs[0].String()
	if _, _, err := ValidateSPIFFEID(id); err != nil {
		return "", err
	}
	return id, nil
}
