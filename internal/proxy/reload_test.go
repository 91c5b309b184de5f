package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A reload swaps the routing table for every request from then on: a
// keep-alive connection open across it keeps working, and its next
// request goes where the new configuration says.
func TestReloadRoutesOpenConnectionsAnew(t *testing.T) {
	one := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "one") }))
	defer one.Close()
	two := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "two") }))
	defer two.Close()
	svc := func(version, backend string) string {
		_, port, _ := net.SplitHostPort(hostPort(backend))
		return "version: " + version + `
inbound: {address: "127.0.0.1:0"}
outbound: {address: "127.0.0.1:0"}
services:
- {name: web, namespace: default, addresses: [10.96.0.10], ports: [{port: 80, targetPort: ` + port + `}], endpoints: [{address: 127.0.0.1}]}
`
	}
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	os.WriteFile(path, []byte(svc("v1", one.URL)), 0o644)
	tp := startProxy(t, "", fixedDst("10.96.0.10:80"))
	if _, err := tp.store.Reload(path); err != nil {
		t.Fatal(err)
	}
	c := dialWithDeadline(t, tp.outbound)
	br := bufio.NewReader(c)
	get := func() string {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "one" {
		t.Fatalf("before reload: %q", got)
	}
	os.WriteFile(path, []byte(svc("v2", two.URL)), 0o644)
	if _, err := tp.store.Reload(path); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "two" {
		t.Errorf("open connection after reload: %q, want the new configuration", got)
	}
	resp, err := proxyClient(tp.outbound).Get("http://web/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "two" {
		t.Errorf("new connection after reload: %q", b)
	}
	if !strings.Contains(tp.metricsText(t), `service="web.default"`) {
		t.Error("no series for the service")
	}
}
