package check

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/pki"
)

// The cluster tests cover chains and expiry; an unsupported algorithm is
// provoked here, because no tool of the mesh makes such a certificate.
func TestAlgorithmCheckNamesTheCertificate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weak-root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewState(Config{})
	s.anchors = []*x509.Certificate{good.TrustAnchors[0], weak}
	s.issuerChain = good.IssuerChain
	err = checkAlgorithms(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), `trust anchor: certificate "weak-root": unsupported key algorithm ECDSA P-224`) {
		t.Errorf("got %v", err)
	}
	s.anchors = good.TrustAnchors
	if err := checkAlgorithms(context.Background(), s); err != nil {
		t.Errorf("a P-256 identity: %v", err)
	}
}

func TestExpiresSoon(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "issuer"}, NotAfter: now.Add(61 * 24 * time.Hour)}
	if err := expiresSoon(cert, now); err != nil {
		t.Errorf("61 days left: %v", err)
	}
	cert.NotAfter = now.Add(59*24*time.Hour + time.Hour)
	if err := expiresSoon(cert, now); err == nil || err.Error() != `certificate "issuer" expires in 59 days, at 2027-01-19T13:00:00Z` {
		t.Errorf("59 days left: %v", err)
	}
	cert.NotAfter = now.Add(-time.Hour)
	if err := expiresSoon(cert, now); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("expired: %v", err)
	}
}
