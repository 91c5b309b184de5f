package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

const webID = "spiffe://cluster.local/ns/shop/sa/web"

type csrSpec struct {
	key    crypto.Signer
	uris   []string
	dns    []string
	ips    []net.IP
	emails []string
}

func newCSR(t testing.TB, s csrSpec) []byte {
	t.Helper()
	if s.key == nil {
		s.key = p256(t)
	}
	tmpl := &x509.CertificateRequest{DNSNames: s.dns, IPAddresses: s.ips, EmailAddresses: s.emails}
	for _, u := range s.uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, s.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssueWorkload(t *testing.T) {
	b := generate(t)
	now := t0.Add(time.Hour)
	b.Source.Clock = fixedClock(now)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"P-256": p256(t), "P-384": p384, "RSA 2048": rsaKey} {
		t.Run(name, func(t *testing.T) {
			wc, err := b.IssueWorkload(newCSR(t, csrSpec{key: key, uris: []string{webID}}), webID, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			leaf := wc.Leaf
			if got, err := SPIFFEIDOf(leaf); err != nil || got != webID {
				t.Errorf("SPIFFE id %q, %v; want %q", got, err, webID)
			}
			if !leaf.NotBefore.Equal(now.Add(-backdate)) || !leaf.NotAfter.Equal(now.Add(24*time.Hour)) {
				t.Errorf("validity %s to %s, want %s to %s", leaf.NotBefore, leaf.NotAfter, now.Add(-backdate), now.Add(24*time.Hour))
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("leaf: IsCA %v, KeyUsage %v, SANs %v %v %v", leaf.IsCA, leaf.KeyUsage, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
			}
			if err := CheckKeyPair(leaf, key); err != nil {
				t.Error(err)
			}
			chain, err := ParseCertificates(wc.ChainPEM)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 2 || !chain[0].Equal(leaf) || !chain[1].Equal(b.Issuer()) {
				t.Fatalf("chain of %d certificates, want the leaf and the issuer", len(chain))
			}
			for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if err := VerifyChain(leaf, b.TrustAnchors, chain[1:], now, u); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestIssueWorkloadStopsAtTheIssuersExpiry(t *testing.T) {
	b := generate(t)
	now := b.Issuer().NotAfter.Add(-time.Hour)
	b.Source.Clock = fixedClock(now)
	wc, err := b.IssueWorkload(newCSR(t, csrSpec{uris: []string{webID}}), webID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !wc.Leaf.NotAfter.Equal(b.Issuer().NotAfter) {
		t.Errorf("NotAfter %s, want the issuer's %s", wc.Leaf.NotAfter, b.Issuer().NotAfter)
	}
	// Backdating stops at the issuer's start too.
	b.Source.Clock = fixedClock(t0)
	if wc, err = b.IssueWorkload(newCSR(t, csrSpec{uris: []string{webID}}), webID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if !wc.Leaf.NotBefore.Equal(b.Issuer().NotBefore) {
		t.Errorf("NotBefore %s, want the issuer's %s", wc.Leaf.NotBefore, b.Issuer().NotBefore)
	}
	// An expired issuer signs nothing.
	b.Source.Clock = fixedClock(b.Issuer().NotAfter.Add(time.Second))
	if _, err := b.IssueWorkload(newCSR(t, csrSpec{uris: []string{webID}}), webID, time.Hour); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("IssueWorkload with an expired issuer: %v, want an expiry error", err)
	}
}

func TestIssueWorkloadRefuses(t *testing.T) {
	b := generate(t)
	b.Source.Clock = fixedClock(t0.Add(time.Hour))
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := newCSR(t, csrSpec{uris: []string{webID}})
	block, _ := pem.Decode(good)
	badSig := append([]byte(nil), block.Bytes...)
	badSig[len(badSig)-3] ^= 0xff // inside the signature, the last field
	cases := []struct {
		name string
		csr  []byte
		id   string
		want error
		msg  string
	}{
		{"not PEM", []byte("hello"), webID, ErrInvalidCSR, "no PEM block"},
		{"empty", nil, webID, ErrInvalidCSR, "no PEM block"},
		{"a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), webID, ErrInvalidCSR, "not a CERTIFICATE REQUEST"},
		{"two blocks", append(append([]byte{}, good...), good...), webID, ErrInvalidCSR, "more than one PEM block"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("garbage")}), webID, ErrInvalidCSR, "parsing"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig}), webID, ErrInvalidCSR, "signature"},
		{"Ed25519 key", newCSR(t, csrSpec{key: edKey, uris: []string{webID}}), webID, ErrInvalidCSR, "Ed25519"},
		{"RSA 1024 key", newCSR(t, csrSpec{key: rsa1024, uris: []string{webID}}), webID, ErrInvalidCSR, "RSA 1024"},
		{"no URI SAN", newCSR(t, csrSpec{}), webID, ErrCSRIdentity, "no URI SAN"},
		{"another identity", newCSR(t, csrSpec{uris: []string{"spiffe://cluster.local/ns/shop/sa/db"}}), webID, ErrCSRIdentity, "asks for spiffe://cluster.local/ns/shop/sa/db"},
		{"another trust domain", newCSR(t, csrSpec{uris: []string{"spiffe://evil.example/ns/shop/sa/web"}}), webID, ErrCSRIdentity, "asks for"},
		{"two URI SANs", newCSR(t, csrSpec{uris: []string{webID, "spiffe://cluster.local/ns/shop/sa/db"}}), webID, ErrCSRIdentity, "2 URI SANs"},
		{"a DNS SAN", newCSR(t, csrSpec{uris: []string{webID}, dns: []string{"web.shop.svc"}}), webID, ErrCSRIdentity, "DNS, IP or email"},
		{"an IP SAN", newCSR(t, csrSpec{uris: []string{webID}, ips: []net.IP{net.IPv4(10, 0, 0, 1)}}), webID, ErrCSRIdentity, "DNS, IP or email"},
		{"an email SAN", newCSR(t, csrSpec{uris: []string{webID}, emails: []string{"a@example.com"}}), webID, ErrCSRIdentity, "DNS, IP or email"},
		{"invalid expected id", good, "spiffe://Cluster/x", nil, "lowercase"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wc, err := b.IssueWorkload(c.csr, c.id, time.Hour)
			if err == nil {
				t.Fatalf("issued %v", wc.Leaf.URIs)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %q does not wrap %q", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
		})
	}
	if _, err := b.IssueWorkload(good, webID, 0); err == nil {
		t.Error("issued with a zero lifetime")
	}
}

func TestIssueServer(t *testing.T) {
	b := generate(t)
	now := t0.Add(time.Hour)
	b.Source.Clock = fixedClock(now)
	key := p256(t)
	const id = "spiffe://cluster.local/ns/meshctl-system/sa/meshctl-controller"
	dns := []string{"meshctl-controller.meshctl-system.svc", "meshctl-controller.meshctl-system.svc.cluster.local"}
	wc, err := b.IssueServer(key.Public(), id, dns, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := SPIFFEIDOf(wc.Leaf); got != id {
		t.Errorf("SPIFFE id %q, want %q", got, id)
	}
	if err := wc.Leaf.VerifyHostname(dns[0]); err != nil {
		t.Error(err)
	}
	if _, err := b.IssueServer(key.Public(), "spiffe://cluster.local:1/x", nil, time.Hour); err == nil {
		t.Error("IssueServer accepted an invalid SPIFFE id")
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := b.IssueServer(edKey.Public(), id, nil, time.Hour); err == nil {
		t.Error("IssueServer accepted an Ed25519 key")
	}
}

// BenchmarkIssueWorkload is the CPU cost of one issuance: parsing and
// verifying the CSR, signing the leaf (which crypto/x509 verifies after
// signing) and encoding the chain. Run with -cpu 1 for the per-core rate.
func BenchmarkIssueWorkload(b *testing.B) {
	bundle, err := GenerateIdentity(IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		b.Fatal(err)
	}
	csr := newCSR(b, csrSpec{uris: []string{webID}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bundle.IssueWorkload(csr, webID, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "csr/s")
}
