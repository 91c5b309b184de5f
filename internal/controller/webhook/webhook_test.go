package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshctl/mesh/internal/inject"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/wellknown"
)

const testPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","namespace":"shop","annotations":{"a/b":"c"}},"spec":{"containers":[{"name":"app","image":"shop/web:1","resources":{"limits":{"cpu":"1.5"}}}]}}`

// markingInjector stands in for the injection library in the tests of the
// handler's plumbing: it adds an annotation and a container, or skips pods
// that opt out, so the tests can tell what the patch carried.
func markingInjector(_ context.Context, req PodRequest) (Decision, error) {
	var pod map[string]any
	if err := json.Unmarshal(req.Pod, &pod); err != nil {
		return Decision{}, err
	}
	meta := pod["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	if ann["meshctl.dev/inject"] == "disabled" {
		return Decision{Skipped: "opted out by annotation meshctl.dev/inject=disabled"}, nil
	}
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	ann["meshctl.dev/injected"] = `{"image":"` + req.Config.Proxy.Image + `"}`
	spec := pod["spec"].(map[string]any)
	spec["containers"] = append(spec["containers"].([]any), map[string]any{"name": "meshproxy", "image": req.Config.Proxy.Image})
	out, err := json.Marshal(pod)
	return Decision{Pod: out}, err
}

