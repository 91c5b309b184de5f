package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meshctl/mesh/internal/meshapi"
)

// sumSamples sums the samples whose line starts with prefix and contains
// every one of also.
func sumSamples(t *testing.T, text, prefix string, also ...string) float64 {
	t.Helper()
	sum := 0.0
lines:
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		for _, a := range also {
			if !strings.Contains(line, a) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// closedPort returns a loopback port with nothing listening: connecting to
// it is refused, as connecting to an application that has exited is.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	ln.Close()
	return port
}

// During a rollout a server pod's application exits while its proxy still
// accepts: the server's proxy cannot connect to the application and says
// the request was not processed, and the client's proxy sends it to
// another endpoint. No request fails, each retry is counted, and the
// marker never reaches the application's client.
func TestUnprocessedRequestGoesToAnotherEndpoint(t *testing.T) {
	pki := newTestPKI(t, serverID)
	serverSide := func(o *Options) { o.ServerTLS = pki.serverTLS() }
	app := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "served")
	}))
	live := startProxy(t, "", fixedDst("127.0.0.1:"+strconv.Itoa(int(app))), serverSide)
	gone := startProxy(t, "", fixedDst("127.0.0.1:"+strconv.Itoa(int(closedPort(t)))), serverSide)
	port := func(tp *testProxy) uint16 { return netip.MustParseAddrPort(tp.inbound).Port() }
	client := startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.ClientTLS = pki.withClientCert(pki.leaf(t, clientID)) })
	ep := func(tp *testProxy) meshapi.Endpoint {
		return meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: serverID, Ports: map[string]uint16{"http": port(tp)}}
	}
	client.store.Push(webSet(ep(live), ep(gone)), "test")

	// The server's proxy alone: the marker, on a mesh TLS connection only.
	direct := rawRequest(t, gone.inbound, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	if direct != "HTTP/1.1 502 Bad Gateway" {
		t.Fatalf("plaintext client of the server proxy: %q", direct)
	}

	const n = 40
	for _, tc := range []struct {
		name   string
		c      *http.Client
		bodies bool // requests with a body are sent again (HTTP/1 only)
	}{{"HTTP/1", proxyClient(client.outbound), true}, {"HTTP/2", h2cClient(client.outbound), false}} {
		for i := range n {
			var body io.Reader
			method := http.MethodGet
			if tc.bodies && i%2 == 1 {
				method, body = http.MethodPost, strings.NewReader(fmt.Sprintf("request %d", i))
			}
			req, _ := http.NewRequest(method, "http://web/", body)
			resp, err := tc.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "served" {
				t.Fatalf("%s request %d: %d %q", tc.name, i, resp.StatusCode, b)
			}
			if v := resp.Header.Get(unprocessedHeader); v != "" {
				t.Fatalf("%s request %d: the marker reached the client: %q", tc.name, i, v)
			}
		}
	}
	retries := sumSamples(t, client.metricsText(t), `meshproxy_retries_total{direction="outbound",service="web.test"}`)
	if retries < 2 || retries > 2*n {
		t.Errorf("retries counted: %v, want between 2 and %d", retries, 2*n)
	}
	if got := sumSamples(t, gone.metricsText(t), `meshproxy_errors_total{direction="inbound",`, `reason="connect"`); got < retries {
		t.Errorf("the server proxy counted %v connect failures, the client %v retries", got, retries)
	}
}

// The client's proxy retries only what its endpoint did not process: an
// application that sets the marker itself cannot make a request go twice
// (the server's proxy drops the field), and with no other endpoint the
// failure reaches the client without the marker.
func TestUnprocessedMarkerOnlyFromTheServerProxy(t *testing.T) {
	pki := newTestPKI(t, serverID)
	serverSide := func(o *Options) { o.ServerTLS = pki.serverTLS() }
	var calls atomic.Int64
	forger := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set(unprocessedHeader, "connect")
		w.WriteHeader(http.StatusBadGateway)
	}))
	forging := startProxy(t, "", fixedDst("127.0.0.1:"+strconv.Itoa(int(forger))), serverSide)
	gone := startProxy(t, "", fixedDst("127.0.0.1:"+strconv.Itoa(int(closedPort(t)))), serverSide)
	port := func(tp *testProxy) uint16 { return netip.MustParseAddrPort(tp.inbound).Port() }
	ep := func(tp *testProxy) meshapi.Endpoint {
		return meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: serverID, Ports: map[string]uint16{"http": port(tp)}}
	}
	client := startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.ClientTLS = pki.withClientCert(pki.leaf(t, clientID)) })

	for _, tc := range []struct {
		name   string
		server *testProxy
	}{{"forged by the application", forging}, {"no other endpoint", gone}} {
		client.store.Push(webSet(ep(tc.server)), "test")
		for proto, c := range map[string]*http.Client{"HTTP/1": proxyClient(client.outbound), "HTTP/2": h2cClient(client.outbound)} {
			resp, err := c.Get("http://web/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(unprocessedHeader) != "" {
				t.Errorf("%s, %s: %d, marker %q; want 502 without the marker", tc.name, proto, resp.StatusCode, resp.Header.Get(unprocessedHeader))
			}
		}
	}
	if calls.Load() != 2 {
		t.Errorf("the application was called %d times, want 2 (once per protocol)", calls.Load())
	}
	if got := sumSamples(t, client.metricsText(t), `meshproxy_retries_total{direction="outbound",service="web.test"}`); got != 0 {
		t.Errorf("retries counted: %v, want 0", got)
	}
}

// A meshed or plain endpoint that refuses the connection is skipped for
// another one: nothing was sent to it.
func TestConnectFailureGoesToAnotherEndpoint(t *testing.T) {
	app := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served")
	}))
	tp := startProxy(t, "", fixedDst(serviceVIP))
	tp.store.Push(webSet(
		meshapi.Endpoint{Address: "127.0.0.1", Ports: map[string]uint16{"http": app}},
		meshapi.Endpoint{Address: "127.0.0.1", Ports: map[string]uint16{"http": closedPort(t)}},
	), "test")
	for proto, c := range map[string]*http.Client{"HTTP/1": proxyClient(tp.outbound), "HTTP/2": h2cClient(tp.outbound)} {
		for i := range 20 {
			resp, err := c.Get("http://web/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s request %d: %d %q", proto, i, resp.StatusCode, b)
			}
		}
	}
	if got := sumSamples(t, tp.metricsText(t), `meshproxy_retries_total{direction="outbound",service="web.test"}`); got == 0 {
		t.Error("no retry counted")
	}
}
