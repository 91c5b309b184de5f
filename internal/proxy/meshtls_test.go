package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/meshapi"
)

// testPKI is a CA and a server certificate for one SPIFFE id, made with
// crypto/x509 alone: what the identity component will provide, reduced to
// what the dial path needs.
type testPKI struct {
	roots  *x509.CertPool
	server tls.Certificate
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newTestPKI(t testing.TB, identity string) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	p := &testPKI{roots: roots, ca: ca, caKey: caKey}
	p.server = p.leaf(t, identity)
	return p
}

// leaf issues a workload certificate for a SPIFFE id, good for both ends
// of mesh TLS.
func (p *testPKI) leaf(t testing.TB, identity string) tls.Certificate {
	t.Helper()
	id, _ := url.Parse(identity)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// clientTLS is a test hook for Options.ClientTLS: it verifies the chain
// against the test CA and the server's SPIFFE id, as mesh TLS will, and
// records what it was asked for.
func (p *testPKI) clientTLS(calls *[]string, mu *sync.Mutex) func(identity, alpn string) *tls.Config {
	return func(identity, alpn string) *tls.Config {
		mu.Lock()
		*calls = append(*calls, identity+" "+alpn)
		mu.Unlock()
		return &tls.Config{
			// The identity is checked below, not a host name.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				opts := x509.VerifyOptions{Roots: p.roots}
				if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
					return err
				}
				if u := cs.PeerCertificates[0].URIs; len(u) != 1 || u[0].String() != identity {
					return &net.AddrError{Err: "wrong identity", Addr: identity}
				}
				return nil
			},
		}
	}
}

// meshedBackend is an endpoint's proxy reduced to a TLS server: each
// answer names the ALPN protocol the client chose, "http1"/"h2" requests
// get "tls <alpn>", an opaque connection gets "tls <alpn> " and its bytes.
func meshedBackend(t testing.TB, p *testPKI) uint16 {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tls "+r.TLS.NegotiatedProtocol)
	})
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0), TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{p.server},
		NextProtos:   []string{meshapi.ALPNHTTP2, meshapi.ALPNHTTP1, meshapi.ALPNOpaque},
	}, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
		meshapi.ALPNHTTP2: func(s *http.Server, c *tls.Conn, h http.Handler) {
			(&http2.Server{}).ServeConn(c, &http2.ServeConnOpts{Handler: h, BaseConfig: s})
		},
		// net/http serves HTTP/1 only under the ALPN names of HTTP/1.
		meshapi.ALPNHTTP1: func(_ *http.Server, c *tls.Conn, _ http.Handler) {
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				body := "tls " + c.ConnectionState().NegotiatedProtocol
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
		},
		meshapi.ALPNOpaque: func(_ *http.Server, c *tls.Conn, _ http.Handler) {
			b, _ := io.ReadAll(c)
			io.WriteString(c, "tls "+c.ConnectionState().NegotiatedProtocol+" "+string(b))
			c.Close()
		},
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}

