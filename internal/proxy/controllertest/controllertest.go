// Package controllertest is a small controller that speaks the meshapi
// contract faithfully, for the proxy's tests: it issues certificates from
// a test CA for a bearer token, and serves the discovery stream (hello,
// subscriptions by name and by address, resources pushed by the test,
// ACK/NACK recorded), over TLS 1.3 with HTTP/2 on loopback.
//
// It stands in for the real controller, which is being built in parallel;
// the end-to-end tests against the real one come when both are merged. It
// authenticates tokens by a table the test gives, not by a TokenReview.
package controllertest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Options configure New; every field has a default.
type Options struct {
	// TrustDomain defaults to "cluster.local".
	TrustDomain string
	// CA defaults to a new one for TrustDomain.
	CA *pki.IdentityBundle
	// Tokens maps bearer tokens to the SPIFFE id they may ask for. The
	// default maps "token-default" to spiffe://<td>/ns/default/sa/default.
	Tokens map[string]string
	// Lifetime of issued certificates; default one hour.
	Lifetime time.Duration
	// Clock gives issued certificates their validity; default time.Now.
	Clock func() time.Time
	// PresentIdentity is the identity of the controller's serving
	// certificate; default the controller's (what Bootstrap names). Set it
	// to another to play an impostor.
	PresentIdentity string
	// HTTP1Only serves HTTP/1.1 alone, as a controller behind a proxy
	// that does not speak HTTP/2 would.
	HTTP1Only bool
}

// DefaultToken is the token of DefaultID unless Options.Tokens says
// otherwise.
const DefaultToken = "token-default"

// Record is one ClientMessage the controller received.
type Record struct {
	// Stream counts the discovery streams opened, from 1.
	Stream int
	// Peer is the client certificate's SPIFFE id.
	Peer string
	Msg  meshapi.ClientMessage
}

// Controller is a running test controller.
type Controller struct {
	t         testing.TB
	opts      Options
	CA        *pki.IdentityBundle
	ServerID  string
	TokenFile string
	serving   tls.Certificate

	mu        sync.Mutex
	srv       *httptest.Server
	addr      string
	stop      chan struct{}
	issued    int
	failWith  string
	resources map[key]meshapi.ServerMessage
	streams   map[*stream]bool
	nstreams  int
	records   []Record
	hold      bool
	held      []heldResolution
	changed   chan struct{} // closed and replaced at each record
}

type key struct {
	kind meshapi.Kind
	name string
}

type stream struct {
	n        int
	out      chan []byte
	services map[string]bool
	addrs    map[string]bool
	hello    bool
}

type heldResolution struct {
	st   *stream
	addr string
}

// New starts a controller on a loopback port and stops it when the test
// ends.
func New(t testing.TB, opts Options) *Controller {
	t.Helper()
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	ca := opts.CA
	if ca == nil {
		var err error
		ca, err = pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: opts.TrustDomain})
		if err != nil {
			t.Fatal(err)
		}
	}
	if opts.Tokens == nil {
		opts.Tokens = map[string]string{DefaultToken: DefaultID(opts.TrustDomain)}
	}
	c := &Controller{
		t:         t,
		opts:      opts,
		CA:        ca,
		ServerID:  "spiffe://" + opts.TrustDomain + "/ns/" + wellknown.DefaultMeshNamespace + "/sa/" + wellknown.ControllerServiceAccount,
		resources: map[key]meshapi.ServerMessage{},
		streams:   map[*stream]bool{},
		changed:   make(chan struct{}),
	}
	present := opts.PresentIdentity
	if present == "" {
		present = c.ServerID
	}
	c.serving = c.issueServing(present)
	c.TokenFile = filepath.Join(t.TempDir(), "token")
	c.SetToken(DefaultToken)
	c.Publish(meshapi.ServerMessage{Kind: meshapi.KindMesh, Version: 1, Mesh: &meshapi.MeshSettings{TrustDomain: opts.TrustDomain, InboundMTLS: meshapi.MTLSPermissive}})
	c.Publish(meshapi.ServerMessage{Kind: meshapi.KindBundle, Version: 1, Bundle: c.Bundle()})
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// DefaultID is the identity DefaultToken may ask for.
func DefaultID(trustDomain string) string {
	return "spiffe://" + trustDomain + "/ns/default/sa/default"
}

// SetToken writes the token file the bootstrap names.
func (c *Controller) SetToken(token string) {
	if err := os.WriteFile(c.TokenFile, []byte(token+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// Bootstrap is what injection would give a proxy of this controller.
func (c *Controller) Bootstrap() meshapi.Bootstrap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return meshapi.Bootstrap{
		Address:        c.addr,
		ServerIdentity: c.ServerID,
		TrustAnchors:   []string{string(c.CA.TrustAnchorsPEM)},
		TokenFile:      c.TokenFile,
	}
}

// Bundle is the controller's bundle.
func (c *Controller) Bundle() *meshapi.Bundle {
	var anchors []string
	for _, a := range c.CA.TrustAnchors {
		anchors = append(anchors, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw})))
	}
	return &meshapi.Bundle{TrustDomain: c.opts.TrustDomain, Anchors: anchors}
}

// Start serves, on the address of the previous run if there was one.
func (c *Controller) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv != nil {
		return
	}
	addr := c.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for range 50 { // the old socket may take a moment to go
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("controllertest: listening on %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(meshapi.PathCertificate, c.certificate)
	mux.HandleFunc(meshapi.PathDiscovery, c.discovery)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.EnableHTTP2 = !c.opts.HTTP1Only
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	srv.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.serving},
		// The certificate request comes without a client certificate,
		// the discovery stream with one.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  c.pool(),
	}
	srv.StartTLS()
	c.srv, c.addr, c.stop = srv, l.Addr().String(), make(chan struct{})
}

// Stop ends every stream and stops serving: the proxy sees its
// connections reset and new ones refused, as when the controller's pod
// goes.
func (c *Controller) Stop() {
	c.mu.Lock()
	srv := c.srv
	if srv == nil {
		c.mu.Unlock()
		return
	}
	close(c.stop)
	c.srv = nil
	c.mu.Unlock()
	srv.CloseClientConnections()
	srv.Close()
}

func (c *Controller) pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, a := range c.CA.TrustAnchors {
		p.AddCert(a)
	}
	return p
}
