// Package identity is the controller's certificate authority for proxies:
// the handler of meshapi.PathCertificate, which exchanges a projected
// ServiceAccount token (audience wellknown.IdentityTokenAudience) and a CSR
// for a workload certificate naming that ServiceAccount's SPIFFE id, and the
// Credentials it signs with, re-read from mounted files when they change.
//
// The token is checked by the API server (TokenReview), never by the
// controller itself, so that revocation (a deleted ServiceAccount or pod)
// and key rotation are the API server's business. Neither the token nor
// any key is ever logged.
package identity

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

// MaxRequestBytes bounds a certificate request's body: a CSR with an RSA
// 4096 key is under 2 KiB.
const MaxRequestBytes = 64 << 10

// readTimeout bounds the time to receive a request's body; the mesh API
// server has no read timeout of its own because the discovery stream is
// long-lived.
const readTimeout = 10 * time.Second

// DefaultCertificateLifetime is used when the MeshConfig gives none.
const DefaultCertificateLifetime = 24 * time.Hour

// BundleSource gives the issuer and anchors in service; Credentials is one.
type BundleSource interface {
	Bundle() (*pki.IdentityBundle, error)
}

// Handler answers certificate requests. Set its fields before serving and
// do not change them after.
type Handler struct {
	// Reviewer checks bearer tokens.
	Reviewer TokenReviewer
	// Credentials gives the issuer that signs and the anchors returned as
	// the bundle.
	Credentials BundleSource
	// Config gives the mesh's trust domain and certificate lifetime.
	Config func() (meshconfig.Spec, error)
	// Logger hears about every request.
	Logger *slog.Logger
	// Metrics counts them.
	Metrics *Metrics
	// Limits bound the requests worked on at once and per second, per
	// peer and in total; the zero value means the Default* values.
	Limits Limits
	// Now is the clock of the rate limits; nil means time.Now.
	Now func() time.Time

	admissionOnce sync.Once
	admission     *admission
}

var _ http.Handler = (*Handler)(nil)

// refusal is a request answered with a meshapi.Error.
type refusal struct {
	status int
	reason string
	msg    string // for the client
	err    error  // for the log, with the detail; nil means msg
	who    string // the token's ServiceAccount, "namespace/name", once known
	// retryAfter, when set, is sent as Retry-After (whole seconds).
	retryAfter time.Duration
}

func (r *refusal) Error() string { return r.msg }

func refuse(status int, reason, format string, args ...any) *refusal {
	return &refusal{status: status, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	log := h.Logger.With("remote", r.RemoteAddr)
	resp, ref := h.issue(w, r)
	if ref != nil {
		if ref.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		if ref.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ref.retryAfter.Seconds()))))
		}
		detail := ref.msg
		if ref.err != nil {
			detail = ref.err.Error()
		}
		level := slog.LevelWarn
		switch ref.reason {
		case meshapi.ReasonInternal:
			level = slog.LevelError
		case ReasonRateLimited, ReasonBusy:
			// A flood must not become a flood of log lines: the
			// refusals counter tells.
			level = slog.LevelDebug
		}
		if ref.who != "" {
			log = log.With("serviceAccount", ref.who)
		}
		log.Log(r.Context(), level, "refused a certificate request", "reason", ref.reason, "status", ref.status, "error", detail)
		writeJSON(w, ref.status, meshapi.Error{APIVersion: meshapi.APIVersion, Status: ref.status, Reason: ref.reason, Error: ref.msg})
		h.Metrics.Refused(ref.reason, time.Since(began))
		return
	}
	writeJSON(w, http.StatusOK, resp.CertificateResponse)
	took := time.Since(began)
	h.Metrics.Issued(took)
	log.Info("issued a certificate", "identity", resp.Identity, "serviceAccount", resp.who,
		"notAfter", resp.NotAfter.UTC().Format(time.RFC3339), "took", took.String())
}

func (h *Handler) issue(w http.ResponseWriter, r *http.Request) (*issued, *refusal) {
	if r.Method != http.MethodPost {
		return nil, refuse(http.StatusMethodNotAllowed, meshapi.ReasonBadRequest, "method %s not allowed: certificate requests are POST", r.Method)
	}
	token, ok := bearerToken(r)
	if !ok {
		return nil, refuse(http.StatusUnauthorized, meshapi.ReasonUnauthenticated, "no bearer token: send the projected ServiceAccount token (audience %s) as \"Authorization: Bearer <token>\"", audience)
	}
	req, ref := readRequest(w, r)
	if ref != nil {
		return nil, ref
	}
	// Admitted only once the body is read, so that a slow sender holds
	// no slot; the budget is spent before the TokenReview, so that a
	// flood does not reach the API server.
	h.admissionOnce.Do(func() { h.admission = newAdmission(h.Limits, h.Now) })
	slot, no := h.admission.admit(peerKey(token, r.RemoteAddr), r.Context().Done())
	if no != nil {
		status := http.StatusTooManyRequests
		if no.reason == ReasonBusy {
			status = http.StatusServiceUnavailable
		}
		return nil, &refusal{status: status, reason: no.reason, msg: no.msg, retryAfter: no.retryAfter}
	}
	defer slot.done()

	status, err := h.Reviewer.Review(r.Context(), token)
	if err != nil {
		return nil, &refusal{status: http.StatusInternalServerError, reason: meshapi.ReasonInternal, msg: "the controller could not review the token", err: err}
	}
	if !status.Authenticated {
		if auds := claimedAudiences(token); auds != nil && !hasAudience(auds) {
			return nil, refuse(http.StatusUnauthorized, meshapi.ReasonWrongAudience, "the token is for audiences %q, not %q", auds, audience)
		}
		return nil, refuse(http.StatusUnauthorized, meshapi.ReasonUnauthenticated, "the API server did not authenticate the token: %s", status.Error)
	}
	if !hasAudience(status.Audiences) {
		return nil, refuse(http.StatusUnauthorized, meshapi.ReasonWrongAudience, "the token is valid for audiences %q, not %q", status.Audiences, audience)
	}
	ns, sa, ok := serviceAccountOf(status.User.Username)
	if !ok {
		return nil, refuse(http.StatusForbidden, meshapi.ReasonWrongIdentity, "the token belongs to %q, not to a ServiceAccount", status.User.Username)
	}
	resp, ref := h.sign(req, ns, sa)
	who := ns + "/" + sa
	// A pod-bound token (what the kubelet projects) names its pod.
	if pod := status.User.Extra[podNameExtra]; len(pod) == 1 {
		who += " (pod " + ns + "/" + pod[0] + ")"
	}
	if ref != nil {
		ref.who = who
		return nil, ref
	}
	resp.who = who
	return resp, nil
}

