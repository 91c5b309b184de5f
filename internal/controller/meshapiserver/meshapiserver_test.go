package meshapiserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
)

const ns = "mesh-ns"

// fakeCreds is a BundleSource whose bundle the test replaces.
type fakeCreds struct {
	mu sync.Mutex
	b  *pki.IdentityBundle
}

func (f *fakeCreds) Bundle() (*pki.IdentityBundle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.b == nil {
		return nil, errors.New("no issuer")
	}
	return f.b, nil
}

func (f *fakeCreds) set(b *pki.IdentityBundle) { f.mu.Lock(); f.b = b; f.mu.Unlock() }

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newBundle(t *testing.T, c *clock) *pki.IdentityBundle {
	t.Helper()
	b, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local", Source: pki.Source{Clock: c.now}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func start(t *testing.T, creds BundleSource, c *clock, config func() (meshconfig.Spec, error)) *Server {
	t.Helper()
	s, err := New(Options{Address: "127.0.0.1:0", MeshNamespace: ns, Credentials: creds, Config: config, Clock: c.now,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("/whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) == 0 {
			io.WriteString(w, "anonymous")
			return
		}
		id, err := pki.SPIFFEIDOf(r.TLS.VerifiedChains[0][0])
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, id)
	}))
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Shutdown(t.Context())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func defaultConfig() (meshconfig.Spec, error) {
	spec := meshconfig.Default("img")
	spec.Identity.CertificateLifetime.Duration = 10 * time.Hour
	return spec, nil
}

// get makes one request on a new connection, verifying the server as a
// proxy does: chained to the anchors, named by the Service's DNS name, and
// presenting the controller's SPIFFE id.
func get(t *testing.T, s *Server, anchors []*x509.Certificate, clientCert *tls.Certificate) (string, *http.Response, error) {
	t.Helper()
	pool := x509.NewCertPool()
	for _, a := range anchors {
		pool.AddCert(a)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: DNSNames(ns)[0], MinVersion: tls.VersionTLS13}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + s.Addr().String() + "/whoami")
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp, nil
}

func TestServesItsIdentityOverHTTP2(t *testing.T) {
	c := &clock{t: time.Now()}
	b := newBundle(t, c)
	s := start(t, &fakeCreds{b: b}, c, defaultConfig)
	body, resp, err := get(t, s, b.TrustAnchors, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body != "anonymous" || resp.ProtoMajor != 2 {
		t.Errorf("got %q over HTTP/%d, want anonymous over HTTP/2", body, resp.ProtoMajor)
	}
	leaf := resp.TLS.PeerCertificates[0]
	const want = "spiffe://cluster.local/ns/" + ns + "/sa/meshctl-controller"
	if id, err := pki.SPIFFEIDOf(leaf); err != nil || id != want {
		t.Errorf("server identity %q, %v; want %q", id, err, want)
	}
	if resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("TLS version %x, want 1.3", resp.TLS.Version)
	}
	for _, name := range DNSNames(ns) {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Error(err)
		}
	}
	if got := s.NotAfter(); !got.Equal(leaf.NotAfter) {
		t.Errorf("NotAfter() = %s, want %s", got, leaf.NotAfter)
	}

	// TLS 1.2 is refused.
	conn, err := tls.Dial("tcp", s.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil {
		conn.Close()
		t.Error("a TLS 1.2 handshake succeeded")
	}
}

