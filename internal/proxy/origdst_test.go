package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSocketOriginalDst redirects connections with real iptables and
// ip6tables REDIRECT rules, in a network namespace of the test's own, and
// checks that the proxy reads their original destinations (IPv4 and IPv6)
// and forwards them to the service behind those virtual addresses.
func TestSocketOriginalDst(t *testing.T) {
	ns := newPrivateNetns(t, nil)
	var setupErr error
	ns.do(func() {
		for _, args := range [][]string{
			{"ip", "addr", "add", "10.99.0.1/32", "dev", "lo"},
			{"ip", "-6", "addr", "add", "fd00:99::1/128", "dev", "lo"},
			{"iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.99.0.1", "--dport", "80", "-j", "REDIRECT", "--to-ports", "15100"},
			{"ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd00:99::1", "--dport", "80", "-j", "REDIRECT", "--to-ports", "15100"},
		} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				setupErr = fmt.Errorf("%v: %v: %s", args, err, out)
				return
			}
		}
	})
	if setupErr != nil {
		if strings.Contains(setupErr.Error(), "executable file not found") {
			t.Skipf("iptables not installed: %v", setupErr)
		}
		t.Fatal(setupErr)
	}
	backendLn, err := ns.listen("[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Host)
	})}
	go backend.Serve(backendLn)
	defer backend.Close()
	_, port, _ := net.SplitHostPort(backendLn.Addr().String())
	var tp *testProxy
	ns.do(func() {
		tp = startProxy(t, `outbound: {address: ":15100"}
services:
- name: web
  namespace: default
  addresses: [10.99.0.1, "fd00:99::1"]
  ports: [{port: 80, targetPort: `+port+`}]
  endpoints: [{address: 127.0.0.1}]
`, SocketOriginalDst, func(o *Options) { o.Dial = ns.dial })
	})
	for _, target := range []string{"10.99.0.1:80", "[fd00:99::1]:80"} {
		c, err := ns.dial(t.Context(), "tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.HasSuffix(string(b), "hello "+target) {
			t.Errorf("through %s: %q", target, b)
		}
	}
	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `meshproxy_requests_total{direction="outbound",service="web.default",code="200",method_class="read"} 2`)
	})
	// A connection straight to the listener was not redirected: refused.
	c, err := ns.dial(t.Context(), "tcp", "127.0.0.1:15100")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("a direct connection got %q", b)
	}
	c.Close()
	waitFor(t, func() bool {
		m := tp.metricsText(t)
		return strings.Contains(m, `reason="loop"} 1`) || strings.Contains(m, `reason="no_original_dst"} 1`)
	})
}
