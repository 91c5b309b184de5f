package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// testProxy is a proxy on ephemeral loopback ports whose original
// destinations come from the test instead of iptables: the listeners,
// detection and forwarding are the real ones.
type testProxy struct {
	*Proxy
	store    *config.Store
	metrics  *metrics.Registry
	outbound string
	inbound  string
	cancel   context.CancelFunc
	// done is closed when Serve has returned.
	done chan struct{}
}

// fixedDst sends every connection to one original destination.
func fixedDst(ap string) OriginalDstFunc {
	dst := netip.MustParseAddrPort(ap)
	return func(net.Conn) (netip.AddrPort, error) { return dst, nil }
}

// serviceVIP is the original destination of the service withService
// configures: the outbound listener parses HTTP only for a destination the
// configuration names (unknown ones are passed through as TCP).
const serviceVIP = "10.96.0.99:80"

// withService adds to cfg a service web.test on serviceVIP whose one
// endpoint is backend (host:port).
func withService(cfg, backend string) string {
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		panic(err)
	}
	return cfg + fmt.Sprintf("services:\n- {name: web, namespace: test, addresses: [10.96.0.99], ports: [{port: 80, targetPort: %s}], endpoints: [{address: %q}]}\n", port, host)
}

func startProxy(t testing.TB, cfg string, dst OriginalDstFunc, mod ...func(*Options)) *testProxy {
	t.Helper()
	doc := "version: test-1\n" + cfg
	if !strings.Contains(cfg, "inbound:") {
		doc += "inbound: {address: \"127.0.0.1:0\"}\n"
	}
	if !strings.Contains(cfg, "outbound:") {
		doc += "outbound: {address: \"127.0.0.1:0\"}\n"
	}
	snap, err := config.Parse([]byte(doc), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store := &config.Store{}
	store.Swap(snap)
	reg := metrics.New()
	o := Options{Config: store, Metrics: reg, OriginalDst: dst, DrainTimeout: 5 * time.Second}
	for _, m := range mod {
		m(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	tp := &testProxy{Proxy: p, store: store, metrics: reg, cancel: cancel, done: make(chan struct{}),
		outbound: p.listeners[0].ln.Addr().String(), inbound: p.listeners[1].ln.Addr().String()}
	go func() { p.Serve(ctx); close(tp.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-tp.done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	return tp
}

func (tp *testProxy) metricsText(t testing.TB) string {
	var b strings.Builder
	if err := tp.metrics.WriteText(&b, tp.Gauges()); err != nil {
		t.Fatal(err)
	}
	promtexttest.Parse(t, b.String())
	return b.String()
}

// countingServer is an HTTP/1 backend that counts the connections it
// accepted, to tell connection reuse from reconnection.
func countingServer(t testing.TB, h http.Handler) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

func TestHTTP1PassthroughReusesUpstreamConnections(t *testing.T) {
	backend, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Connection") != "" || r.Header.Get("X-Hop") != "" {
			t.Errorf("hop-by-hop headers reached the upstream: %v", r.Header)
		}
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Host, r.URL.Path)
	}))
	tp := startProxy(t, withService("", hostPort(backend.URL)), fixedDst(serviceVIP))
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", tp.outbound)
	}}}
	for i := range 20 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://example.test/p%d", i), nil)
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("GET example.test /p%d", i); string(b) != want {
			t.Fatalf("body %q, want %q", b, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections for 20 sequential requests, want 1", n)
	}
	// The counts are taken after the response is written.
	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `meshproxy_requests_total{direction="outbound",service="web.test",code="200",method_class="read"} 20`)
	})
	if m := tp.metricsText(t); !strings.Contains(m, `meshproxy_detections_total{direction="outbound",protocol="http1"} 1`) {
		t.Errorf("metrics lack one HTTP/1 detection\n%s", m)
	}
}

// rawRequest sends raw bytes and returns the status line of the answer.
func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading status line: %v", err)
	}
	return strings.TrimSpace(line)
}

// dialWithDeadline connects to a proxy listener with a 5 s deadline on the
// whole exchange, so a proxy that hangs fails the test instead of the
// package's timeout; the connection closes when the test ends.
func dialWithDeadline(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// A panic while serving one connection ends that connection, not the
// proxy. The real parts have no known panic to trigger, so the test's
// original-destination lookup panics once, on purpose.
func TestPanicIsContainedToItsConnection(t *testing.T) {
	backend := echoBackend(t)
	var calls atomic.Int64
	find := fixedDst(serviceVIP)
	tp := startProxy(t, withService("", backend), func(c net.Conn) (netip.AddrPort, error) {
		if calls.Add(1) == 1 {
			panic("injected by the test")
		}
		return find(c)
	})
	c := dialWithDeadline(t, tp.outbound)
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the panicking connection was not closed cleanly: %v", err)
	}
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got != "HTTP/1.1 200 OK" {
		t.Fatalf("after the panic: %q", got)
	}
	if m := tp.metricsText(t); !strings.Contains(m, `meshproxy_errors_total{direction="outbound",service="unknown",reason="internal"} 1`) {
		t.Errorf("panic not counted:\n%s", m)
	}
}