func TestVerifiesClientCertificatesWhenGiven(t *testing.T) {
	c := &clock{t: time.Now()}
	b := newBundle(t, c)
	s := start(t, &fakeCreds{b: b}, c, defaultConfig)

	const web = "spiffe://cluster.local/ns/shop/sa/web"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(web)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := b.IssueWorkload(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), web, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := pki.ParseCertificates(wc.ChainPEM)
	cert := &tls.Certificate{PrivateKey: key}
	for _, x := range chain {
		cert.Certificate = append(cert.Certificate, x.Raw)
	}
	if body, _, err := get(t, s, b.TrustAnchors, cert); err != nil || body != web {
		t.Errorf("with a mesh client certificate: %q, %v; want %q", body, err, web)
	}

	// A certificate of another mesh is refused at the handshake.
	other := newBundle(t, c)
	wc, err = other.IssueWorkload(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), web, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ = pki.ParseCertificates(wc.ChainPEM)
	foreign := &tls.Certificate{PrivateKey: key}
	for _, x := range chain {
		foreign.Certificate = append(foreign.Certificate, x.Raw)
	}
	if body, _, err := get(t, s, b.TrustAnchors, foreign); err == nil {
		t.Errorf("a foreign client certificate was accepted: %q", body)
	}
}

func TestRenewsOnANewIssuer(t *testing.T) {
	c := &clock{t: time.Now()}
	creds := &fakeCreds{b: newBundle(t, c)}
	s := start(t, creds, c, defaultConfig)
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	// A new issuer (and anchor) replaces the certificate at once, so that
	// proxies given the new anchors can verify it.
	nb := newBundle(t, c)
	creds.set(nb)
	body, resp, err := get(t, s, nb.TrustAnchors, nil)
	if err != nil || body != "anonymous" {
		t.Fatalf("with the new anchors: %q, %v", body, err)
	}
	if !resp.TLS.PeerCertificates[1].Equal(nb.Issuer()) {
		t.Error("the chain does not carry the new issuer")
	}
}

func TestRenewsAt70Percent(t *testing.T) {
	c := &clock{t: time.Now()}
	creds := &fakeCreds{b: newBundle(t, c)}
	s := start(t, creds, c, defaultConfig)
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	first := s.NotAfter()
	c.advance(7*time.Hour - 10*time.Minute)
	if s.Ready(); !s.NotAfter().Equal(first) {
		t.Fatalf("renewed before 70%% of the life: %s -> %s", first, s.NotAfter())
	}
	c.advance(15 * time.Minute)
	if s.Ready(); !s.NotAfter().After(first) {
		t.Fatalf("not renewed after 70%% of the life: still %s", first)
	}

	// Without an issuer, the valid certificate stays in service.
	creds.set(nil)
	c.advance(8 * time.Hour)
	if err := s.Ready(); err != nil {
		t.Errorf("Ready with a still-valid certificate and no issuer: %v", err)
	}
	c.advance(3 * time.Hour)
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "no issuer") {
		t.Errorf("Ready with an expired certificate and no issuer: %v, want the issuer's error", err)
	}
}

func TestNotReadyWithoutMeshConfig(t *testing.T) {
	c := &clock{t: time.Now()}
	s := start(t, &fakeCreds{b: newBundle(t, c)}, c, func() (meshconfig.Spec, error) {
		return meshconfig.Spec{}, errors.New("no valid MeshConfig seen yet")
	})
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "no valid MeshConfig") {
		t.Errorf("Ready = %v, want the MeshConfig's error", err)
	}
}

// pki backdates NotBefore by minutes; a lifetime of a minute must still
// renew at 70 % of that minute, not at every handshake.
func TestRenewsAt70PercentOfAShortLifetime(t *testing.T) {
	c := &clock{t: time.Now()}
	creds := &fakeCreds{b: newBundle(t, c)}
	s := start(t, creds, c, func() (meshconfig.Spec, error) {
		spec := meshconfig.Default("img")
		spec.Identity.CertificateLifetime.Duration = time.Minute
		return spec, nil
	})
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	first := s.NotAfter()
	c.advance(40 * time.Second)
	if s.Ready(); !s.NotAfter().Equal(first) {
		t.Fatalf("renewed after 40 s of a one-minute life: %s -> %s", first, s.NotAfter())
	}
	c.advance(5 * time.Second)
	if s.Ready(); !s.NotAfter().After(first) {
		t.Fatalf("not renewed after 45 s of a one-minute life: still %s", first)
	}
}
