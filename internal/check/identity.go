package check

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

// ExpiryWarning is how long before a certificate expires the checks warn.
const ExpiryWarning = 60 * 24 * time.Hour

// Keys of the identity objects.
const (
	trustAnchorsKey = "ca-bundle.crt"
	caKey           = "ca.crt"
)

func identity() Category {
	return Category{ID: CategoryIdentity, Checks: []Check{
		{
			Description: "the trust anchors are valid CA certificates",
			Hint:        "identity-trust-anchors",
			Severity:    Fatal,
			Run:         checkTrustAnchors,
		},
		{
			Description: "the issuer certificate and key are valid",
			Hint:        "identity-issuer",
			Severity:    Fatal,
			Run:         checkIssuer,
		},
		{
			Description: "the trust anchors and issuer use a supported algorithm",
			Hint:        "identity-algorithm",
			Run:         checkAlgorithms,
		},
		{
			Description: "the issuer chains to the trust anchors",
			Hint:        "identity-chain",
			Run:         checkIssuerChain,
		},
		{
			Description: "the trust anchors and issuer are within their validity period",
			Hint:        "identity-validity",
			Run: func(_ context.Context, s *State) error {
				return eachCert(s.identityCerts(), func(c *x509.Certificate) error { return pki.CheckValidity(c, s.now()) })
			},
		},
		{
			Description: "the trust anchors and issuer are valid for at least 60 days",
			Hint:        "identity-expiry",
			Severity:    Warning,
			Run: func(_ context.Context, s *State) error {
				return eachCert(s.identityCerts(), func(c *x509.Certificate) error { return expiresSoon(c, s.now()) })
			},
		},
	}}
}

// namedCert is a certificate and the words that tell users which it is.
type namedCert struct {
	role string // "trust anchor", "issuer"
	cert *x509.Certificate
}

func (s *State) identityCerts() []namedCert {
	var out []namedCert
	for _, a := range s.anchors {
		out = append(out, namedCert{"trust anchor", a})
	}
	for i, c := range s.issuerChain {
		role := "issuer"
		if i > 0 {
			role = "issuer's intermediate"
		}
		out = append(out, namedCert{role, c})
	}
	return out
}

// eachCert runs f on each certificate and reports every failure, one per
// line, naming the certificate's role.
func eachCert(certs []namedCert, f func(*x509.Certificate) error) error {
	if len(certs) == 0 {
		return errors.New("no certificates to check: an earlier check did not pass")
	}
	var problems []string
	for _, c := range certs {
		if err := f(c.cert); err != nil {
			problems = append(problems, c.role+": "+err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

func checkTrustAnchors(ctx context.Context, s *State) error {
	u, err := s.object(ctx, configMaps, wellknown.TrustAnchorsName)
	if err != nil {
		return err
	}
	cm, err := decode[corev1.ConfigMap](u)
	if err != nil {
		return err
	}
	anchors, err := pki.ParseCertificates([]byte(cm.Data[trustAnchorsKey]))
	if err != nil {
		return fmt.Errorf("ConfigMap %s/%s, key %s: %w", cm.Namespace, cm.Name, trustAnchorsKey, err)
	}
	for _, a := range anchors {
		if err := pki.CheckCA(a); err != nil {
			return fmt.Errorf("ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
		}
	}
	s.anchors = anchors
	return nil
}

func checkIssuer(ctx context.Context, s *State) error {
	where, chain, err := s.tlsSecret(ctx, wellknown.IdentitySecretName)
	if err != nil {
		return err
	}
	for _, c := range chain {
		if err := pki.CheckCA(c); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	s.issuerChain = chain
	return nil
}

// tlsSecret reads a kubernetes.io/tls Secret: its certificate chain, whose
// first certificate the Secret's key must belong to. where names the Secret
// for the caller's own messages; errors name the Secret and its key.
func (s *State) tlsSecret(ctx context.Context, name string) (where string, chain []*x509.Certificate, err error) {
	sec, err := s.secret(ctx, name)
	if err != nil {
		return "", nil, err
	}
	where = "Secret " + sec.Namespace + "/" + sec.Name
	chain, err = pki.ParseCertificates(sec.Data[corev1.TLSCertKey])
	if err != nil {
		return "", nil, fmt.Errorf("%s, key %s: %w", where, corev1.TLSCertKey, err)
	}
	key, err := pki.ParsePrivateKey(sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return "", nil, fmt.Errorf("%s, key %s: %w", where, corev1.TLSPrivateKeyKey, err)
	}
	if err := pki.CheckKeyPair(chain[0], key); err != nil {
		return "", nil, fmt.Errorf("%s: %w", where, err)
	}
	return where, chain, nil
}

func (s *State) secret(ctx context.Context, name string) (*corev1.Secret, error) {
	u, err := s.object(ctx, secrets, name)
	if err != nil {
		return nil, err
	}
	return decode[corev1.Secret](u)
}

func checkAlgorithms(_ context.Context, s *State) error {
	return eachCert(s.identityCerts(), func(c *x509.Certificate) error {
		if err := pki.CheckAlgorithm(c.PublicKey); err != nil {
			return fmt.Errorf("certificate %q: %w", c.Subject.CommonName, err)
		}
		return nil
	})
}

// checkIssuerChain verifies the issuer against the anchors at a moment when
// the issuer is valid, so an expired issuer is reported by the validity
// check and not as a broken chain; and checks that the ca.crt the issuer's
// Secret carries holds the same anchors as the ConfigMap every proxy reads.
func checkIssuerChain(ctx context.Context, s *State) error {
	if len(s.issuerChain) == 0 || len(s.anchors) == 0 {
		return errors.New("no certificates to check: an earlier check did not pass")
	}
	issuer := s.issuerChain[0]
	at := s.now()
	if at.Before(issuer.NotBefore) {
		at = issuer.NotBefore
	}
	if at.After(issuer.NotAfter) {
		at = issuer.NotAfter
	}
	if err := pki.VerifyChain(issuer, s.anchors, s.issuerChain[1:], at, x509.ExtKeyUsageAny); err != nil {
		return err
	}
	sec, err := s.secret(ctx, wellknown.IdentitySecretName)
	if err != nil {
		return err
	}
	if ca, ok := sec.Data[caKey]; ok {
		certs, err := pki.ParseCertificates(ca)
		if err != nil {
			return fmt.Errorf("Secret %s/%s, key %s: %w", sec.Namespace, sec.Name, caKey, err)
		}
		if !sameCerts(certs, s.anchors) {
			return fmt.Errorf("Secret %s/%s, key %s, holds other certificates than the trust anchors in ConfigMap %s/%s",
				sec.Namespace, sec.Name, caKey, sec.Namespace, wellknown.TrustAnchorsName)
		}
	}
	return nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

// expiresSoon fails when c expires within ExpiryWarning of now.
func expiresSoon(c *x509.Certificate, now time.Time) error {
	left := c.NotAfter.Sub(now)
	if left >= ExpiryWarning {
		return nil
	}
	if left < 0 {
		return fmt.Errorf("certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("certificate %q expires in %d days, at %s", c.Subject.CommonName, int(left.Hours()/24), c.NotAfter.UTC().Format(time.RFC3339))
}
