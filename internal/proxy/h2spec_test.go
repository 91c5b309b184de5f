package proxy

import (
	"context"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/testenv"
)

// h2specKnownFailures are the cases the proxy does not pass, each with the
// reason; docs/proxy.md lists the same. Any other failure fails the test,
// and so does a listed case that starts passing (update the list and the
// docs then).
var h2specKnownFailures = map[string]string{
	"http2/8.1.2.2: Sends a HEADERS frame that contains the connection-specific header field":                       "the Go HTTP/2 server answers 400 to connection-specific fields before the proxy's handler runs, where RFC 9113 asks for RST_STREAM(PROTOCOL_ERROR); the request is refused either way",
	"http2/8.1.2.2: Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"": "as above, for TE other than \"trailers\"",
}

// TestH2Spec runs the h2spec HTTP/2 conformance suite against the inbound
// listener, forwarding to a Go h2c server.
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
	tp := startProxy(t, "", fixedDst(backend))
	_, port, _ := net.SplitHostPort(tp.inbound)
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
	t.Logf("h2spec: %d cases, %d failed", total, len(failed))
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
