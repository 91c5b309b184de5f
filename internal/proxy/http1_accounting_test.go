package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A response the proxy had to cut is recorded as what the client got. When
// nothing of it had reached the client (the upstream's framing broke within
// the first buffer), the client gets 502 and the record says 502, not the
// 200 the upstream began and the client never saw. When the head had
// reached the client (the upstream reset mid-body), the record keeps that
// status with the reason, in the metrics and the access log alike.
func TestHTTP1CutResponseAccounting(t *testing.T) {
	for _, tc := range []struct {
		name string
		// serve answers the request on the upstream connection.
		serve func(c *net.TCPConn)
		// status is the status line the client reads; sent the body bytes
		// it gets before the close.
		status string
		sent   int64
		code   string
	}{{
		name: "bad chunk within the first buffer",
		serve: func(c *net.TCPConn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
		},
		status: "HTTP/1.1 502 Bad Gateway", code: "502",
	}, {
		name: "upstream reset mid-body",
		serve: func(c *net.TCPConn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			time.Sleep(100 * time.Millisecond)
			c.SetLinger(0) // the close sends RST
		},
		status: "HTTP/1.1 200 OK", sent: 10, code: "200",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			backend := listenTCP(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					tc.serve(c.(*net.TCPConn))
				}
			})
			var log lockedBuffer
			tp := startProxy(t, withService("", backend), fixedDst(serviceVIP), func(o *Options) { o.AccessLog = &log })
			got := exchangeRaw(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if line, _, _ := strings.Cut(got, "\r\n"); line != tc.status {
				t.Fatalf("client got %q, want %s", got, tc.status)
			}
			if tc.sent > 0 && !strings.HasSuffix(got, "\r\n\r\n0123456789") {
				t.Errorf("client got %q, want the head and 10 bytes", got)
			}
			waitFor(t, func() bool { return entries(&log) == 1 })
			e := lastEntry(t, &log)
			if tc.status[9:12] != strconv.Itoa(e.Status) || e.Error != "upstream" || e.BytesSent != tc.sent || e.Upstream != backend {
				t.Errorf("access log %+v", e)
			}
			text := tp.metricsText(t)
			for _, want := range []string{
				`meshproxy_requests_total{direction="outbound",service="web.test",code="` + tc.code + `",method_class="read"} 1`,
				`meshproxy_errors_total{direction="outbound",service="web.test",reason="upstream"} 1`,
			} {
				if !strings.Contains(text, want) {
					t.Errorf("metrics lack %s\n%s", want, text)
				}
			}
		})
	}
}