func review(t *testing.T, mutate func(*admissionv1.AdmissionRequest)) []byte {
	t.Helper()
	req := &admissionv1.AdmissionRequest{
		UID:       "7c0c7c0c-0000-4000-8000-000000000001",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "shop",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: []byte(testPod)},
	}
	if mutate != nil {
		mutate(req)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestHandler(t *testing.T) {
	cfg := meshconfig.Default("ghcr.io/meshctl/meshproxy:v1")
	withAnnotation := func(r *admissionv1.AdmissionRequest) {
		r.Object.Raw = []byte(strings.Replace(testPod, `"a/b":"c"`, `"meshctl.dev/inject":"disabled"`, 1))
	}
	tests := []struct {
		name    string
		body    []byte
		method  string
		ctype   string
		config  error // from the MeshConfig source
		inject  Injector
		status  int
		result  Result
		patched bool
		warning string
	}{
		{name: "pod created is injected", body: review(t, nil), status: 200, result: Injected, patched: true},
		{name: "opted-out pod is allowed unchanged", body: review(t, withAnnotation), status: 200, result: Skipped},
		{name: "deployment is allowed unchanged", body: review(t, func(r *admissionv1.AdmissionRequest) {
			r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
			r.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		}), status: 200, result: Skipped},
		{name: "pod update is allowed unchanged", body: review(t, func(r *admissionv1.AdmissionRequest) {
			r.Operation = admissionv1.Update
		}), status: 200, result: Skipped},
		{name: "pod subresource is allowed unchanged", body: review(t, func(r *admissionv1.AdmissionRequest) {
			r.SubResource = "binding"
		}), status: 200, result: Skipped},
		{name: "no MeshConfig yet allows unchanged with a warning", body: review(t, nil), config: errors.New("no valid MeshConfig seen yet"),
			status: 200, result: Error, warning: "meshctl: the proxy was not injected: no valid MeshConfig seen yet"},
		{name: "injection failure allows unchanged with a warning", body: review(t, nil),
			inject: func(context.Context, PodRequest) (Decision, error) {
				return Decision{}, errors.New("boom\n\tat line 2")
			},
			status: 200, result: Error, warning: "meshctl: the proxy was not injected: injecting: boom at line 2"},
		{name: "injected document that is not an object allows unchanged", body: review(t, nil),
			inject: func(context.Context, PodRequest) (Decision, error) { return Decision{Pod: []byte(`[]`)}, nil },
			status: 200, result: Error, warning: "meshctl: the proxy was not injected: computing the patch: diffing documents: both must be JSON objects"},
		{name: "malformed JSON is a bad request", body: []byte(`{"apiVersion":`), status: 400, result: Invalid},
		{name: "other kind is a bad request", body: []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`), status: 400, result: Invalid},
		{name: "review without request is a bad request", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), status: 400, result: Invalid},
		{name: "request without uid is a bad request", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), status: 400, result: Invalid},
		{name: "GET is not allowed", method: http.MethodGet, status: 405, result: Invalid},
		{name: "YAML is not supported", body: review(t, nil), ctype: "application/yaml", status: 415, result: Invalid},
		{name: "oversized body is refused", body: bytes.Repeat([]byte(" "), MaxRequestBytes+1), status: 413, result: Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m := &Metrics{}
			h := &Handler{
				Inject:  markingInjector,
				Config:  func() (meshconfig.Spec, error) { return cfg, tt.config },
				Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
				Metrics: m,
			}
			if tt.inject != nil {
				h.Inject = tt.inject
			}
			method, ctype := http.MethodPost, "application/json"
			if tt.method != "" {
				method = tt.method
			}
			if tt.ctype != "" {
				ctype = tt.ctype
			}
			r := httptest.NewRequest(method, Path, bytes.NewReader(tt.body))
			r.Header.Set("Content-Type", ctype)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if got := m.Count(tt.result); got != 1 {
				t.Errorf("requests counted as %s: %d, want 1; logs:\n%s", tt.result, got, logs.String())
			}
			if tt.status != 200 {
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatalf("decoding the response: %v", err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
				t.Errorf("response type %s %s", out.APIVersion, out.Kind)
			}
			resp := out.Response
			if resp == nil || resp.UID != "7c0c7c0c-0000-4000-8000-000000000001" || !resp.Allowed {
				t.Fatalf("response %+v: want allowed with the request's uid", resp)
			}
			if got := strings.Join(resp.Warnings, "\n"); got != tt.warning {
				t.Errorf("warnings %q, want %q", got, tt.warning)
			}
			if !tt.patched {
				if resp.Patch != nil || resp.PatchType != nil {
					t.Errorf("patch %s, want none", resp.Patch)
				}
				return
			}
			if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
			}
			want, err := markingInjector(context.Background(), PodRequest{Pod: []byte(testPod), Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			assertPatchYields(t, []byte(testPod), resp.Patch, want.Pod)
		})
	}
}

// assertPatchYields applies patch to doc as the API server does (with the
// same JSON Patch library) and compares the result with want.
func assertPatchYields(t *testing.T, doc, patch, want []byte) {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decoding the patch %s: %v", patch, err)
	}
	got, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("applying the patch %s: %v", patch, err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("patched document\n%s\nwant\n%s\npatch %s", got, want, patch)
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name, from, to, patch string
	}{
		{"unchanged", `{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, `[]`},
		{"member added under an escaped key", `{"metadata":{}}`, `{"metadata":{"annotations":{"meshctl.dev/x~y":"1"}}}`,
			`[{"op":"add","path":"/metadata/annotations","value":{"meshctl.dev/x~y":"1"}}]`},
		{"member added to an existing object", `{"m":{"a/b":"1"}}`, `{"m":{"a/b":"1","c/d~":"2"}}`,
			`[{"op":"add","path":"/m/c~1d~0","value":"2"}]`},
		{"member removed", `{"m":{"a":1,"b":2}}`, `{"m":{"a":1}}`, `[{"op":"remove","path":"/m/b"}]`},
		{"array replaced whole", `{"s":{"c":[{"n":"app"}]}}`, `{"s":{"c":[{"n":"init"},{"n":"app"}]}}`,
			`[{"op":"replace","path":"/s/c","value":[{"n":"init"},{"n":"app"}]}]`},
		{"null kept as a value", `{"a":1}`, `{"a":null}`, `[{"op":"replace","path":"/a","value":null}]`},
		{"numbers kept as written", `{"a":1}`, `{"a":12345678901234567890}`, `[{"op":"replace","path":"/a","value":12345678901234567890}]`},
		{"type change", `{"a":{"b":1}}`, `{"a":"x"}`, `[{"op":"replace","path":"/a","value":"x"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := Diff([]byte(tt.from), []byte(tt.to))
			if err != nil {
				t.Fatal(err)
			}
			if ops == nil {
				ops = []Operation{}
			}
			got, err := json.Marshal(ops)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.patch {
				t.Errorf("patch\n%s\nwant\n%s", got, tt.patch)
			}
			assertPatchYields(t, []byte(tt.from), got, []byte(tt.to))
		})
	}
	if _, err := Diff([]byte(`{}`), []byte(`{} {}`)); err == nil {
		t.Error("trailing data: no error")
	}
}

func TestMetricsText(t *testing.T) {
	m := &Metrics{}
	m.Observe(Injected, 2_000_000) // 2 ms
	m.Observe(Skipped, 20_000_000)
	var b strings.Builder
	if err := m.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`meshctl_controller_webhook_requests_total{result="injected"} 1`,
		`meshctl_controller_webhook_requests_total{result="error"} 0`,
		`meshctl_controller_webhook_request_duration_seconds_bucket{le="0.001"} 0`,
		`meshctl_controller_webhook_request_duration_seconds_bucket{le="0.0025"} 1`,
		`meshctl_controller_webhook_request_duration_seconds_bucket{le="0.025"} 2`,
		`meshctl_controller_webhook_request_duration_seconds_bucket{le="+Inf"} 2`,
		`meshctl_controller_webhook_request_duration_seconds_sum 0.022`,
		`meshctl_controller_webhook_request_duration_seconds_count 2`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	promtexttest.Parse(t, b.String())
}

// TestHandlerWithInjection runs the handler with the real injection: the
// patch must apply as the API server applies it and yield the injected pod.
func TestHandlerWithInjection(t *testing.T) {
	cfg := meshconfig.Default("ghcr.io/meshctl/meshproxy:v1")
	const meshNS = "meshctl-system"
	podWithoutNamespace := strings.Replace(testPod, `"namespace":"shop",`, "", 1)
	tests := []struct {
		name      string
		namespace string
		pod       string
		skipped   string // part of the logged reason; empty: injected
	}{
		{name: "pod without a namespace in its metadata", namespace: "shop", pod: podWithoutNamespace},
		{name: "pod with its namespace", namespace: "shop",
			pod: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"shop","labels":{"app":"db"}},"spec":{"terminationGracePeriodSeconds":45,"containers":[{"name":"db","image":"postgres:17","ports":[{"containerPort":5432}]}],"volumes":[{"name":"data","emptyDir":{}}]}}`},
		{name: "opted-out pod", namespace: "shop", skipped: "opted out",
			pod: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"job","annotations":{"meshctl.dev/inject":"disabled"}},"spec":{"containers":[{"name":"job","image":"job:1"}]}}`},
		{name: "host network pod", namespace: "shop", skipped: "hostNetwork",
			pod: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"agent"},"spec":{"hostNetwork":true,"containers":[{"name":"agent","image":"agent:1"}]}}`},
		{name: "pod with another mesh's sidecar", namespace: "shop", skipped: "istio-proxy",
			pod: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"old"},"spec":{"containers":[{"name":"app","image":"app:1"},{"name":"istio-proxy","image":"istio/proxyv2"}]}}`},
		{name: "pod in the mesh namespace", namespace: meshNS, skipped: "control-plane namespace", pod: podWithoutNamespace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m := &Metrics{}
			h := &Handler{
				Inject:  NewInjector(meshNS, "v1.2.3", Static{Anchors: testAnchors(t)}),
				Config:  func() (meshconfig.Spec, error) { return cfg, nil },
				Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
				Metrics: m,
			}
			body := review(t, func(r *admissionv1.AdmissionRequest) {
				r.Namespace = tt.namespace
				r.Object.Raw = []byte(tt.pod)
			})
			r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || w.Code != 200 || out.Response == nil || !out.Response.Allowed {
				t.Fatalf("status %d, response %s, error %v", w.Code, w.Body, err)
			}
			resp := out.Response
			if tt.skipped != "" {
				if resp.Patch != nil || m.Count(Skipped) != 1 {
					t.Errorf("patch %s, skipped %d; want no patch, skipped", resp.Patch, m.Count(Skipped))
				}
				if !strings.Contains(logs.String(), tt.skipped) {
					t.Errorf("the logs do not say why (%q):\n%s", tt.skipped, logs.String())
				}
				return
			}
			if m.Count(Injected) != 1 || resp.Patch == nil {
				t.Fatalf("not injected; logs:\n%s", logs.String())
			}
			p, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := p.Apply([]byte(tt.pod))
			if err != nil {
				t.Fatalf("applying the patch %s: %v", resp.Patch, err)
			}
			want, err := h.Inject(context.Background(), PodRequest{Namespace: tt.namespace, Pod: []byte(tt.pod), Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			assertPatchYields(t, []byte(tt.pod), resp.Patch, want.Pod)
			var pod corev1.Pod
			if err := json.Unmarshal(patched, &pod); err != nil {
				t.Fatalf("the patched pod does not decode: %v", err)
			}
			var names []string
			for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
				names = append(names, c.Name)
			}
			if got := strings.Join(names, ","); !strings.Contains(got, wellknown.InitContainerName) || !strings.Contains(got, wellknown.ProxyContainerName+",") {
				t.Errorf("containers of the patched pod: %s", got)
			}
			if pod.Namespace != "" && !strings.Contains(tt.pod, `"namespace"`) {
				t.Errorf("the patch sets the namespace %q", pod.Namespace)
			}
			if _, ok := pod.Annotations[wellknown.AnnotationInjected]; !ok {
				t.Errorf("no %s annotation", wellknown.AnnotationInjected)
			}
		})
	}
}

// testAnchors are the inject fixtures' trust anchors.
func testAnchors(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "inject", "testdata", "trust-anchors.pem"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := inject.ParseTrustAnchors(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestJobPodsAndTrustAnchors runs the real injection on a pod that a Job
// created: a native sidecar where the server has them, a classic one with a
// warning to the creator where not; and no injection, with a warning, while
// the trust anchors cannot be read.
func TestJobPodsAndTrustAnchors(t *testing.T) {
	cfg := meshconfig.Default("ghcr.io/meshctl/meshproxy:v1")
	const jobPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"once-","ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"once","uid":"u","controller":true}]},"spec":{"restartPolicy":"Never","containers":[{"name":"work","image":"busybox"}]}}`
	anchors := testAnchors(t)
	for _, tt := range []struct {
		name    string
		cluster Cluster
		native  bool
		warning string
		result  Result
	}{
		{"new server", Static{Anchors: anchors, Version: "v1.33.1"}, true, "", Injected},
		{"old server", Static{Anchors: anchors, Version: "v1.28.3"}, false, "so the Job's pod will not complete", Injected},
		{"no anchors", Static{}, false, "no trust anchors: the proxy could not verify the controller", Error},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{
				Inject: NewInjector("meshctl-system", "v1.2.3", tt.cluster),
				Config: func() (meshconfig.Spec, error) { return cfg, nil },
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			resp, result := h.admit(context.Background(), &admissionv1.AdmissionRequest{
				UID: "u", Namespace: "shop", Operation: admissionv1.Create,
				Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
				Object:   runtime.RawExtension{Raw: []byte(jobPod)},
			})
			if result != tt.result {
				t.Fatalf("result %v, want %v (warnings %v)", result, tt.result, resp.Warnings)
			}
			if w := strings.Join(resp.Warnings, "\n"); tt.warning == "" && w != "" || !strings.Contains(w, tt.warning) {
				t.Errorf("warnings %q, want %q", w, tt.warning)
			}
			if result != Injected {
				return
			}
			p, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := p.Apply([]byte(jobPod))
			if err != nil {
				t.Fatal(err)
			}
			var pod corev1.Pod
			if err := json.Unmarshal(patched, &pod); err != nil {
				t.Fatal(err)
			}
			native := false
			for _, c := range pod.Spec.InitContainers {
				if c.Name == wellknown.ProxyContainerName && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
					native = true
				}
			}
			if native != tt.native {
				t.Errorf("native sidecar %t, want %t", native, tt.native)
			}
		})
	}
}
