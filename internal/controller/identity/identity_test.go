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
	"net"
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

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

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
	f.handler = &identity.Handler{Reviewer: reviewer, Credentials: f.creds, Config: meshConfig, Logger: log, Metrics: f.metrics}
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

func TestIssuance(t *testing.T) {
	f := setup(t)
	c := f.client(f.bundle.TrustAnchors)
	web, db := spiffeID(appNS, "web"), spiffeID(appNS, "db")
	webToken := f.token(t, appNS, "web", wellknown.IdentityTokenAudience)
	webCSR, webKey := csr(t, []string{web})

	// RBAC reaches the authorizer's cache a moment after the binding is
	// created.
	deadline := time.Now().Add(30 * time.Second)
	var a answer
	for {
		a = f.post(t, c, http.MethodPost, webToken, requestBody(webCSR))
		if a.status != http.StatusInternalServerError || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.checkIssued(t, a, web, webKey, f.bundle)
	if a.proto != 2 {
		t.Errorf("answered over HTTP/%d, want HTTP/2", a.proto)
	}
	internalBefore := f.metrics.RefusedCount(meshapi.ReasonInternal)

	dbToken := f.token(t, appNS, "db", wellknown.IdentityTokenAudience)
	otherAudience := f.token(t, appNS, "web", "https://kubernetes.default.svc.cluster.local")
	otherCSR, _ := csr(t, []string{spiffeID("billing", "web")})
	dbCSR, _ := csr(t, []string{db})
	extraSANs, _ := csr(t, []string{web}, "web.shop.svc")
	twoURIs, _ := csr(t, []string{web, db})
	wrongTD, _ := csr(t, []string{"spiffe://evil.example/ns/shop/sa/web"})
	unknownField, _ := json.Marshal(map[string]string{"apiVersion": meshapi.APIVersion, "csr": string(webCSR), "identity": db})
	oldVersion, _ := json.Marshal(meshapi.CertificateRequest{APIVersion: "meshapi.meshctl.dev/v0", CSR: string(webCSR)})
	cases := []struct {
		name   string
		method string
		token  string
		body   []byte
		status int
		reason string
		msg    string
	}{
		{"token of another ServiceAccount", "POST", dbToken, requestBody(webCSR), 403, meshapi.ReasonWrongIdentity, "it asks for " + web + "; the token is for " + db},
		{"CSR for another namespace", "POST", webToken, requestBody(otherCSR), 403, meshapi.ReasonWrongIdentity, "asks for " + spiffeID("billing", "web")},
		{"CSR for another trust domain", "POST", webToken, requestBody(wrongTD), 403, meshapi.ReasonWrongIdentity, "asks for spiffe://evil.example"},
		{"CSR for another ServiceAccount", "POST", webToken, requestBody(dbCSR), 403, meshapi.ReasonWrongIdentity, "asks for " + db},
		{"CSR with a DNS SAN", "POST", webToken, requestBody(extraSANs), 403, meshapi.ReasonWrongIdentity, "DNS, IP or email SANs"},
		{"CSR with two URI SANs", "POST", webToken, requestBody(twoURIs), 403, meshapi.ReasonWrongIdentity, "2 URI SANs"},
		{"expired token", "POST", f.expired(t, webToken), requestBody(webCSR), 401, meshapi.ReasonUnauthenticated, "did not authenticate the token"},
		{"token with another audience", "POST", otherAudience, requestBody(webCSR), 401, meshapi.ReasonWrongAudience, wellknown.IdentityTokenAudience},
		{"forged token", "POST", webToken[:len(webToken)-6] + "AAAAAA", requestBody(webCSR), 401, meshapi.ReasonUnauthenticated, "did not authenticate"},
		{"missing token", "POST", "", requestBody(webCSR), 401, meshapi.ReasonUnauthenticated, "no bearer token"},
		{"GET", "GET", webToken, nil, 405, meshapi.ReasonBadRequest, "method GET not allowed"},
		{"not JSON", "POST", webToken, []byte("hello"), 400, meshapi.ReasonBadRequest, "decoding the request"},
		{"empty body", "POST", webToken, nil, 400, meshapi.ReasonBadRequest, "decoding the request"},
		{"two documents", "POST", webToken, append(requestBody(webCSR), requestBody(webCSR)...), 400, meshapi.ReasonBadRequest, "more than one JSON document"},
		{"unknown field", "POST", webToken, unknownField, 400, meshapi.ReasonBadRequest, `unknown field "identity"`},
		{"another apiVersion", "POST", webToken, oldVersion, 400, meshapi.ReasonBadRequest, "apiVersion"},
		{"no CSR", "POST", webToken, []byte(`{"apiVersion":"` + meshapi.APIVersion + `"}`), 400, meshapi.ReasonBadRequest, "csr: required"},
		{"CSR not PEM", "POST", webToken, requestBody([]byte("garbage")), 400, meshapi.ReasonBadRequest, "invalid certificate request: no PEM block"},
		{"body too large", "POST", webToken, bytes.Repeat([]byte(" "), identity.MaxRequestBytes+1), 413, meshapi.ReasonBadRequest, "exceeds"},
	}
	want := map[string]uint64{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := f.post(t, c, tc.method, tc.token, tc.body)
			if a.status != tc.status || a.err.Status != tc.status || a.err.Reason != tc.reason || !strings.Contains(a.err.Error, tc.msg) {
				t.Errorf("got %d %+v; want %d reason %q with %q", a.status, a.err, tc.status, tc.reason, tc.msg)
			}
		})
		want[tc.reason]++
	}
	for reason, n := range want {
		if reason == meshapi.ReasonInternal {
			n += internalBefore
		}
		if got := f.metrics.RefusedCount(reason); got != n {
			t.Errorf("refused{reason=%q} = %d, want %d", reason, got, n)
		}
	}
	if got := f.metrics.IssuedCount(); got != 1 {
		t.Errorf("issued = %d, want 1", got)
	}
	var m bytes.Buffer
	f.metrics.WriteMetrics(&m)
	for _, line := range []string{
		"meshctl_controller_certificates_issued_total 1",
		fmt.Sprintf(`meshctl_controller_certificate_requests_refused_total{reason="wrong-identity"} %d`, want[meshapi.ReasonWrongIdentity]),
		fmt.Sprintf("meshctl_controller_certificate_issuance_duration_seconds_count %d", 1+len(cases)+int(internalBefore)),
		fmt.Sprintf("meshctl_controller_identity_issuer_expiry_timestamp_seconds %d", f.bundle.Issuer().NotAfter.Unix()),
	} {
		if !strings.Contains(m.String(), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, m.String())
		}
	}
	logs := f.logs.String()
	for _, secret := range []string{webToken, dbToken, otherAudience, string(f.bundle.IssuerKeyPEM)} {
		if strings.Contains(logs, secret) || strings.Contains(logs, secret[20:60]) {
			t.Error("the logs contain a token or a key")
		}
	}
	if n := strings.Count(logs, "refused a certificate request"); n != len(cases)+int(internalBefore) {
		t.Errorf("%d refusals logged, want %d", n, len(cases)+int(internalBefore))
	}
}

