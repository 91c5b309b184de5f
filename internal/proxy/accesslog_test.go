package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/proxy/telemetry"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

func TestAccessLog(t *testing.T) {
	var buf lockedBuffer
	backend := echoBackend(t)
	tp := startProxy(t, withService("", backend), fixedDst(serviceVIP), func(o *Options) { o.AccessLog = &buf })
	if got := rawRequest(t, tp.outbound, "POST /p?q=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc"); got != "HTTP/1.1 200 OK" {
		t.Fatal(got)
	}
	// A TCP connection is logged when it closes.
	tcpBackend := listenTCP(t, func(c net.Conn) { io.Copy(c, c) })
	tp2 := startProxy(t, "", fixedDst(tcpBackend), func(o *Options) { o.AccessLog = &buf })
	c, err := net.Dial("tcp", tp2.outbound)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "\x00\x01hello")
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	c.Close()
	waitFor(t, func() bool { return len(buf.lines()) == 2 })
	// The HTTP line is written after the response, so it may come second.
	var http1, tcp telemetry.AccessEntry
	for _, l := range buf.lines() {
		var e telemetry.AccessEntry
		json.Unmarshal([]byte(l), &e)
		if e.Protocol == "http1" {
			http1 = e
		} else {
			tcp = e
		}
	}
	if http1.Protocol != "http1" || http1.Method != "POST" || http1.Path != "/p?q=1" || http1.Authority != "web" ||
		http1.Status != 200 || http1.BytesReceived != 3 || http1.BytesSent != 3 || http1.Upstream != backend ||
		http1.Direction != "outbound" || http1.Service != "web.test" || http1.Destination != serviceVIP {
		t.Errorf("HTTP entry %+v", http1)
	}
	if tcp.Protocol != "tcp" || tcp.BytesReceived != 7 || tcp.BytesSent != 7 || tcp.Upstream != tcpBackend {
		t.Errorf("TCP entry %+v", tcp)
	}
}

// TLS is passed through untouched (the client verifies the backend's own
// certificate) and its server name is recorded.
func TestTLSPassthroughRecordsSNI(t *testing.T) {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	defer backend.Close()
	var buf lockedBuffer
	tp := startProxy(t, withService("", hostPort(strings.Replace(backend.URL, "https", "http", 1))), fixedDst(serviceVIP), func(o *Options) { o.AccessLog = &buf })
	tr := backend.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", tp.outbound)
	}
	tr.TLSClientConfig.ServerName = "example.com" // httptest's certificate is for example.com
	c := &http.Client{Transport: tr}
	resp, err := c.Get("https://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()
	if string(b) != "secure" {
		t.Fatalf("body %q", b)
	}
	waitFor(t, func() bool { return len(buf.lines()) == 1 && buf.lines()[0] != "" })
	var e telemetry.AccessEntry
	json.Unmarshal([]byte(buf.lines()[0]), &e)
	if e.Protocol != "tls" || e.SNI != "example.com" {
		t.Errorf("entry %+v", e)
	}
	if m := tp.metricsText(t); !strings.Contains(m, `meshproxy_detections_total{direction="outbound",protocol="tls"} 1`) {
		t.Errorf("metrics:\n%s", m)
	}
}
