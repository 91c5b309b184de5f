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
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
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

// Publish stores a resource version and sends it to the streams that hold
// it (every stream for the mesh settings and the bundle).
func (c *Controller) Publish(m meshapi.ServerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resources[key{m.Kind, m.Name}] = m
	c.sendLocked(m)
	if m.Kind == meshapi.KindResolution && m.Resolution != nil && m.Resolution.Service != "" {
		for st := range c.streams {
			if st.hello && st.addrs[m.Name] {
				c.subscribeLocked(st, m.Resolution.Service)
			}
		}
	}
}

// Send sends a message without storing it: a delta, or a version the
// proxy should refuse.
func (c *Controller) Send(m meshapi.ServerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(m)
}

func (c *Controller) sendLocked(m meshapi.ServerMessage) {
	line, err := meshapi.Encode(m)
	if err != nil {
		c.t.Error(err)
		return
	}
	for st := range c.streams {
		if !st.hello {
			continue
		}
		switch m.Kind {
		case meshapi.KindService, meshapi.KindEndpoints:
			if !st.services[m.Name] {
				continue
			}
		case meshapi.KindResolution:
			if !st.addrs[m.Name] {
				continue
			}
		}
		st.out <- line
	}
}

// HoldResolutions makes answers to subscriptions by address wait until it
// is called with false.
func (c *Controller) HoldResolutions(hold bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = hold
	if !hold {
		for _, h := range c.held {
			if c.streams[h.st] {
				c.resolveLocked(h.st, h.addr)
			}
		}
		c.held = nil
	}
}

// Records returns the messages received so far.
func (c *Controller) Records() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Record(nil), c.records...)
}

// WaitFor waits until cond holds for the records received, failing the
// test after 10 s.
func (c *Controller) WaitFor(t testing.TB, what string, cond func([]Record) bool) []Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		recs := append([]Record(nil), c.records...)
		ch := c.changed
		c.mu.Unlock()
		if cond(recs) {
			return recs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("controllertest: timed out waiting for %s; received %d messages", what, len(recs))
		}
	}
}

func (c *Controller) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, meshapi.ReasonBadRequest, "POST only")
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || len(r.TLS.PeerCertificates[0].URIs) != 1 {
		writeError(w, http.StatusUnauthorized, meshapi.ReasonUnauthenticated, "a mesh certificate is required")
		return
	}
	peer := r.TLS.PeerCertificates[0].URIs[0].String()
	c.mu.Lock()
	stop := c.stop
	c.nstreams++
	st := &stream{n: c.nstreams, out: make(chan []byte, 1024), services: map[string]bool{}, addrs: map[string]bool{}}
	c.streams[st] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.streams, st)
		c.mu.Unlock()
	}()

	w.Header().Set("Content-Type", meshapi.ContentType)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		dec := meshapi.NewDecoder(r.Body, 0)
		for {
			var m meshapi.ClientMessage
			if err := dec.Decode(&m); err != nil {
				return
			}
			if !c.receive(st, peer, m) {
				return
			}
		}
	}()
	for {
		select {
		case line := <-st.out:
			if _, err := w.Write(line); err != nil {
				return
			}
			// Send what is queued with it in one flush.
			for more := true; more; {
				select {
				case line := <-st.out:
					if _, err := w.Write(line); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-stop:
			return
		}
	}
}

// receive handles one client message; false ends the stream.
func (c *Controller) receive(st *stream, peer string, m meshapi.ClientMessage) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, Record{Stream: st.n, Peer: peer, Msg: m})
	close(c.changed)
	c.changed = make(chan struct{})
	switch {
	case m.Hello != nil:
		if st.hello || m.Hello.APIVersion != meshapi.APIVersion {
			return false
		}
		st.hello = true
		c.sendStoredLocked(st, key{meshapi.KindMesh, ""})
		c.sendStoredLocked(st, key{meshapi.KindBundle, ""})
	case !st.hello:
		return false // the contract opens with a hello
	case m.Subscribe != nil:
		for _, s := range m.Subscribe.Services {
			c.subscribeLocked(st, s)
		}
		for _, a := range m.Subscribe.Addresses {
			st.addrs[a] = true
			if c.hold {
				c.held = append(c.held, heldResolution{st, a})
				continue
			}
			c.resolveLocked(st, a)
		}
	case m.Unsubscribe != nil:
		for _, s := range m.Unsubscribe.Services {
			delete(st.services, s)
		}
		for _, a := range m.Unsubscribe.Addresses {
			delete(st.addrs, a)
		}
	}
	return true
}

func (c *Controller) subscribeLocked(st *stream, service string) {
	if st.services[service] {
		return
	}
	st.services[service] = true
	c.sendStoredLocked(st, key{meshapi.KindService, service})
	c.sendStoredLocked(st, key{meshapi.KindEndpoints, service})
}

// resolveLocked answers a subscription by address with the stored
// resolution, or a negative one at version 1 when the test stored none.
func (c *Controller) resolveLocked(st *stream, addr string) {
	k := key{meshapi.KindResolution, addr}
	m, ok := c.resources[k]
	if !ok {
		m = meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: addr, Version: 1, Resolution: &meshapi.Resolution{Address: addr}}
		c.resources[k] = m
	}
	c.sendStoredLocked(st, k)
	if m.Resolution != nil && m.Resolution.Service != "" {
		c.subscribeLocked(st, m.Resolution.Service)
	}
}

func (c *Controller) sendStoredLocked(st *stream, k key) {
	m, ok := c.resources[k]
	if !ok {
		return
	}
	line, err := meshapi.Encode(m)
	if err != nil {
		c.t.Error(err)
		return
	}
	st.out <- line
}

// Acks returns the ACKs and NACKs received for a kind and name.
func Acks(recs []Record, kind meshapi.Kind, name string) []meshapi.Ack {
	var out []meshapi.Ack
	for _, r := range recs {
		if a := r.Msg.Ack; a != nil && a.Kind == kind && a.Name == name {
			out = append(out, *a)
		}
	}
	return out
}
