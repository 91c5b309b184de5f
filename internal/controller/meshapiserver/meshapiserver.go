// Package meshapiserver is the controller's mesh API listener: HTTPS on
// wellknown.ControllerMeshAPIPort, TLS 1.3 only, HTTP/2 preferred, serving
// a certificate the controller issues to itself from the mesh's issuer
// (the SPIFFE id of its ServiceAccount, and its Service's DNS names) and
// renews at 70 % of its life.
//
// Proxies dial it before they have a certificate (identity issuance
// authenticates them by token) and afterwards with one (the discovery
// stream authenticates them by certificate), so client certificates are
// requested and, when given, verified against the trust anchors in force:
// a handler finds the peer's verified chain in r.TLS.VerifiedChains and its
// SPIFFE id with pki.SPIFFEIDOf(r.TLS.VerifiedChains[0][0]). A handler
// that needs a peer certificate must check that one was given.
package meshapiserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/promtext"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Limits of the HTTP server. There is no read or write timeout because the
// discovery stream lives as long as the proxy; handlers of short requests
// set their own deadlines (http.ResponseController).
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 5 * time.Minute
	maxHeaderBytes    = 16 << 10 // a projected token is about 1 KiB
)

// renewAt is the share of the serving certificate's life after which a new
// one is issued.
const renewAt = 0.7

// BundleSource gives the issuer and anchors in service
// (identity.Credentials is one).
type BundleSource interface {
	Bundle() (*pki.IdentityBundle, error)
}

// Options configure a Server.
type Options struct {
	// Address to listen on, e.g. ":15112"; port 0 picks a free one.
	Address string
	// MeshNamespace is the controller's namespace: its SPIFFE id is that
	// of wellknown.ControllerServiceAccount there, and its DNS names are
	// those of the Service wellknown.ControllerName there.
	MeshNamespace string
	// Credentials sign the serving certificate and give the anchors that
	// client certificates must chain to.
	Credentials BundleSource
	// Config gives the trust domain and the certificate lifetime.
	Config func() (meshconfig.Spec, error)
	// Clock decides when to renew; nil means time.Now. The issuer's own
	// clock decides the certificate's validity.
	Clock  pki.Clock
	Logger *slog.Logger
}

// Server is the mesh API's HTTPS server, its listener bound.
type Server struct {
	opts Options
	mux  *http.ServeMux
	ln   net.Listener
	srv  *http.Server
	key  crypto.Signer

	mu       sync.Mutex
	cert     *tls.Certificate
	issuedBy *pki.IdentityBundle // the bundle cert was issued from
	renewAt  time.Time
	lastErr  error
	roots    *x509.CertPool
	rootsOf  *pki.IdentityBundle
}

// New binds the listener and makes the serving key. The certificate is
// issued at the first handshake or readiness check that finds the issuer
// and the MeshConfig loaded.
func New(opts Options) (*Server, error) {
	switch {
	case opts.MeshNamespace == "":
		return nil, errors.New("starting the mesh API: the mesh namespace is required")
	case opts.Credentials == nil || opts.Config == nil || opts.Logger == nil:
		return nil, errors.New("starting the mesh API: credentials, config and logger are required")
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	// The key lives in memory only and outlives renewals: a restart makes
	// a new one.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("starting the mesh API: generating its key: %w", err)
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), key: key}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	s.srv = &http.Server{
		Handler:           s.mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: s.configForClient},
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	if s.ln, err = net.Listen("tcp", opts.Address); err != nil {
		return nil, fmt.Errorf("listening for the mesh API: %w", err)
	}
	return s, nil
}

