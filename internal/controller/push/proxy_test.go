package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
)

// The test side of the discovery stream: a TLS server with HTTP/2 and
// client certificates made with internal/pki, as the controller's mesh API
// server will be, and simulated proxies that apply what they receive to a
// meshapi.Set and ACK it.

const trustDomain = "cluster.local"

type testCA struct {
	ca     *pki.IdentityBundle
	pool   *x509.CertPool
	bundle meshapi.Bundle
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: trustDomain})
	if err != nil {
		t.Fatal(err)
	}
	return newTestCAFrom(ca)
}

// newTestCAFrom is the test CA of an issuer made elsewhere.
func newTestCAFrom(ca *pki.IdentityBundle) *testCA {
	pool := x509.NewCertPool()
	for _, a := range ca.TrustAnchors {
		pool.AddCert(a)
	}
	return &testCA{ca: ca, pool: pool, bundle: meshapi.Bundle{TrustDomain: trustDomain, Anchors: []string{string(ca.TrustAnchorsPEM)}}}
}

// leaf issues a certificate for a SPIFFE id (uri), or a server
// certificate for 127.0.0.1 when uri is "".
func (c *testCA) leaf(t testing.TB, uri string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca.Issuer(), key.Public(), c.ca.IssuerKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.ca.Issuer().Raw}, PrivateKey: key}
}

// serve starts h on an HTTP/2 TLS server that verifies client
// certificates when given, as the mesh API server does.
func (c *testCA) serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(meshapi.PathDiscovery, h)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.leaf(t, "")},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    c.pool,
	}
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// client returns an HTTP/2 client with its own connection, presenting a
// certificate for id unless id is "".
func (c *testCA) client(t testing.TB, id string) *http.Client {
	tc := &tls.Config{RootCAs: c.pool, MinVersion: tls.VersionTLS13}
	if id != "" {
		tc.Certificates = []tls.Certificate{c.leaf(t, id)}
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// proxy is a simulated proxy: it applies every message to its Set and
// ACKs it, or NACKs it when Refuse says why.
type proxy struct {
	name string
	body *io.PipeWriter
	resp *http.Response
	// Refuse, if set, is asked before applying; a non-empty answer NACKs.
	Refuse func(*meshapi.ServerMessage) string
	// Gate, if it holds a channel, is waited on before reading each
	// message.
	Gate atomic.Pointer[chan struct{}]
	// OnAck, if set, hears every ACK the proxy sends.
	OnAck func(*meshapi.ServerMessage)

	wmu  sync.Mutex
	mu   sync.Mutex
	cond *sync.Cond
	set  *meshapi.Set
	msgs []*meshapi.ServerMessage
	err  error
}

func (c *testCA) connect(t testing.TB, srv *httptest.Server, name string, configure func(*proxy)) *proxy {
	t.Helper()
	p, err := dialProxy(c.client(t, "spiffe://"+trustDomain+"/ns/test/sa/"+name), srv.URL, name, configure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dialProxy(client *http.Client, base, name string, configure func(*proxy)) (*proxy, error) {
	pr, pw := io.Pipe()
	p := &proxy{name: name, body: pw, set: &meshapi.Set{}}
	p.cond = sync.NewCond(&p.mu)
	if configure != nil {
		configure(p)
	}
	go p.send(meshapi.ClientMessage{Hello: &meshapi.Hello{APIVersion: meshapi.APIVersion, ProxyVersion: "test", Namespace: "test", Pod: name}})
	req, err := http.NewRequest(http.MethodPost, base+meshapi.PathDiscovery, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", meshapi.ContentType)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", resp.Status, b)
	}
	p.resp = resp
	go p.loop()
	return p, nil
}

func (p *proxy) send(m meshapi.ClientMessage) error {
	b, err := meshapi.Encode(m)
	if err != nil {
		return err
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err = p.body.Write(b)
	return err
}

func (p *proxy) subscribe(services []string, addresses []string) error {
	return p.send(meshapi.ClientMessage{Subscribe: &meshapi.Subscription{Services: services, Addresses: addresses}})
}

func (p *proxy) loop() {
	dec := meshapi.NewDecoder(p.resp.Body, 0)
	for {
		if g := p.Gate.Load(); g != nil {
			<-*g
		}
		var m meshapi.ServerMessage
		err := dec.Decode(&m)
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.cond.Broadcast()
			p.mu.Unlock()
			return
		}
		ack := &meshapi.Ack{Kind: m.Kind, Name: m.Name, Version: m.Version}
		if p.Refuse != nil {
			ack.Error = p.Refuse(&m)
		}
		p.mu.Lock()
		if ack.Error == "" {
			if n, err := p.set.Apply(&m); err != nil {
				ack.Error = err.Error()
			} else {
				p.set = n
			}
		}
		p.msgs = append(p.msgs, &m)
		p.cond.Broadcast()
		p.mu.Unlock()
		p.send(meshapi.ClientMessage{Ack: ack})
		if ack.Error == "" && p.OnAck != nil {
			p.OnAck(&m)
		}
	}
}

// wait waits until cond holds on the proxy's set and messages, or fails.
func (p *proxy) wait(timeout time.Duration, what string, cond func(*meshapi.Set, []*meshapi.ServerMessage) bool) error {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !cond(p.set, p.msgs) {
		if p.err != nil {
			return fmt.Errorf("%s: %s: stream ended: %w", p.name, what, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s: timed out after %s", p.name, what, timeout)
		}
		p.cond.Wait()
	}
	return nil
}

// messages returns the messages received so far.
func (p *proxy) messages() []*meshapi.ServerMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*meshapi.ServerMessage(nil), p.msgs...)
}

func (p *proxy) Close() {
	p.body.CloseWithError(errors.New("closed"))
	if p.resp != nil {
		p.resp.Body.Close()
	}
}

// startServer runs a push server with test mesh settings and bundle.
func startServer(t testing.TB, ca *testCA, opts Options) *Server {
	t.Helper()
	mesh := make(chan meshapi.MeshSettings, 1)
	bundle := make(chan meshapi.Bundle, 1)
	mesh <- meshapi.MeshSettings{TrustDomain: trustDomain, InboundMTLS: meshapi.MTLSPermissive}
	bundle <- ca.bundle
	opts.Mesh, opts.Bundle = mesh, bundle
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

type bytesBuffer struct{ strings.Builder }

func (b *bytesBuffer) contains(s string) bool { return strings.Contains(b.String(), s) }