// Each forwarder originates mesh TLS, with the ALPN protocol of what it
// carries, to a meshed endpoint, and plaintext to one that is not.
func TestMeshTLSToMeshedEndpointsOnly(t *testing.T) {
	const id = "spiffe://test.local/ns/test/sa/web"
	pki := newTestPKI(t, id)
	tlsPort := meshedBackend(t, pki)
	plainHTTP := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			t.Error("TLS reached the plain backend")
		}
		io.WriteString(w, "plain")
	}))
	plainTCP := netip.MustParseAddrPort(listenTCP(t, func(c net.Conn) { io.Copy(c, c) })).Port()

	meshed := meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: id, Ports: map[string]uint16{"http": tlsPort, "tcp": tlsPort}}
	plain := meshapi.Endpoint{Address: "127.0.0.1", Ports: map[string]uint16{"http": plainHTTP, "tcp": plainTCP}}
	for _, tc := range []struct {
		name           string
		ep             meshapi.Endpoint
		h1, h2, opaque string
	}{
		{"meshed", meshed, "tls " + meshapi.ALPNHTTP1, "tls " + meshapi.ALPNHTTP2, "tls " + meshapi.ALPNOpaque + " ping"},
		{"plain", plain, "plain", "plain", "ping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls []string
			hook := func(o *Options) { o.ClientTLS = pki.clientTLS(&calls, &mu) }
			web := startProxy(t, "", fixedDst(serviceVIP), hook)
			web.store.Push(webSet(tc.ep), "test")
			tcp := startProxy(t, "", fixedDst("10.96.0.99:5000"), hook)
			tcp.store.Push(webSet(tc.ep), "test")

			get := func(c *http.Client) string {
				resp, err := c.Get("http://web/")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b)
			}
			if got := get(proxyClient(web.outbound)); got != tc.h1 {
				t.Errorf("HTTP/1: %q, want %q", got, tc.h1)
			}
			if got := get(h2cClient(web.outbound)); got != tc.h2 {
				t.Errorf("HTTP/2: %q, want %q", got, tc.h2)
			}
			c := dialWithDeadline(t, tcp.outbound)
			io.WriteString(c, "ping")
			c.(*net.TCPConn).CloseWrite()
			if b, _ := io.ReadAll(c); string(b) != tc.opaque {
				t.Errorf("TCP: %q, want %q", b, tc.opaque)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.ep.Meshed && len(calls) != 3 {
				t.Errorf("TLS hook calls %q, want one per forwarder", calls)
			}
			if !tc.ep.Meshed && len(calls) != 0 {
				t.Errorf("TLS hook called for a plain endpoint: %q", calls)
			}
			for _, c := range calls {
				if !strings.HasPrefix(c, id+" ") {
					t.Errorf("hook asked for %q", c)
				}
			}
		})
	}
}

// A meshed endpoint that presents another identity is not reached.
func TestMeshTLSRefusesWrongIdentity(t *testing.T) {
	pki := newTestPKI(t, "spiffe://test.local/ns/test/sa/other")
	port := meshedBackend(t, pki)
	var mu sync.Mutex
	var calls []string
	tp := startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.ClientTLS = pki.clientTLS(&calls, &mu) })
	tp.store.Push(webSet(meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: "spiffe://test.local/ns/test/sa/web",
		Ports: map[string]uint16{"http": port}}), "test")
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); got != "HTTP/1.1 502 Bad Gateway" {
		t.Errorf("status %q", got)
	}
	if m := tp.metricsText(t); !strings.Contains(m, `reason="connect"} 1`) {
		t.Errorf("not counted as a connect failure:\n%s", m)
	}
}

// Pooled upstream connections are keyed by endpoint and identity: once a
// push says the address now belongs to another identity, neither the
// HTTP/1 pool nor the HTTP/2 transport reuses the connection made to the
// first one (here the server cannot prove the new identity, so the
// request fails instead of reaching it).
func TestPooledConnectionsAreKeyedByIdentity(t *testing.T) {
	const id = "spiffe://test.local/ns/test/sa/web"
	pki := newTestPKI(t, id)
	port := meshedBackend(t, pki)
	var mu sync.Mutex
	var calls []string
	tp := startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.ClientTLS = pki.clientTLS(&calls, &mu) })
	push := func(identity string) {
		tp.store.Push(webSet(meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: identity, Ports: map[string]uint16{"http": port}}), "test")
	}
	status := func(c *http.Client) int {
		resp, err := c.Get("http://web/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	h1, h2 := proxyClient(tp.outbound), h2cClient(tp.outbound)
	push(id)
	if a, b := status(h1), status(h2); a != 200 || b != 200 {
		t.Fatalf("first identity: HTTP/1 %d, HTTP/2 %d", a, b)
	}
	push("spiffe://test.local/ns/test/sa/impostor")
	if a, b := status(h1), status(h2); a != 502 || b != 502 {
		t.Errorf("another identity at the same address: HTTP/1 %d, HTTP/2 %d; want 502 (no reuse)", a, b)
	}
}
