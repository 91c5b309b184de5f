package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/config"
)

const (
	clientID = "spiffe://test.local/ns/test/sa/client"
	serverID = "spiffe://test.local/ns/test/sa/web"
)

// serverTLS is the inbound side of mesh TLS as the identity component
// configures it: the workload's certificate, a client certificate
// required and verified against the bundle, the mesh's ALPN names.
func (p *testPKI) serverTLS() func() *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.roots,
		NextProtos:   []string{meshapi.ALPNHTTP2, meshapi.ALPNHTTP1, meshapi.ALPNOpaque},
	}
	return func() *tls.Config { return cfg }
}

// withClientCert is clientTLS presenting cert, as a client proxy does.
func (p *testPKI) withClientCert(cert tls.Certificate) func(identity, alpn string) *tls.Config {
	return func(identity, alpn string) *tls.Config {
		return &tls.Config{
			MinVersion:         tls.VersionTLS13,
			Certificates:       []tls.Certificate{cert},
			InsecureSkipVerify: true, // the identity is checked below
			VerifyConnection: func(cs tls.ConnectionState) error {
				if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: p.roots}); err != nil {
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

// meshPair is a client pod's proxy and a server pod's proxy in one
// process: the client's outbound listener sends the service web.test to
// the server's inbound listener over mesh TLS, which forwards to the
// application (an HTTP/1 and h2c server naming the client identity header
// it got, and a TCP echo server).
type meshPair struct {
	client, server, serverTCP *testProxy
}

func newMeshPair(t *testing.T, serverCfg string) *meshPair {
	t.Helper()
	pki := newTestPKI(t, serverID)
	app := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" client="+r.Header.Get(config.DefaultClientIdentityHeader))
	}))
	echo := listenTCP(t, func(c net.Conn) { io.Copy(c, c); c.Close() })
	serverSide := func(o *Options) { o.ServerTLS = pki.serverTLS() }
	m := &meshPair{
		server:    startProxy(t, serverCfg, fixedDst("127.0.0.1:"+strconv.Itoa(int(app))), serverSide),
		serverTCP: startProxy(t, serverCfg, fixedDst(echo), serverSide),
	}
	port := func(tp *testProxy) uint16 { return netip.MustParseAddrPort(tp.inbound).Port() }
	m.client = startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.ClientTLS = pki.withClientCert(pki.leaf(t, clientID)) })
	m.client.store.Push(webSet(meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: serverID,
		Ports: map[string]uint16{"http": port(m.server), "tcp": port(m.serverTCP)}}), "test")
	return m
}

func get(t *testing.T, c *http.Client, header string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://web/", nil)
	if header != "" {
		req.Header.Set(config.DefaultClientIdentityHeader, header)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Mesh TLS from a peer proxy is terminated inbound: the application gets
// the request in the protocol the client spoke, with the client's verified
// identity in a header that the client itself could not set.
func TestInboundTerminatesMeshTLS(t *testing.T) {
	m := newMeshPair(t, "")
	forged := "spiffe://test.local/ns/test/sa/admin"
	if got, want := get(t, proxyClient(m.client.outbound), forged), "HTTP/1.1 client="+clientID; got != want {
		t.Errorf("HTTP/1: %q, want %q", got, want)
	}
	if got, want := get(t, h2cClient(m.client.outbound), forged), "HTTP/2.0 client="+clientID; got != want {
		t.Errorf("HTTP/2: %q, want %q", got, want)
	}
	tcp := startProxy(t, "", fixedDst("10.96.0.99:5000"), func(o *Options) { o.ClientTLS = m.client.opts.ClientTLS })
	tcp.store.Push(m.client.store.Load().Set, "test")
	c := dialWithDeadline(t, tcp.outbound)
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	if b, _ := io.ReadAll(c); string(b) != "ping" {
		t.Errorf("TCP through mesh TLS: %q", b)
	}
	for _, tp := range []*testProxy{m.server, m.serverTCP} {
		if mt := tp.metricsText(t); !strings.Contains(mt, `meshproxy_mtls_connections_total{direction="inbound",peer_identity="`+clientID+`"}`) {
			t.Errorf("the server proxy did not count the client's identity:\n%s", mt)
		}
	}
	// Plaintext in permissive mode reaches the application, without the
	// forged identity.
	if got := get(t, proxyClient(m.server.inbound), forged); got != "HTTP/1.1 client=" {
		t.Errorf("plaintext HTTP/1 with a forged identity: %q", got)
	}
	if got := get(t, h2cClient(m.server.inbound), forged); got != "HTTP/2.0 client=" {
		t.Errorf("plaintext HTTP/2 with a forged identity: %q", got)
	}
}

// A strict port refuses plaintext (counted) and still serves mesh TLS; an
// application's own TLS, which offers no mesh ALPN, is not terminated.
func TestInboundStrictRefusesPlaintext(t *testing.T) {
	m := newMeshPair(t, "inbound: {address: \"127.0.0.1:0\", mtls: strict}\n")
	if got, want := get(t, proxyClient(m.client.outbound), ""), "HTTP/1.1 client="+clientID; got != want {
		t.Errorf("mesh TLS on a strict port: %q, want %q", got, want)
	}
	c := dialWithDeadline(t, m.server.inbound)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("plaintext on a strict port got an answer: %q", b)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(m.server.metricsText(t), `reason="mtls_required"} 1`) {
		if time.Now().After(deadline) {
			t.Fatalf("the refusal was not counted:\n%s", m.server.metricsText(t))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Another client's TLS without the mesh's ALPN is the application's
	// business: on a strict port it is plaintext to the mesh, and refused.
	tc := tls.Client(dialWithDeadline(t, m.server.inbound), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err := tc.Handshake(); err == nil {
		t.Error("the proxy terminated TLS that offered no mesh protocol")
	}
}
