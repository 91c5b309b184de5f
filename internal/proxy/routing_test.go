package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// dualBackend serves HTTP/1 and h2c with prior knowledge on ip, and
// returns its port.
func dualBackend(t testing.TB, ip string, h http.Handler) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}

// webSet is a Set with the service web.test on serviceVIP port 80 (named
// target port "http") and port 5000 (opaque, named "tcp"), with eps.
func webSet(eps ...meshapi.Endpoint) *meshapi.Set {
	return &meshapi.Set{Services: map[string]*meshapi.ServiceState{"test/web": {
		Service: &meshapi.Service{Namespace: "test", Name: "web", Addresses: []string{"10.96.0.99"}, Ports: []meshapi.ServicePort{
			{Name: "http", Port: 80},
			{Name: "tcp", Port: 5000, Protocol: meshapi.ProtocolOpaque},
		}},
		Endpoints: eps,
	}}}
}

// With a keep-alive HTTP/1 connection and an HTTP/2 connection open, a
// push that removes an endpoint takes it out of their very next request,
// while a request already in flight to it finishes there.
func TestPushReroutesOpenConnections(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	named := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				<-release
			}
			io.WriteString(w, name)
		})
	}
	epA := meshapi.Endpoint{Address: "127.0.0.1", Ports: map[string]uint16{"http": dualBackend(t, "127.0.0.1", named("a"))}}
	epB := meshapi.Endpoint{Address: "127.0.0.2", Ports: map[string]uint16{"http": dualBackend(t, "127.0.0.2", named("b"))}}
	// Every draw takes the last endpoint: b while it is there.
	tp := startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.Rand = func(n int) int { return n - 1 } })
	tp.store.Push(webSet(epA, epB), "test")

	h1 := dialWithDeadline(t, tp.outbound)
	br := bufio.NewReader(h1)
	h1Get := func() string {
		t.Helper()
		io.WriteString(h1, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	var h2Dials atomic.Int64
	h2 := h2cClient(tp.outbound)
	countDials(h2, &h2Dials)
	h2Get := func(path string) string {
		resp, err := h2.Get("http://web" + path)
		if err != nil {
			t.Error(err)
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	if a, b := h1Get(), h2Get("/"); a != "b" || b != "b" {
		t.Fatalf("before the push: HTTP/1 %q, HTTP/2 %q; want b", a, b)
	}
	slow := make(chan string)
	go func() { slow <- h2Get("/slow") }()
	<-started

	tp.store.Push(webSet(epA), "test")
	for range 3 {
		if a, b := h1Get(), h2Get("/"); a != "a" || b != "a" {
			t.Errorf("after the push: HTTP/1 %q, HTTP/2 %q; want a", a, b)
		}
	}
	close(release)
	if got := <-slow; got != "b" {
		t.Errorf("the request in flight during the push: %q, want b", got)
	}
	if n := h2Dials.Load(); n != 1 {
		t.Errorf("the HTTP/2 client dialed %d times, want one connection throughout", n)
	}
	// b's state is gone from the registry, a's stays with nothing in flight.
	reg := tp.store.Load().Registry()
	if e := reg.Lookup(upstream.Key{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), epB.Ports["http"])}); e != nil {
		t.Error("the removed endpoint is still in the registry")
	}
	waitFor(t, func() bool {
		e := reg.Lookup(upstream.Key{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), epA.Ports["http"])})
		return e != nil && e.InFlight() == 0
	})
}

// countDials makes c's HTTP/2 transport count its connections.
func countDials(c *http.Client, n *atomic.Int64) {
	tr := c.Transport.(*http2.Transport)
	dial := tr.DialTLSContext
	tr.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
		n.Add(1)
		return dial(ctx, network, addr, cfg)
	}
}
