package controllertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Issued counts the certificates issued.
func (c *Controller) Issued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued
}

// FailCertificates makes every certificate request fail with a meshapi
// reason ("" to issue again).
func (c *Controller) FailCertificates(reason string) {
	c.mu.Lock()
	c.failWith = reason
	c.mu.Unlock()
}

func (c *Controller) issueServing(id string) tls.Certificate {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	u, _ := url.Parse(id)
	now := time.Now()
	der, err := c.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "controller"},
		URIs:        []*url.URL{u},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
	}, priv.Public())
	if err != nil {
		c.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.CA.Issuer().Raw}, PrivateKey: priv}
}

// sign issues a leaf for both client and server use, signed by the
// issuer.
func (c *Controller) sign(t *x509.Certificate, pub any) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	t.SerialNumber = serial
	t.KeyUsage = x509.KeyUsageDigitalSignature
	t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return x509.CreateCertificate(rand.Reader, t, c.CA.Issuer(), pub, c.CA.IssuerKey)
}

func writeError(w http.ResponseWriter, status int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(meshapi.Error{APIVersion: meshapi.APIVersion, Status: status, Reason: reason, Error: msg})
}

func (c *Controller) certificate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, meshapi.ReasonBadRequest, "POST only")
		return
	}
	c.mu.Lock()
	fail := c.failWith
	c.mu.Unlock()
	if fail != "" {
		writeError(w, http.StatusInternalServerError, fail, "failing as the test asked")
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	allowed := c.opts.Tokens[token]
	if !ok || allowed == "" {
		writeError(w, http.StatusUnauthorized, meshapi.ReasonUnauthenticated, "unknown token")
		return
	}
	var req meshapi.CertificateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.APIVersion != meshapi.APIVersion {
		writeError(w, http.StatusBadRequest, meshapi.ReasonBadRequest, "not a CertificateRequest")
		return
	}
	blk, _ := pem.Decode([]byte(req.CSR))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		writeError(w, http.StatusBadRequest, meshapi.ReasonBadRequest, "csr: not a PEM CERTIFICATE REQUEST")
		return
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, meshapi.ReasonBadRequest, "csr: "+err.Error())
		return
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != allowed || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
		writeError(w, http.StatusForbidden, meshapi.ReasonWrongIdentity, "the token may only ask for "+allowed)
		return
	}
	now := c.opts.Clock()
	der, err := c.sign(&x509.Certificate{
		URIs:      csr.URIs,
		NotBefore: now,
		NotAfter:  now.Add(c.opts.Lifetime),
	}, csr.PublicKey)
	if err != nil {
		writeError(w, http.StatusInternalServerError, meshapi.ReasonInternal, err.Error())
		return
	}
	leaf, _ := x509.ParseCertificate(der)
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, c.CA.IssuerCertPEM...)
	c.mu.Lock()
	c.issued++
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(meshapi.CertificateResponse{
		APIVersion:       meshapi.APIVersion,
		Identity:         allowed,
		CertificateChain: string(chain),
		Bundle:           *c.Bundle(),
		NotAfter:         leaf.NotAfter,
	})
}
