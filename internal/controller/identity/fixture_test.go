package identity_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meshctl/mesh/internal/controller/identity"
	"github.com/meshctl/mesh/internal/controller/meshapiserver"
	"github.com/meshctl/mesh/internal/controller/testcert"
	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

const (
	meshNS      = "ident-mesh"
	appNS       = "shop"
	lifetime    = 2 * time.Hour
	trustDomain = "cluster.local"
)

// fixture is the identity handler and the mesh API server running as the
// chart's ServiceAccount, with the chart's RBAC and the chart's identity
// Secret and ConfigMap mounted.
type fixture struct {
	env        *testenv.Env
	bundle     *pki.IdentityBundle
	now        time.Time // the issuer's clock, fixed
	issuerDir  string
	anchorsDir string
	creds      *identity.Credentials
	handler    *identity.Handler
	metrics    *identity.Metrics
	server     *meshapiserver.Server
	logs       *testenv.Output
}

var chartKinds = map[string]schema.GroupVersionResource{
	"Namespace":          {Version: "v1", Resource: "namespaces"},
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
}

func create(ctx context.Context, t testing.TB, dyn dynamic.Interface, obj *unstructured.Unstructured) {
	t.Helper()
	r := dyn.Resource(chartKinds[obj.GetKind()])
	var err error
	if ns := obj.GetNamespace(); ns != "" {
		_, err = r.Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
	} else {
		_, err = r.Create(ctx, obj, metav1.CreateOptions{})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

func setup(t testing.TB) *fixture {
	t.Helper()
	env := testenv.Shared(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{env: env, now: time.Now().Truncate(time.Second), logs: &testenv.Output{}}
	clock := func() time.Time { return f.now }
	f.bundle, err = pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: trustDomain})
	if err != nil {
		t.Fatal(err)
	}
	ca := testcert.NewCA(t)
	certPEM, keyPEM := ca.Serving(t, 2, time.Now().Add(time.Hour))
	manifest, err := render.Render(render.Options{
		Namespace: meshNS,
		Identity:  render.Identity{TrustAnchorsPEM: f.bundle.TrustAnchorsPEM, IssuerCertPEM: f.bundle.IssuerCertPEM, IssuerKeyPEM: f.bundle.IssuerKeyPEM},
		Webhook:   render.Webhook{CABundlePEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM},
		Version:   "v0.0.0-test",
	})
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	find := func(kind, ns, name string) *unstructured.Unstructured {
		t.Helper()
		o := manifest.Find(kind, ns, name)
		if o == nil {
			t.Fatalf("the chart renders no %s %s/%s", kind, ns, name)
		}
		return o.DeepCopy()
	}
	for _, ns := range []string{meshNS, appNS} {
		create(ctx, t, dyn, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}})
	}
	create(ctx, t, dyn, find("ServiceAccount", meshNS, wellknown.ControllerName))
	create(ctx, t, dyn, find("ClusterRole", "", wellknown.ControllerName))
	create(ctx, t, dyn, find("ClusterRoleBinding", "", wellknown.ControllerName))
	asController, err := env.ServiceAccountConfig(ctx, meshNS, wellknown.ControllerName)
	if err != nil {
		t.Fatal(err)
	}

	// The chart's Secret and ConfigMap, mounted as the Deployment mounts
	// them.
	base := t.TempDir()
	f.issuerDir, f.anchorsDir = filepath.Join(base, "identity-issuer"), filepath.Join(base, "trust-anchors")
	for _, d := range []string{f.issuerDir, f.anchorsDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	secret := find("Secret", meshNS, wellknown.IdentitySecretName)
	issuerFiles := map[string][]byte{}
	for _, k := range []string{identity.IssuerCertFile, identity.IssuerKeyFile} {
		v, _, _ := unstructured.NestedString(secret.Object, "data", k)
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(b) == 0 {
			t.Fatalf("the chart's Secret %s lacks %s", wellknown.IdentitySecretName, k)
		}
		issuerFiles[k] = b
	}
	testcert.WriteMountDir(t, f.issuerDir, issuerFiles)
	anchors, _, _ := unstructured.NestedString(find("ConfigMap", meshNS, wellknown.TrustAnchorsName).Object, "data", identity.TrustAnchorsFile)
	if anchors == "" {
		t.Fatalf("the chart's ConfigMap %s lacks %s", wellknown.TrustAnchorsName, identity.TrustAnchorsFile)
	}
	testcert.WriteMountDir(t, f.anchorsDir, map[string][]byte{identity.TrustAnchorsFile: []byte(anchors)})

	f.creds = identity.NewCredentials(f.issuerDir, f.anchorsDir, clock)
	if err := f.creds.Loaded(); err != nil {
		t.Fatal(err)
	}
	reviewer, err := identity.NewTokenReviewer(asController)
	if err != nil {
		t.Fatal(err)
	}
	f.metrics = &identity.Metrics{IssuerNotAfter: f.creds.IssuerNotAfter}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Every request of these tests comes from one address, most with the
	// same ServiceAccount: the per-peer budget is raised so that only the
	// tests of the limits meet it.
	f.handler = &identity.Handler{Reviewer: reviewer, Credentials: f.creds, Config: meshConfig, Logger: log, Metrics: f.metrics,
		Limits: identity.Limits{MaxInFlightPerPeer: 64, RatePerPeer: 1e5, BurstPerPeer: 1e5, Rate: 1e5}}
	f.server, err = meshapiserver.New(meshapiserver.Options{
		Address: "127.0.0.1:0", MeshNamespace: meshNS, Credentials: f.creds, Config: meshConfig, Clock: clock, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.server.Handle(meshapi.PathCertificate, f.handler)
	done := make(chan error, 1)
	go func() { done <- f.server.Serve() }()
	t.Cleanup(func() {
		f.server.Shutdown(context.Background())
		<-done
		if t.Failed() {
			t.Logf("logs:\n%s", f.logs.String())
		}
	})
	return f
}

func meshConfig() (meshconfig.Spec, error) {
	spec := meshconfig.Default("registry.example/meshproxy:test")
	spec.TrustDomain = trustDomain
	spec.Identity.CertificateLifetime.Duration = lifetime
	return spec, nil
}

func (f *fixture) token(t testing.TB, ns, sa string, audiences ...string) string {
	t.Helper()
	tok, err := f.env.ServiceAccountToken(context.Background(), ns, sa, authenticationv1.TokenRequestSpec{Audiences: audiences})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// expired re-signs a valid token with the test env's ServiceAccount signing
// key, with its validity moved an hour into the past: TokenRequest refuses
// lifetimes under 10 minutes, so only a forged token can be expired in a
// test.
func (f *fixture) expired(t testing.TB, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-2 * time.Hour)
	claims["iat"], claims["nbf"], claims["exp"] = past.Unix(), past.Unix(), past.Add(time.Hour).Unix()
	payload, _ = json.Marshal(claims)
	keyPEM, err := os.ReadFile(filepath.Join(f.env.Dir, "sa.key"))
	if err != nil {
		t.Fatalf("reading the test env's ServiceAccount signing key: %v", err)
	}
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	input := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func spiffeID(ns, sa string) string { return "spiffe://" + trustDomain + "/ns/" + ns + "/sa/" + sa }

// csr returns a PEM CSR for the URIs and DNS names, and its key.
func csr(t testing.TB, uris []string, dns ...string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{DNSNames: dns}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func requestBody(csrPEM []byte) []byte {
	b, _ := json.Marshal(meshapi.CertificateRequest{APIVersion: meshapi.APIVersion, CSR: string(csrPEM)})
	return b
}

// client dials the mesh API as a proxy does: the controller must chain to
// the anchors and present its own SPIFFE id.
func (f *fixture) client(anchors []*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, a := range anchors {
		pool.AddCert(a)
	}
	want := spiffeID(meshNS, wellknown.ControllerServiceAccount)
	cfg := &tls.Config{
		RootCAs:    pool,
		ServerName: meshapiserver.DNSNames(meshNS)[0],
		MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if id, err := pki.SPIFFEIDOf(cs.PeerCertificates[0]); err != nil || id != want {
				return fmt.Errorf("the controller presents %q (%v), want %q", id, err, want)
			}
			return nil
		},
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
}

type answer struct {
	status int
	proto  int
	ok     meshapi.CertificateResponse
	err    meshapi.Error
}

func (f *fixture) post(t testing.TB, c *http.Client, method, token string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+f.server.Addr().String()+meshapi.PathCertificate, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, proto: resp.ProtoMajor}
	target := any(&a.err)
	if resp.StatusCode == http.StatusOK {
		target = &a.ok
	}
	if err := json.Unmarshal(b, target); err != nil {
		t.Fatalf("%d answer %q is not JSON: %v", resp.StatusCode, b, err)
	}
	return a
}

// checkIssued verifies a certificate response for id: the chain verifies
// against the anchors as a client and as a server certificate, and its
// validity follows the MeshConfig's lifetime from the injected clock.
func (f *fixture) checkIssued(t *testing.T, a answer, id string, key *ecdsa.PrivateKey, bundle *pki.IdentityBundle) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d: %+v", a.status, a.err)
	}
	r := a.ok
	if r.APIVersion != meshapi.APIVersion || r.Identity != id {
		t.Errorf("apiVersion %q identity %q, want %q %q", r.APIVersion, r.Identity, meshapi.APIVersion, id)
	}
	chain, err := pki.ParseCertificates([]byte(r.CertificateChain))
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[1].Equal(bundle.Issuer()) {
		t.Fatalf("chain of %d certificates, want the leaf and the issuer (no anchor)", len(chain))
	}
	leaf := chain[0]
	if got, err := pki.SPIFFEIDOf(leaf); err != nil || got != id {
		t.Errorf("leaf identity %q, %v; want %q", got, err, id)
	}
	if err := pki.CheckKeyPair(leaf, key); err != nil {
		t.Error(err)
	}
	if !leaf.NotAfter.Equal(f.now.Add(lifetime)) || !r.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("NotAfter %s (response %s), want now + %s = %s", leaf.NotAfter, r.NotAfter, lifetime, f.now.Add(lifetime))
	}
	if err := r.Bundle.Validate(); err != nil || r.Bundle.TrustDomain != trustDomain {
		t.Errorf("bundle %+v: %v", r.Bundle, err)
	}
	var anchors []*x509.Certificate
	for _, a := range r.Bundle.Anchors {
		c, err := meshapi.ParseAnchor(a)
		if err != nil {
			t.Fatal(err)
		}
		anchors = append(anchors, c)
	}
	if len(anchors) != len(bundle.TrustAnchors) || !anchors[0].Equal(bundle.TrustAnchors[0]) {
		t.Errorf("the response's bundle is not the mounted anchors")
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if err := pki.VerifyChain(leaf, anchors, chain[1:], time.Now(), u); err != nil {
			t.Error(err)
		}
	}
}
