package identity_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/controller/identity"
	"github.com/meshctl/mesh/internal/controller/testcert"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

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
	promtexttest.Parse(t, m.String())
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
	t.Run("a pod-bound token names its pod in the log", func(t *testing.T) {
		kube := f.env.Clientset()
		pod, err := kube.CoreV1().Pods(appNS).Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "registry.example/web:1"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer kube.CoreV1().Pods(appNS).Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
		token, err := f.env.ServiceAccountToken(context.Background(), appNS, "web", authenticationv1.TokenRequestSpec{
			Audiences:      []string{wellknown.IdentityTokenAudience},
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		})
		if err != nil {
			t.Fatal(err)
		}
		csrPEM, key := csr(t, []string{web})
		f.checkIssued(t, f.post(t, c, "POST", token, requestBody(csrPEM)), web, key, f.bundle)
		if want := "serviceAccount=\"shop/web (pod shop/web-0)\""; !strings.Contains(f.logs.String(), want) {
			t.Errorf("no log line says %s", want)
		}
	})
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
	h := &identity.Handler{Reviewer: reviewer, Credentials: f.handler.Credentials, Config: f.handler.Config,
		Logger: f.handler.Logger, Metrics: f.handler.Metrics, Limits: f.handler.Limits}
	f.server.Handle("/unprivileged", h)
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
