package controller

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/meshctl/mesh/internal/controller/meshapiserver"
	"github.com/meshctl/mesh/internal/controller/testcert"
	"github.com/meshctl/mesh/internal/controller/webhook"
	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

// TestControllerIssuesCertificates runs the whole controller with the mesh
// API on, as the chart's ServiceAccount with all the chart's RBAC, and gets
// a certificate through it: the wiring of identity issuance into readiness,
// metrics and shutdown. The refusals are tested in internal/controller/identity.
func TestControllerIssuesCertificates(t *testing.T) {
	env := testenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const meshNS = "ctrl-meshapi"
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	ca := testcert.NewCA(t)
	certPEM, keyPEM := ca.Serving(t, 2, time.Now().Add(time.Hour))
	manifest, err := render.Render(render.Options{
		Namespace: meshNS,
		Identity:  render.Identity{TrustAnchorsPEM: ident.TrustAnchorsPEM, IssuerCertPEM: ident.IssuerCertPEM, IssuerKeyPEM: ident.IssuerKeyPEM},
		Webhook:   render.Webhook{CABundlePEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM},
		Version:   "v0.0.0-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{
		"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	}
	apply := func(kind, ns, name string) {
		t.Helper()
		o := manifest.Find(kind, ns, name)
		if o == nil {
			t.Fatalf("the chart renders no %s %s/%s", kind, ns, name)
		}
		o = o.DeepCopy()
		if gvr, ok := gvrs[kind]; ok {
			// Shared by the tests of this binary; the binding names this
			// test's namespace.
			dyn.Resource(gvr).Delete(ctx, name, metav1.DeleteOptions{})
			if _, err := dyn.Resource(gvr).Create(ctx, o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			return
		}
		create(ctx, t, dyn, o)
	}
	create(ctx, t, dyn, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": meshNS}}})
	for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding"} {
		apply(kind, meshNS, wellknown.ControllerName)
	}
	apply("ClusterRole", "", wellknown.ControllerName)
	apply("ClusterRoleBinding", "", wellknown.ControllerName)
	for _, crd := range manifest.CRDs() {
		if _, err := dyn.Resource(resources["CustomResourceDefinition"]).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	asController, err := env.ServiceAccountConfig(ctx, meshNS, wellknown.ControllerName)
	if err != nil {
		t.Fatal(err)
	}

	base := t.TempDir()
	tlsDir, issuerDir, anchorsDir := filepath.Join(base, "webhook"), filepath.Join(base, "issuer"), filepath.Join(base, "anchors")
	for _, d := range []string{tlsDir, issuerDir, anchorsDir} {
		os.Mkdir(d, 0o700)
	}
	testcert.WriteSecretDir(t, tlsDir, certPEM, keyPEM)
	testcert.WriteMountDir(t, anchorsDir, map[string][]byte{"ca-bundle.crt": ident.TrustAnchorsPEM})
	var logs testenv.Output
	defer func() {
		if t.Failed() {
			t.Logf("controller logs:\n%s", logs.String())
		}
	}()
	c, err := New(Options{
		MeshNamespace: meshNS, WebhookAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0", WebhookTLSDir: tlsDir,
		MeshAPIAddress: "127.0.0.1:0", IdentityIssuerDir: issuerDir, TrustAnchorsDir: anchorsDir,
		Kube: asController, Inject: webhook.NewInjector(meshNS, "v0.0.0-test", webhook.Static{}),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// Longer than the test waits below: a discovery stream must not
		// hold the shutdown until this timeout.
		ShutdownTimeout: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	admin := "http://" + c.AdminAddr().String()

	// Without the issuer's Secret mounted, readiness says so.
	create(ctx, t, dyn, manifest.Find("MeshConfig", meshNS, wellknown.MeshConfigName).DeepCopy())
	eventually(t, time.Minute, "readiness without the issuer", func() error {
		code, body, err := httpGet(admin + "/ready")
		if err == nil && (code != 503 || !strings.Contains(body, "identity issuer: loading the identity issuer: stat "+issuerDir) ||
			!strings.Contains(body, "mesh API certificate: ") || strings.Contains(body, "meshconfig")) {
			err = fmt.Errorf("/ready: %d %q", code, body)
		}
		return err
	})
	testcert.WriteMountDir(t, issuerDir, map[string][]byte{"tls.crt": ident.IssuerCertPEM, "tls.key": ident.IssuerKeyPEM})
	eventually(t, 30*time.Second, "waiting for /ready", func() error {
		code, body, err := httpGet(admin + "/ready")
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})

	// A proxy's request, verifying the controller as a proxy does.
	token, err := env.ServiceAccountToken(ctx, meshNS, "web", authenticationv1.TokenRequestSpec{Audiences: []string{wellknown.IdentityTokenAudience}})
	if err != nil {
		t.Fatal(err)
	}
	id := "spiffe://cluster.local/ns/" + meshNS + "/sa/web"
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(meshapi.CertificateRequest{APIVersion: meshapi.APIVersion, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ident.TrustAnchorsPEM)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: meshapiserver.DNSNames(meshNS)[1], MinVersion: tls.VersionTLS13,
	}}}
	var resp meshapi.CertificateResponse
	eventually(t, 30*time.Second, "issuing a certificate", func() error { // RBAC reaches the authorizer's cache a moment after the binding
		req, _ := http.NewRequest("POST", "https://"+c.MeshAPIAddr().String()+meshapi.PathCertificate, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		r, err := client.Do(req)
		if err != nil {
			return err
		}
		defer r.Body.Close()
		if r.StatusCode != 200 {
			var e meshapi.Error
			json.NewDecoder(r.Body).Decode(&e)
			return fmt.Errorf("%d %+v", r.StatusCode, e)
		}
		{
			want := "spiffe://cluster.local/ns/" + meshNS + "/sa/" + wellknown.ControllerServiceAccount
			if got, err := pki.SPIFFEIDOf(r.TLS.PeerCertificates[0]); err != nil || got != want {
				t.Errorf("the controller presents %q, %v; want %q", got, err, want)
			}
		}
		return json.NewDecoder(r.Body).Decode(&resp)
	})
	if resp.Identity != id || !strings.Contains(resp.CertificateChain, "BEGIN CERTIFICATE") {
		t.Errorf("response %+v", resp)
	}
	_, metrics, err := httpGet(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	promtexttest.Parse(t, metrics)
	for _, want := range []string{
		"meshctl_controller_certificates_issued_total 1\n",
		fmt.Sprintf("meshctl_controller_identity_issuer_expiry_timestamp_seconds %d\n", ident.Issuer().NotAfter.Unix()),
		"meshctl_controller_meshapi_certificate_expiry_timestamp_seconds 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A proxy's discovery stream, with the certificate it got.
	proxyKeyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.CertificateChain), proxyKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := client.Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsConfig.Certificates = []tls.Certificate{cert}
	client = &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: tlsConfig}}
	hello, _ := json.Marshal(meshapi.ClientMessage{Hello: &meshapi.Hello{APIVersion: meshapi.APIVersion, ProxyVersion: "test"}})
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(append(hello, '\n'))
	stream, err := client.Post("https://"+c.MeshAPIAddr().String()+meshapi.PathDiscovery, meshapi.ContentType, pr)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != 200 {
		b, _ := io.ReadAll(stream.Body)
		t.Fatalf("discovery stream: %d %s", stream.StatusCode, b)
	}
	streamEnded := make(chan struct{})
	go func() { io.Copy(io.Discard, stream.Body); close(streamEnded) }()

	// Shutting down ends the stream (the proxy reconnects to another
	// replica) rather than waiting for it until ShutdownTimeout.
	stop()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute after the context ended: the open discovery stream held it")
	}
	select {
	case <-streamEnded:
	case <-time.After(10 * time.Second):
		t.Error("the discovery stream is still open after Run returned")
	}
}
