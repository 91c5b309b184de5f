// Package webhook is the proxy injector's admission webhook: it answers the
// API server's AdmissionReview requests for pods being created with a JSON
// Patch that adds the proxy, computed from the injection the Injector makes.
//
// It fails open: when the mesh itself is in trouble (no valid MeshConfig
// yet, an injection that fails) the pod is allowed unchanged and the reason
// logged, so that the mesh never blocks a workload on its own account. The
// webhook configuration's failurePolicy decides only what happens when the
// API server cannot reach the webhook at all.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/meshconfig"
)

// Path is where the webhook is served; the MutatingWebhookConfiguration's
// clientConfig names it.
const Path = "/inject"

// MaxRequestBytes bounds a request body. The API server accepts objects of
// up to 3 MiB, and a review carries the object (and, on updates, the old
// one) with some escaping.
const MaxRequestBytes = 7 << 20

// PodRequest is one pod handed to injection.
type PodRequest struct {
	// Namespace is the namespace of the request: a pod being created often
	// carries none in its own metadata.
	Namespace string
	// Pod is the pod as the API server sent it, a JSON document.
	Pod []byte
	// Config is the current mesh-wide configuration.
	Config meshconfig.Spec
}

// Decision is what injection made of one pod.
type Decision struct {
	// Skipped says why the pod is left as it is (opted out, host network,
	// another mesh's sidecar, ...); empty when the pod was injected.
	Skipped string
	// Pod is the injected pod, a JSON document; unused when Skipped is set.
	Pod []byte
	// Warnings are shown to the pod's creator (a Job's pod whose classic
	// sidecar will keep it from completing).
	Warnings []string
}

// Injector injects the proxy into one pod. It must be safe for concurrent
// use and report a pod it deliberately leaves alone as Skipped, not as an
// error.
type Injector func(context.Context, PodRequest) (Decision, error)

// Handler answers AdmissionReview requests (admission.k8s.io/v1) on POST.
// Its fields must be set before the first request and not changed after.
type Handler struct {
	// Inject injects one pod.
	Inject Injector
	// Config returns the current mesh-wide configuration, or an error
	// saying why there is none.
	Config func() (meshconfig.Spec, error)
	// Logger hears about every decision.
	Logger *slog.Logger
	// Metrics, if set, counts requests by result.
	Metrics *Metrics
	// Now measures request durations; nil means time.Now.
	Now func() time.Time
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// errInvalid marks a request the webhook refuses with an HTTP status.
type errInvalid struct {
	status int
	msg    string
}

func (e *errInvalid) Error() string { return e.msg }

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	review, err := readReview(w, r)
	if err != nil {
		var inv *errInvalid
		if !errors.As(err, &inv) {
			inv = &errInvalid{status: http.StatusBadRequest, msg: err.Error()}
		}
		if inv.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		h.Logger.Warn("refusing webhook request", "remote", r.RemoteAddr, "status", inv.status, "error", inv.msg)
		http.Error(w, inv.msg, inv.status)
		h.observe(Invalid, start)
		return
	}
	resp, result := h.admit(r.Context(), review.Request)
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	body, err := json.Marshal(out)
	if err != nil {
		// Cannot happen with these types; the API server then applies
		// the failurePolicy.
		h.Logger.Error("encoding the admission response", "uid", review.Request.UID, "error", err)
		http.Error(w, "encoding the admission response", http.StatusInternalServerError)
		h.observe(Error, start)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
	h.observe(result, start)
}

func (h *Handler) observe(r Result, start time.Time) {
	if h.Metrics != nil {
		h.Metrics.Observe(r, h.now().Sub(start))
	}
}

// readReview reads and checks the request down to a review with a request.
func readReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, error) {
	if r.Method != http.MethodPost {
		return nil, &errInvalid{http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed: use POST", r.Method)}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, &errInvalid{http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q not supported: use application/json", ct)}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &errInvalid{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooLarge.Limit)}
		}
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decoding the AdmissionReview: %w", err)
	}
	if gvk := review.GroupVersionKind(); gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
		return nil, fmt.Errorf("decoding the AdmissionReview: got apiVersion %q kind %q, want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, fmt.Errorf("decoding the AdmissionReview: no request")
	}
	if review.Request.UID == "" {
		return nil, fmt.Errorf("decoding the AdmissionReview: request without uid")
	}
	return &review, nil
}

// admit decides one admission request. Every answer allows the object.
func (h *Handler) admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Result) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	log := h.Logger.With("uid", req.UID, "namespace", req.Namespace, "pod", podName(req))
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		log.Info("allowing unchanged", "reason", "not a pod creation", "resource", req.Resource.Resource, "subresource", req.SubResource, "operation", req.Operation)
		return resp, Skipped
	}
	fail := func(err error) (*admissionv1.AdmissionResponse, Result) {
		log.Error("allowing unchanged: the proxy was not injected", "error", err)
		// Shown by kubectl, so the pod's author learns why it has no proxy.
		// The API server refuses warnings with control characters.
		resp.Warnings = []string{strings.Join(strings.Fields("meshctl: the proxy was not injected: "+err.Error()), " ")}
		return resp, Error
	}
	cfg, err := h.Config()
	if err != nil {
		return fail(err)
	}
	decision, err := h.Inject(ctx, PodRequest{Namespace: req.Namespace, Pod: req.Object.Raw, Config: cfg})
	if err != nil {
		return fail(fmt.Errorf("injecting: %w", err))
	}
	if decision.Skipped != "" {
		log.Info("allowing unchanged", "reason", decision.Skipped)
		return resp, Skipped
	}
	ops, err := Diff(req.Object.Raw, decision.Pod)
	if err != nil {
		return fail(fmt.Errorf("computing the patch: %w", err))
	}
	if len(ops) == 0 {
		log.Info("allowing unchanged", "reason", "injection changed nothing")
		return resp, Skipped
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return fail(fmt.Errorf("encoding the patch: %w", err))
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	for _, w := range decision.Warnings {
		resp.Warnings = append(resp.Warnings, strings.Join(strings.Fields("meshctl: "+w), " "))
	}
	log.Info("injected the proxy", "operations", len(ops))
	return resp, Injected
}

// podName names the pod for logs: pods created by controllers have only a
// generateName when admitted.
func podName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	var meta struct {
		Metadata struct {
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	if json.Unmarshal(req.Object.Raw, &meta) == nil && meta.Metadata.GenerateName != "" {
		return meta.Metadata.GenerateName + "*"
	}
	return ""
}
