package proxy

import (
	"context"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/testenv"
)

// h2specKnownFailures are the cases the proxy does not pass, each with the
// reason; docs/proxy.md lists the same. Any other failure fails the test,
// and so does a listed case that starts passing (update the list and the
// docs then).
var h2specKnownFailures = map[string]string{}

// TestH2Spec runs the h2spec HTTP/2 conformance suite through one proxy
// (its inbound listener) and through two: a client pod's outbound proxy
// (service VIP to endpoint) and the server pod's inbound proxy, in
// plaintext and with mesh TLS between them, the path of a call between two
// meshed pods. The application speaks only HTTP/2.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds h2spec")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := testenv.H2Spec.Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The application speaks only HTTP/2, as a gRPC server does. That
	// matters for 3.5/2 (invalid preface): bytes that are not a request
	// are forwarded as TCP, so the application is the one that closes.
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from the application\n")
	}))
	t.Run("one proxy", func(t *testing.T) {
		tp := startProxy(t, "", fixedDst(backend))
		runH2Spec(ctx, t, bin, tp.inbound)
	})
	t.Run("two proxies plaintext", func(t *testing.T) {
		server := startProxy(t, "", fixedDst(backend))
		client := startProxy(t, "", fixedDst(serviceVIP))
		client.store.Push(webSet(meshapi.Endpoint{Address: "127.0.0.1",
			Ports: map[string]uint16{"http": netip.MustParseAddrPort(server.inbound).Port()}}), "test")
		runH2Spec(ctx, t, bin, client.outbound)
	})
	t.Run("two proxies", func(t *testing.T) {
		pki := newTestPKI(t, serverID)
		server := startProxy(t, "", fixedDst(backend), func(o *Options) { o.ServerTLS = pki.serverTLS() })
		client := startProxy(t, "", fixedDst(serviceVIP), func(o *Options) { o.ClientTLS = pki.withClientCert(pki.leaf(t, clientID)) })
		client.store.Push(webSet(meshapi.Endpoint{Address: "127.0.0.1", Meshed: true, Identity: serverID,
			Ports: map[string]uint16{"http": netip.MustParseAddrPort(server.inbound).Port()}}), "test")
		runH2Spec(ctx, t, bin, client.outbound)
		// The streams crossed both proxies as HTTP/2 over mesh TLS.
		if m := server.metricsText(t); !strings.Contains(m, `meshproxy_mtls_connections_total{direction="inbound"`) {
			t.Errorf("no mesh TLS connection reached the server's proxy:\n%s", m)
		}
		if m := client.metricsText(t); !strings.Contains(m, `meshproxy_detections_total{direction="outbound",protocol="h2c"}`) {
			t.Errorf("the client's proxy detected no h2c:\n%s", m)
		}
	})
}

// runH2Spec runs every h2spec case against addr and fails the test on a
// failure that h2specKnownFailures does not list, or on a listed case that
// passes.
func runH2Spec(ctx context.Context, t *testing.T, bin, addr string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	out, _ := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "-o", "2", "-j", report).CombinedOutput()
	failed, total := parseJUnit(t, report)
	var unexpected []string
	for _, f := range failed {
		if _, ok := h2specKnownFailures[f]; !ok {
			unexpected = append(unexpected, f)
		}
	}
	for k := range h2specKnownFailures {
		if !contains(failed, k) {
			t.Errorf("h2spec case %q passes now: remove it from h2specKnownFailures and docs/proxy.md", k)
		}
	}
	t.Logf("h2spec: %d cases, %d passed, %d failed", total, total-len(failed), len(failed))
	if total != 145 {
		t.Errorf("h2spec ran %d cases, want 145", total)
	}
	if len(unexpected) > 0 {
		t.Errorf("h2spec failures:\n  %q\n\n%s", unexpected, tail(string(out), 4000))
	}
}

// h2cOnlyBackend serves h over HTTP/2 with prior knowledge only on a
// loopback port.
func h2cOnlyBackend(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type junitSuites struct {
	Suites []struct {
		Name  string `xml:"name,attr"`
		Cases []struct {
			Name      string    `xml:"name,attr"`
			Package   string    `xml:"package,attr"`
			ClassName string    `xml:"classname,attr"`
			Failure   *struct{} `xml:"failure"`
			Error     *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// parseJUnit returns the failed cases as "http2/<section>: <description>".
func parseJUnit(t *testing.T, path string) (failed []string, total int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading h2spec report: %v", err)
	}
	var js junitSuites
	if err := xml.Unmarshal(b, &js); err != nil {
		t.Fatalf("parsing h2spec report: %v", err)
	}
	for _, s := range js.Suites {
		for _, c := range s.Cases {
			total++
			if c.Failure != nil || c.Error != nil {
				failed = append(failed, c.Package+": "+c.ClassName)
			}
		}
	}
	sort.Strings(failed)
	return failed, total
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