func TestIssuanceWithoutTheRightToReviewTokens(t *testing.T) {
	f := setup(t)
	cfg, err := f.env.ServiceAccountConfig(context.Background(), appNS, "nobody")
	if err != nil {
		t.Fatal(err)
	}
	reviewer, err := identity.NewTokenReviewer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := *f.handler
	h.Reviewer = reviewer
	f.server.Handle("/unprivileged", &h)
	body := requestBody(must(csr(t, []string{spiffeID(appNS, "web")})))
	req, _ := http.NewRequest("POST", "https://"+f.server.Addr().String()+"/unprivileged", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.token(t, appNS, "web", wellknown.IdentityTokenAudience))
	resp, err := f.client(f.bundle.TrustAnchors).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e meshapi.Error
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != 500 || e.Reason != meshapi.ReasonInternal || !strings.Contains(e.Error, "could not review the token") {
		t.Errorf("got %d %+v, want 500 internal", resp.StatusCode, e)
	}
	if strings.Contains(e.Error, "forbidden") {
		t.Errorf("the answer leaks the API server's detail: %q", e.Error)
	}
	if !strings.Contains(f.logs.String(), "cannot create resource") {
		t.Errorf("the log does not say the review was forbidden:\n%s", f.logs.String())
	}
}

func must[T any, U any](a T, _ U) T { return a }

// A rotated identity (new anchors and issuer, written to the two mounts one
// after the other as the kubelet would) is used without a restart; in
// between, the mismatched pair is refused and the last good one kept.
func TestRotatedIdentityIsPickedUp(t *testing.T) {
	f := setup(t)
	web := spiffeID(appNS, "web")
	token := f.token(t, appNS, "web", wellknown.IdentityTokenAudience)
	next, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: trustDomain})
	if err != nil {
		t.Fatal(err)
	}
	testcert.WriteMountDir(t, f.issuerDir, map[string][]byte{identity.IssuerCertFile: next.IssuerCertPEM, identity.IssuerKeyFile: next.IssuerKeyPEM})
	if err := f.creds.Check(); err == nil || !strings.Contains(err.Error(), "does not chain to the trust anchors") {
		t.Errorf("Check with the new issuer and the old anchors: %v", err)
	}
	if b, err := f.creds.Bundle(); err != nil || !b.Issuer().Equal(f.bundle.Issuer()) {
		t.Errorf("the last good issuer is not in service: %v", err)
	}
	testcert.WriteMountDir(t, f.anchorsDir, map[string][]byte{identity.TrustAnchorsFile: next.TrustAnchorsPEM})
	csrPEM, key := csr(t, []string{web})
	var a answer
	deadline := time.Now().Add(30 * time.Second)
	for {
		a = f.post(t, f.client(next.TrustAnchors), "POST", token, requestBody(csrPEM))
		if a.status != http.StatusInternalServerError || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.checkIssued(t, a, web, key, next)
}

// BenchmarkIssuanceWithTokenReview is end-to-end through the handler: the
// real API server's TokenReview, CSR verification and signing, in
// parallel. The API server shares the machine's cores, so this measures the
// pair, not the controller alone; BenchmarkIssueWorkload in internal/pki
// is the controller's own CPU cost.
func BenchmarkIssuanceWithTokenReview(b *testing.B) {
	f := setup(b)
	token := f.token(b, appNS, "web", wellknown.IdentityTokenAudience)
	csrPEM, _ := csr(b, []string{spiffeID(appNS, "web")})
	body := requestBody(csrPEM)
	f.handler.Logger = slog.New(slog.DiscardHandler)
	// Wait for RBAC, as TestIssuance does.
	for range 150 {
		if serveOnce(f.handler, token, body) == http.StatusOK {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Proxies ask concurrently, and each request waits on the API server
	// for a while: keep more requests in flight than there are cores.
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code := serveOnce(f.handler, token, body); code != http.StatusOK {
				b.Errorf("status %d", code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(code int)        { r.code = code }

func serveOnce(h http.Handler, token string, body []byte) int {
	req, _ := http.NewRequest("POST", meshapi.PathCertificate, bytes.NewReader(body))
	req.RemoteAddr = (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}).String()
	req.Header.Set("Authorization", "Bearer "+token)
	w := &recorder{h: http.Header{}}
	h.ServeHTTP(w, req)
	return w.code
}
