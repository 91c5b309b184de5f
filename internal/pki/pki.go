// Package pki makes and checks the mesh's certificates: the identity CA (a
// long-lived trust anchor and a shorter-lived issuer that signs proxy
// certificates) and the injection webhook's serving certificate.
//
// Keys are ECDSA P-256. Loaded credentials, which operators may bring from
// their own PKI, may also use ECDSA P-384 or RSA of at least 2048 bits;
// Ed25519 and other algorithms are refused because not every TLS stack and
// key store the mesh meets supports them in certificates.
//
// Time and randomness are injected (Clock, Rand) so tests control validity
// windows and serial numbers. Note that since Go 1.26 the standard library
// draws key material from the system's secure source whatever Rand says, so
// keys are never reproducible; tests that need fixed credentials store them.
// Private keys never appear in errors or logs.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"
)

// Default lifetimes.
const (
	// DefaultAnchorLifetime is the trust anchor's validity: replacing an anchor
	// means re-issuing every identity, so it is long.
	DefaultAnchorLifetime = 10 * 365 * 24 * time.Hour
	// DefaultIssuerLifetime is the issuer's validity; `meshctl upgrade` can
	// rotate it under the same anchor.
	DefaultIssuerLifetime = 365 * 24 * time.Hour
	// DefaultWebhookLifetime is the validity of the webhook CA and serving
	// certificate. Only the API server trusts them and meshctl can replace
	// both at any upgrade, so one year is enough.
	DefaultWebhookLifetime = 365 * 24 * time.Hour
)

// backdate moves NotBefore into the past so that a node whose clock is a
// little behind does not reject a certificate made a moment ago.
const backdate = 5 * time.Minute

// Clock returns the current time.
type Clock func() time.Time

// Source is where certificates get their time and randomness; the zero value
// uses the wall clock and crypto/rand.
type Source struct {
	// Clock gives NotBefore and NotAfter; nil means time.Now.
	Clock Clock
	// Rand gives serial numbers and is passed to key generation and signing;
	// nil means crypto/rand.Reader.
	Rand io.Reader
}

func (s Source) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock()
}

func (s Source) rand() io.Reader {
	if s.Rand == nil {
		return rand.Reader
	}
	return s.Rand
}

// serialNumber is a random positive 128-bit serial, as RFC 5280 asks
// (at most 20 octets, unpredictable).
func (s Source) serialNumber() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(s.rand(), limit)
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func (s Source) newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), s.rand())
	if err != nil {
		return nil, fmt.Errorf("generating an ECDSA P-256 key: %w", err)
	}
	return key, nil
}

// sign creates a certificate from template, signed by parent's key (the
// template itself and key when parent is nil: self-signed).
func (s Source) sign(template, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, []byte, error) {
	if parent == nil {
		parent = template
	}
	der, err := x509.CreateCertificate(s.rand(), template, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate %q: %w", template.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing certificate %q: %w", template.Subject.CommonName, err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// caTemplate is a CA certificate valid from now for lifetime. maxPathLen < 0
// leaves the path length unconstrained.
func (s Source) caTemplate(cn string, lifetime time.Duration, maxPathLen int) (*x509.Certificate, error) {
	serial, err := s.serialNumber()
	if err != nil {
		return nil, err
	}
	now := s.now()
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	if maxPathLen < 0 {
		t.MaxPathLen = -1
	}
	return t, nil
}

// EncodePrivateKey encodes a key as PKCS #8 PEM ("PRIVATE KEY").
func EncodePrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificates decodes every CERTIFICATE block of a PEM bundle, in
// order. It fails on a bundle with no certificate, on blocks of another
// type, and on text that is not PEM, naming the block.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for i := 1; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE", i, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", i, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM-encoded certificate found")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("unexpected text after certificate %d", len(certs))
	}
	return certs, nil
}

// ParsePrivateKey decodes one PEM private key: PKCS #8 ("PRIVATE KEY"),
// SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY"). Its errors never
// include key material.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM-encoded private key found")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("more than one PEM block where one private key was expected")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is a %q, not a private key", block.Type)
	}
	if err != nil {
		// x509's parse errors describe the structure, not the key's bytes.
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T key cannot sign", key)
	}
	return signer, nil
}

// CheckAlgorithm reports whether a public key is one the mesh accepts:
// ECDSA P-256 or P-384, or RSA of at least 2048 bits.
func CheckAlgorithm(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("unsupported key algorithm ECDSA %s: want ECDSA P-256 or P-384, or RSA of at least 2048 bits", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
		return fmt.Errorf("unsupported key algorithm RSA %d: want ECDSA P-256 or P-384, or RSA of at least 2048 bits", k.N.BitLen())
	case ed25519.PublicKey:
		return errors.New("unsupported key algorithm Ed25519: want ECDSA P-256 or P-384, or RSA of at least 2048 bits")
	}
	return fmt.Errorf("unsupported key algorithm %T: want ECDSA P-256 or P-384, or RSA of at least 2048 bits", pub)
}

// CheckKeyPair reports whether key is the private key of cert.
func CheckKeyPair(cert *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("the private key does not match certificate %q", cert.Subject.CommonName)
	}
	return nil
}

// CheckValidity reports whether cert is valid at now.
func CheckValidity(cert *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(cert.NotBefore):
		return fmt.Errorf("certificate %q is not valid before %s", cert.Subject.CommonName, cert.NotBefore.UTC().Format(time.RFC3339))
	case now.After(cert.NotAfter):
		return fmt.Errorf("certificate %q expired at %s", cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckCA reports whether cert may sign certificates.
func CheckCA(cert *x509.Certificate) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("certificate %q is not a CA", cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certificate %q is a CA but its key usage does not allow signing certificates", cert.Subject.CommonName)
	}
	return nil
}

// VerifyChain reports whether cert chains to one of roots at now, through
// the given intermediates, for the given extended key usage (x509.ExtKeyUsageAny
// when the certificate is itself a CA).
func VerifyChain(cert *x509.Certificate, roots, intermediates []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) error {
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	interPool := x509.NewCertPool()
	for _, c := range intermediates {
		interPool.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: interPool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("certificate %q does not chain to the trust anchors: %w", cert.Subject.CommonName, err)
	}
	return nil
}