// Handle mounts h at path (a http.ServeMux pattern). Call it before Serve.
func (s *Server) Handle(path string, h http.Handler) { s.mux.Handle(path, h) }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Identity is the SPIFFE id the server presents, once the trust domain is
// known.
func (s *Server) Identity() (string, error) {
	spec, err := s.opts.Config()
	if err != nil {
		return "", err
	}
	id, err := pki.NewWorkloadID(spec.TrustDomain, s.opts.MeshNamespace, wellknown.ControllerServiceAccount)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// DNSNames are the names of the controller's Service the certificate
// carries.
func DNSNames(namespace string) []string {
	svc := wellknown.ControllerName + "." + namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// Serve serves until Shutdown; it returns nil after a Shutdown.
func (s *Server) Serve() error {
	err := s.srv.ServeTLS(s.ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for in-flight requests until ctx is
// done, then closes what remains (long-lived streams).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// Ready reports, for readiness, whether a serving certificate is in
// service, issuing or renewing it if due.
func (s *Server) Ready() error {
	_, err := s.certificate()
	return err
}

// NotAfter is the expiry of the serving certificate in service; zero when
// none is.
func (s *Server) NotAfter() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert == nil {
		return time.Time{}
	}
	return s.cert.Leaf.NotAfter
}

// certificate returns the serving certificate, issuing a new one when
// there is none, when 70 % of its life has passed, or when the issuer was
// replaced (so that the chain it sends chains to the anchors in force). A
// failed renewal keeps the old certificate while it is valid.
func (s *Server) certificate() (*tls.Certificate, error) {
	bundle, bundleErr := s.opts.Credentials.Bundle()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock()
	if s.cert != nil && now.Before(s.renewAt) && (bundle == nil || bundle == s.issuedBy) {
		return s.cert, nil
	}
	cert, err := s.issue(bundle, bundleErr)
	if err != nil {
		s.lastErr = err
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			s.opts.Logger.Warn("renewing the mesh API certificate failed; keeping the current one", "error", err, "notAfter", s.cert.Leaf.NotAfter)
			return s.cert, nil
		}
		return nil, err
	}
	// The life counts from now, not from NotBefore, which pki backdates
	// by minutes: with a lifetime of minutes, counting the backdate would
	// renew at every handshake.
	leaf := cert.Leaf
	start := leaf.NotBefore
	if now.After(start) {
		start = now
	}
	life := leaf.NotAfter.Sub(start)
	s.cert, s.issuedBy, s.lastErr = cert, bundle, nil
	s.renewAt = start.Add(time.Duration(float64(life) * renewAt))
	s.opts.Logger.Info("issued the mesh API certificate", "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339), "renewAt", s.renewAt.UTC().Format(time.RFC3339))
	return cert, nil
}

func (s *Server) issue(bundle *pki.IdentityBundle, bundleErr error) (*tls.Certificate, error) {
	if bundleErr != nil {
		return nil, fmt.Errorf("issuing the mesh API certificate: %w", bundleErr)
	}
	spec, err := s.opts.Config()
	if err != nil {
		return nil, fmt.Errorf("issuing the mesh API certificate: %w", err)
	}
	id, err := pki.NewWorkloadID(spec.TrustDomain, s.opts.MeshNamespace, wellknown.ControllerServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("issuing the mesh API certificate: %w", err)
	}
	lifetime := spec.Identity.CertificateLifetime.Duration
	if lifetime == 0 {
		lifetime = 24 * time.Hour
	}
	wc, err := bundle.IssueServer(s.key.Public(), id.String(), DNSNames(s.opts.MeshNamespace), lifetime)
	if err != nil {
		return nil, fmt.Errorf("issuing the mesh API certificate: %w", err)
	}
	c := &tls.Certificate{PrivateKey: s.key, Leaf: wc.Leaf}
	certs, _ := pki.ParseCertificates(wc.ChainPEM) // just encoded by pki
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// clientRoots returns the pool of the anchors in force, rebuilt when the
// bundle changes.
func (s *Server) clientRoots(bundle *pki.IdentityBundle) *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bundle != s.rootsOf {
		pool := x509.NewCertPool()
		for _, a := range bundle.TrustAnchors {
			pool.AddCert(a)
		}
		s.roots, s.rootsOf = pool, bundle
	}
	return s.roots
}

// configForClient gives each connection the current certificate and the
// current anchors for its client certificate.
func (s *Server) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	cert, err := s.certificate()
	if err != nil {
		return nil, err
	}
	bundle, err := s.opts.Credentials.Bundle()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    s.clientRoots(bundle),
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// WriteMetrics writes the serving certificate's expiry in the Prometheus
// text format.
func (s *Server) WriteMetrics(w io.Writer) error {
	var secs int64
	if t := s.NotAfter(); !t.IsZero() {
		secs = t.Unix()
	}
	pw := promtext.NewWriter(w)
	pw.Header("meshctl_controller_meshapi_certificate_expiry_timestamp_seconds", promtext.Gauge, "Expiry of the mesh API's serving certificate in service (Unix time); 0 when none is.")
	pw.SampleInt("meshctl_controller_meshapi_certificate_expiry_timestamp_seconds", secs)
	return pw.Flush()
}
