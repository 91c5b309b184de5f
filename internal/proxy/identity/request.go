package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
)

// Reasons of failed certificate requests, for metrics: the controller's
// (meshapi.Reason*) and the proxy's own below. The set is closed: a reason
// the controller sends that is not one of meshapi's counts as unknown.
const (
	ReasonUnreachable     = "unreachable"      // no connection, TLS refused, timeout
	ReasonToken           = "token"            // the token file could not be read
	ReasonInvalidResponse = "invalid-response" // not the contract, or a certificate that does not fit
	ReasonUnknown         = "unknown"
)

// RequestError is a failed certificate request.
type RequestError struct {
	// Status is the HTTP status, zero when none came.
	Status int
	Reason string
	Err    error
}

func (e *RequestError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("requesting a certificate: %d %s: %v", e.Status, e.Reason, e.Err)
	}
	return fmt.Sprintf("requesting a certificate: %s: %v", e.Reason, e.Err)
}

func (e *RequestError) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a Renew error, ReasonUnknown for others.
func ReasonOf(err error) string {
	var re *RequestError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ReasonUnknown
}

func knownReason(r string) string {
	switch r {
	case meshapi.ReasonUnauthenticated, meshapi.ReasonWrongAudience, meshapi.ReasonBadRequest,
		meshapi.ReasonWrongIdentity, meshapi.ReasonInternal, meshapi.ReasonRateLimited, meshapi.ReasonBusy:
		return r
	}
	return ReasonUnknown
}

// Bounds of what the controller may send back.
const (
	maxResponseBytes = 1 << 20
	maxTokenBytes    = 64 << 10
)

// request asks the controller for a certificate for a new key.
func (id *Identity) request(ctx context.Context) (*tls.Certificate, *meshapi.CertificateResponse, error) {
	token, err := readToken(id.bootstrap.TokenFile)
	if err != nil {
		return nil, nil, &RequestError{Reason: ReasonToken, Err: err}
	}
	key, csr, err := newKeyAndCSR(id.idURL)
	if err != nil {
		return nil, nil, &RequestError{Reason: ReasonUnknown, Err: err}
	}
	body, err := json.Marshal(meshapi.CertificateRequest{APIVersion: meshapi.APIVersion, CSR: csr})
	if err != nil {
		return nil, nil, &RequestError{Reason: ReasonUnknown, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+id.bootstrap.Address+meshapi.PathCertificate, bytes.NewReader(body))
	if err != nil {
		return nil, nil, &RequestError{Reason: ReasonUnknown, Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := id.client.Do(req)
	if err != nil {
		return nil, nil, &RequestError{Reason: ReasonUnreachable, Err: err}
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
	if err != nil {
		return nil, nil, &RequestError{Status: res.StatusCode, Reason: ReasonUnreachable, Err: fmt.Errorf("reading the response: %w", err)}
	}
	if len(data) > maxResponseBytes {
		return nil, nil, &RequestError{Status: res.StatusCode, Reason: ReasonInvalidResponse, Err: errors.New("response larger than 1 MiB")}
	}
	if res.StatusCode != http.StatusOK {
		return nil, nil, errorResponse(res.StatusCode, data)
	}
	var cr meshapi.CertificateResponse
	if err := decodeStrict(data, &cr); err != nil {
		return nil, nil, &RequestError{Status: res.StatusCode, Reason: ReasonInvalidResponse, Err: err}
	}
	cert, err := id.checkResponse(key, &cr)
	if err != nil {
		return nil, nil, &RequestError{Status: res.StatusCode, Reason: ReasonInvalidResponse, Err: err}
	}
	return cert, &cr, nil
}

// readToken reads the projected ServiceAccount token. Its content never
// appears in an error.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes))
	if err != nil {
		return "", fmt.Errorf("reading the token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("reading the token: %s is empty", path)
	}
	return t, nil
}

func errorResponse(status int, data []byte) error {
	var e meshapi.Error
	if err := decodeStrict(data, &e); err != nil || e.Reason == "" {
		// Not the controller speaking (a load balancer, a proxy): report
		// the status, and a little of the body for people.
		msg := strings.TrimSpace(string(data[:min(len(data), 200)]))
		reason := ReasonInvalidResponse
		if status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout {
			reason = ReasonUnreachable
		}
		return &RequestError{Status: status, Reason: reason, Err: fmt.Errorf("not a mesh API error: %q", msg)}
	}
	return &RequestError{Status: status, Reason: knownReason(e.Reason), Err: fmt.Errorf("%s: %s", e.Reason, e.Error)}
}

// decodeStrict decodes one JSON document, refusing unknown fields as
// meshapi.Decoder does, and checks its apiVersion.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding %T: %w", v, err)
	}
	var got string
	switch v := v.(type) {
	case *meshapi.CertificateResponse:
		got = v.APIVersion
	case *meshapi.Error:
		got = v.APIVersion
	}
	if got != meshapi.APIVersion {
		return fmt.Errorf("decoding %T: apiVersion %q, want %q", v, got, meshapi.APIVersion)
	}
	return nil
}

// checkResponse checks that the certificate is what was asked for: our key,
// our identity alone, valid now, for both client and server use, chaining
// to the bundle that came with it.
func (id *Identity) checkResponse(key *ecdsa.PrivateKey, cr *meshapi.CertificateResponse) (*tls.Certificate, error) {
	if cr.Identity != id.id {
		return nil, fmt.Errorf("issued for %q, want %q", cr.Identity, id.id)
	}
	chain, err := pki.ParseCertificates([]byte(cr.CertificateChain))
	if err != nil {
		return nil, fmt.Errorf("certificateChain: %w", err)
	}
	leaf := chain[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("the certificate is not for the key of the request")
	}
	got, err := uriSAN(leaf)
	if err != nil {
		return nil, err
	}
	if got != id.id {
		return nil, fmt.Errorf("the certificate names %q, want %q", got, id.id)
	}
	anchors, err := parseBundle(cr.Bundle)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := verifyChain(chain, roots, id.now(), u); err != nil {
			return nil, err
		}
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}
