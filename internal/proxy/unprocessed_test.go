package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
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
	c := proxyClient(client.outbound)
	for i := range n {
		var body io.Reader
		method := http.MethodGet
		if i%2 == 1 {
			method, body = http.MethodPost, strings.NewReader(fmt.Sprintf("request %d", i))
		}
		req, _ := http.NewRequest(method, "http://web/", body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "served" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		if v := resp.Header.Get(unprocessedHeader); v != "" {
			t.Fatalf("request %d: the marker reached the client: %q", i, v)
		}
	}
	retries := sumSamples(t, client.metricsText(t), `meshproxy_retries_total{direction="outbound",service="web.test"}`)
	if retries == 0 || retries > n {
		t.Errorf("retries counted: %v, want between 1 and %d", retries, n)
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
	var calls int
	forger := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
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
		t.Run(tc.name, func(t *testing.T) {
			client.store.Push(webSet(ep(tc.server)), "test")
			resp, err := proxyClient(client.outbound).Get("http://web/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(unprocessedHeader) != "" {
				t.Errorf("%d, marker %q; want 502 without the marker", resp.StatusCode, resp.Header.Get(unprocessedHeader))
			}
		})
	}
	if calls != 1 {
		t.Errorf("the application was called %d times, want 1", calls)
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
	c := proxyClient(tp.outbound)
	for i := range 20 {
		resp, err := c.Get("http://web/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if got := sumSamples(t, tp.metricsText(t), `meshproxy_retries_total{direction="outbound",service="web.test"}`); got == 0 {
		t.Error("no retry counted")
	}
}