// podNameExtra is the user extra of a pod-bound ServiceAccount token that
// names the pod.
const podNameExtra = "authentication.kubernetes.io/pod-name"

// issued is a response and whom it went to.
type issued struct {
	*meshapi.CertificateResponse
	who string
}

// sign issues the certificate for the ServiceAccount ns/sa that the token
// proved.
func (h *Handler) sign(req *meshapi.CertificateRequest, ns, sa string) (*issued, *refusal) {
	spec, err := h.Config()
	if err != nil {
		return nil, &refusal{status: http.StatusInternalServerError, reason: meshapi.ReasonInternal, msg: "the controller has no mesh configuration yet", err: err}
	}
	id, err := pki.NewWorkloadID(spec.TrustDomain, ns, sa)
	if err != nil {
		return nil, &refusal{status: http.StatusInternalServerError, reason: meshapi.ReasonInternal, msg: "the controller cannot name the identity", err: err}
	}
	bundle, err := h.Credentials.Bundle()
	if err != nil {
		return nil, &refusal{status: http.StatusInternalServerError, reason: meshapi.ReasonInternal, msg: "the controller has no identity issuer", err: err}
	}
	lifetime := spec.Identity.CertificateLifetime.Duration
	if lifetime == 0 {
		lifetime = DefaultCertificateLifetime
	}
	wc, err := bundle.IssueWorkload([]byte(req.CSR), id.String(), lifetime)
	switch {
	case errors.Is(err, pki.ErrInvalidCSR):
		return nil, refuse(http.StatusBadRequest, meshapi.ReasonBadRequest, "%s", err)
	case errors.Is(err, pki.ErrCSRIdentity):
		return nil, refuse(http.StatusForbidden, meshapi.ReasonWrongIdentity, "%s", err)
	case err != nil:
		return nil, &refusal{status: http.StatusInternalServerError, reason: meshapi.ReasonInternal, msg: "the controller could not sign the certificate", err: err}
	}
	return &issued{CertificateResponse: &meshapi.CertificateResponse{
		APIVersion:       meshapi.APIVersion,
		Identity:         id.String(),
		CertificateChain: string(wc.ChainPEM),
		Bundle:           BundleOf(bundle, spec.TrustDomain),
		NotAfter:         wc.Leaf.NotAfter,
	}}, nil
}

const audience = wellknown.IdentityTokenAudience

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func readRequest(w http.ResponseWriter, r *http.Request) (*meshapi.CertificateRequest, *refusal) {
	// Not every ResponseWriter supports deadlines (httptest's does not);
	// the real servers do.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(readTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, refuse(http.StatusRequestEntityTooLarge, meshapi.ReasonBadRequest, "the request body exceeds %d bytes", MaxRequestBytes)
		}
		return nil, refuse(http.StatusBadRequest, meshapi.ReasonBadRequest, "reading the request body: %s", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req meshapi.CertificateRequest
	if err := dec.Decode(&req); err != nil {
		return nil, refuse(http.StatusBadRequest, meshapi.ReasonBadRequest, "decoding the request: %s", err)
	}
	if dec.More() {
		return nil, refuse(http.StatusBadRequest, meshapi.ReasonBadRequest, "decoding the request: more than one JSON document")
	}
	if req.APIVersion != meshapi.APIVersion {
		return nil, refuse(http.StatusBadRequest, meshapi.ReasonBadRequest, "apiVersion %q is not %q", req.APIVersion, meshapi.APIVersion)
	}
	if req.CSR == "" {
		return nil, refuse(http.StatusBadRequest, meshapi.ReasonBadRequest, "csr: required")
	}
	return &req, nil
}

// BundleOf is the trust bundle of b's anchors for trustDomain, as the mesh
// API sends it.
func BundleOf(b *pki.IdentityBundle, trustDomain string) meshapi.Bundle {
	out := meshapi.Bundle{TrustDomain: trustDomain, Anchors: make([]string, 0, len(b.TrustAnchors))}
	for _, a := range b.TrustAnchors {
		out.Anchors = append(out.Anchors, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw})))
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the package's own types are written; they always encode.
		panic(fmt.Sprintf("encoding %T: %v", v, err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
