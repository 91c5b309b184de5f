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
	"math/big"
	"strings"
	"testing"
	"time"
)

// t0 is the tests' "now".
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) Clock { return func() time.Time { return t } }

// counter is a deterministic "random" source.
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		c.n++
		p[i] = c.n
	}
	return len(p), nil
}

func generate(t *testing.T) *IdentityBundle {
	t.Helper()
	b, err := GenerateIdentity(IdentityOptions{TrustDomain: "cluster.local", Source: Source{Clock: fixedClock(t0)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGenerateIdentity(t *testing.T) {
	b := generate(t)
	anchor, issuer := b.TrustAnchors[0], b.Issuer()
	if anchor.Subject.CommonName != "root.identity.cluster.local" || issuer.Subject.CommonName != "issuer.identity.cluster.local" {
		t.Errorf("names: %q, %q", anchor.Subject.CommonName, issuer.Subject.CommonName)
	}
	if got, want := anchor.NotAfter, t0.Add(DefaultAnchorLifetime); !got.Equal(want) {
		t.Errorf("anchor NotAfter = %s, want %s", got, want)
	}
	if got, want := issuer.NotAfter, t0.Add(DefaultIssuerLifetime); !got.Equal(want) {
		t.Errorf("issuer NotAfter = %s, want %s", got, want)
	}
	if !issuer.IsCA || issuer.MaxPathLen != 0 || !issuer.MaxPathLenZero {
		t.Errorf("issuer: IsCA %t MaxPathLen %d, want a CA with path length 0", issuer.IsCA, issuer.MaxPathLen)
	}
	if k, ok := issuer.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("issuer key is %T, want ECDSA P-256", issuer.PublicKey)
	}
	// What GenerateIdentity makes, LoadIdentity accepts, for its whole life.
	for _, now := range []time.Time{t0, t0.Add(DefaultIssuerLifetime - time.Minute)} {
		if _, err := LoadIdentity(b.TrustAnchorsPEM, b.IssuerCertPEM, b.IssuerKeyPEM, now); err != nil {
			t.Errorf("LoadIdentity at %s: %v", now, err)
		}
	}
}

func TestSerialNumbersComeFromRand(t *testing.T) {
	serial := func() *big.Int {
		b, err := GenerateIdentity(IdentityOptions{TrustDomain: "td", Source: Source{Clock: fixedClock(t0), Rand: &counter{}}})
		if err != nil {
			t.Fatal(err)
		}
		return b.TrustAnchors[0].SerialNumber
	}
	if a, b := serial(), serial(); a.Cmp(b) != 0 {
		t.Errorf("serials from the same source differ: %s, %s", a, b)
	}
}

func TestGenerateIdentityRejects(t *testing.T) {
	for name, opts := range map[string]IdentityOptions{
		"no trust domain":            {},
		"issuer outlives the anchor": {TrustDomain: "td", AnchorLifetime: time.Hour, IssuerLifetime: 2 * time.Hour},
	} {
		if _, err := GenerateIdentity(opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// certSpec makes test certificates that GenerateIdentity would never make.
type certSpec struct {
	cn        string
	ca        bool
	notBefore time.Time
	notAfter  time.Time
	key       crypto.Signer // nil: a new P-256 key
	parent    *x509.Certificate
	parentKey crypto.Signer
	usage     []x509.ExtKeyUsage
	dnsNames  []string
}

func makeCert(t *testing.T, s certSpec) (*x509.Certificate, []byte, crypto.Signer, []byte) {
	t.Helper()
	key := s.key
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	if s.notBefore.IsZero() {
		s.notBefore = t0.Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = t0.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: s.cn},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
		ExtKeyUsage:           s.usage,
		DNSNames:              s.dnsNames,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if s.ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	parent, parentKey := s.parent, s.parentKey
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key, keyPEM
}

func TestLoadIdentity(t *testing.T) {
	good := generate(t)
	other := generate(t)

	anchor, anchorPEM, anchorKey, _ := makeCert(t, certSpec{cn: "anchor", ca: true, notAfter: t0.Add(1000 * time.Hour)})
	_, expiredPEM, _, expiredKeyPEM := makeCert(t, certSpec{cn: "expired", ca: true, parent: anchor, parentKey: anchorKey, notAfter: t0.Add(-time.Minute)})
	_, futurePEM, _, futureKeyPEM := makeCert(t, certSpec{cn: "future", ca: true, parent: anchor, parentKey: anchorKey, notBefore: t0.Add(time.Hour)})
	_, leafPEM, _, leafKeyPEM := makeCert(t, certSpec{cn: "leaf", parent: anchor, parentKey: anchorKey})
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	_, edPEM, _, edKeyPEM := makeCert(t, certSpec{cn: "ed", ca: true, parent: anchor, parentKey: anchorKey, key: edKey})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, p384PEM, _, p384KeyPEM := makeCert(t, certSpec{cn: "p384", ca: true, parent: anchor, parentKey: anchorKey, key: p384})
	inter, interPEM, interKey, _ := makeCert(t, certSpec{cn: "intermediate", ca: true, parent: anchor, parentKey: anchorKey})
	_, viaPEM, _, viaKeyPEM := makeCert(t, certSpec{cn: "via intermediate", ca: true, parent: inter, parentKey: interKey})

	for _, tc := range []struct {
		name               string
		anchors, cert, key []byte
		wantErr            string // "" means success
	}{
		{"generated", good.TrustAnchorsPEM, good.IssuerCertPEM, good.IssuerKeyPEM, ""},
		{"P-384 issuer", anchorPEM, p384PEM, p384KeyPEM, ""},
		{"anchors bundle with the right one second", cat(other.TrustAnchorsPEM, good.TrustAnchorsPEM), good.IssuerCertPEM, good.IssuerKeyPEM, ""},
		{"issuer chain through an intermediate", anchorPEM, cat(viaPEM, interPEM), viaKeyPEM, ""},
		{"mismatched key", good.TrustAnchorsPEM, good.IssuerCertPEM, other.IssuerKeyPEM, `loading the issuer key: the private key does not match certificate "issuer.identity.cluster.local"`},
		{"wrong chain", other.TrustAnchorsPEM, good.IssuerCertPEM, good.IssuerKeyPEM, `loading the issuer certificate: certificate "issuer.identity.cluster.local" does not chain to the trust anchors`},
		{"missing intermediate", anchorPEM, viaPEM, viaKeyPEM, `does not chain to the trust anchors`},
		{"expired", anchorPEM, expiredPEM, expiredKeyPEM, `loading the issuer certificate: certificate "expired" expired at`},
		{"not yet valid", anchorPEM, futurePEM, futureKeyPEM, `certificate "future" is not valid before`},
		{"not a CA", anchorPEM, leafPEM, leafKeyPEM, `loading the issuer certificate: certificate "leaf" is not a CA`},
		{"unsupported algorithm", anchorPEM, edPEM, edKeyPEM, `unsupported key algorithm Ed25519`},
		{"anchors not PEM", []byte("hello"), good.IssuerCertPEM, good.IssuerKeyPEM, "loading the trust anchors: no PEM-encoded certificate found"},
		{"key where the certificate belongs", good.TrustAnchorsPEM, good.IssuerKeyPEM, good.IssuerKeyPEM, `loading the issuer certificate: PEM block 1 is a "PRIVATE KEY", not a CERTIFICATE`},
		{"certificate where the key belongs", good.TrustAnchorsPEM, good.IssuerCertPEM, good.IssuerCertPEM, `loading the issuer key: PEM block is a "CERTIFICATE", not a private key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadIdentity(tc.anchors, tc.cert, tc.key, t0)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("no error, want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if err != nil && bytes.Contains([]byte(err.Error()), []byte("PRIVATE KEY-----")) {
				t.Errorf("error carries key material: %v", err)
			}
		})
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParsePrivateKeyFormats(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(key)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, block := range map[string]*pem.Block{
		"SEC 1":   {Type: "EC PRIVATE KEY", Bytes: sec1},
		"PKCS #8": {Type: "PRIVATE KEY", Bytes: pkcs8},
	} {
		got, err := ParsePrivateKey(pem.EncodeToMemory(block))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !key.Public().(*ecdsa.PublicKey).Equal(got.Public()) {
			t.Errorf("%s: decoded a different key", name)
		}
	}
	broken := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("secret-bytes")})
	_, err := ParsePrivateKey(broken)
	if err == nil || strings.Contains(err.Error(), "secret-bytes") {
		t.Errorf("broken key: error %v, want one that does not echo the input", err)
	}
}

func TestWebhookTLS(t *testing.T) {
	b, err := GenerateWebhookTLS(WebhookOptions{ServiceName: "meshctl-controller", Namespace: "mesh", Source: Source{Clock: fixedClock(t0)}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"meshctl-controller.mesh.svc", "meshctl-controller.mesh.svc.cluster.local"}
	if got := b.Cert.DNSNames; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("DNS names %v, want %v", got, want)
	}
	if got, want := b.Cert.NotAfter, t0.Add(DefaultWebhookLifetime); !got.Equal(want) {
		t.Errorf("NotAfter %s, want %s", got, want)
	}
	other, err := GenerateWebhookTLS(WebhookOptions{ServiceName: "meshctl-controller", Namespace: "mesh", Source: Source{Clock: fixedClock(t0)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		ca, cert, key []byte
		namespace     string
		now           time.Time
		wantErr       string
	}{
		{"generated", b.CABundlePEM, b.CertPEM, b.KeyPEM, "mesh", t0, ""},
		{"other namespace", b.CABundlePEM, b.CertPEM, b.KeyPEM, "elsewhere", t0, "meshctl-controller.elsewhere.svc"},
		{"other CA", other.CABundlePEM, b.CertPEM, b.KeyPEM, "mesh", t0, "does not chain to the trust anchors"},
		{"mismatched key", b.CABundlePEM, b.CertPEM, other.KeyPEM, "mesh", t0, "loading the webhook key: the private key does not match"},
		{"expired", b.CABundlePEM, b.CertPEM, b.KeyPEM, "mesh", t0.Add(DefaultWebhookLifetime + time.Second), "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadWebhookTLS(tc.ca, tc.cert, tc.key, "meshctl-controller", tc.namespace, tc.now)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("no error, want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckAlgorithm(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, tc := range map[string]struct {
		pub crypto.PublicKey
		ok  bool
	}{
		"P-256":    {p256.Public(), true},
		"RSA 2048": {&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 2047), E: 65537}, true},
		"RSA 1024": {&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}, false},
		"P-224":    {p224.Public(), false},
		"Ed25519":  {edPub, false},
	} {
		if err := CheckAlgorithm(tc.pub); (err == nil) != tc.ok {
			t.Errorf("%s: error %v, want ok=%t", name, err, tc.ok)
		}
	}
}
