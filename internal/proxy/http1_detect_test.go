package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/proxy/telemetry"
)

// countingBackend is an HTTP/1 application (net/http) that counts the
// requests it reads, to tell what reached it.
func countingBackend(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	addr := listenTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n.Add(1)
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return addr, &n
}

// entries counts the lines of the access log.
func entries(log *lockedBuffer) int {
	if l := log.lines(); l[0] != "" {
		return len(l)
	}
	return 0
}

// lastEntry returns the last line of the access log, decoded.
func lastEntry(t *testing.T, log *lockedBuffer) telemetry.AccessEntry {
	t.Helper()
	lines := log.lines()
	var e telemetry.AccessEntry
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &e); err != nil {
		t.Fatalf("access log %q: %v", lines, err)
	}
	return e
}

// Something that starts like an HTTP request (a method token and
// whitespace) on a port that is detected is held to HTTP's limits, however
// long or however far from RFC 9112's exact grammar its request line is:
// these used to fall back to opaque TCP, past maxHeaderBytes, the request
// metrics and the access log, straight to the application.
func TestDetectionHoldsRequestLinesToHTTP(t *testing.T) {
	backend, reached := countingBackend(t)
	var log lockedBuffer
	tp := startProxy(t, withService("limits: {maxHeaderBytes: 17000}\n", backend), fixedDst(serviceVIP),
		func(o *Options) { o.AccessLog = &log })
	longTarget := "/" + strings.Repeat("a", 18000)
	for _, tc := range []struct {
		name, raw, want, reason string
	}{
		{"target longer than the detection window and maxHeaderBytes", "GET " + longTarget + " HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 414 Request URI Too Long", "header_limit"},
		{"target longer than the detection window, headers too", "GET /" + strings.Repeat("a", 16500) + " HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("b", 1000) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large", "header_limit"},
		{"tab as separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"},
		{"HTTP/2.0 version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := entries(&log)
			if got := rawRequest(t, tp.outbound, tc.raw); got != tc.want {
				t.Fatalf("status %q, want %q", got, tc.want)
			}
			waitFor(t, func() bool { return entries(&log) > before })
			e := lastEntry(t, &log)
			if e.Protocol != "http1" || e.Error != tc.reason || tc.want[9:12] != strconv.Itoa(e.Status) {
				t.Errorf("access log %+v", e)
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d refused requests reached the application", n)
	}
	text := tp.metricsText(t)
	for _, want := range []string{
		`meshproxy_errors_total{direction="outbound",service="web.test",reason="header_limit"} 2`,
		`meshproxy_errors_total{direction="outbound",service="web.test",reason="bad_request"} 4`,
		`meshproxy_requests_total{direction="outbound",service="web.test",code="414",method_class="other"} 1`,
		`meshproxy_detections_total{direction="outbound",protocol="http1"} 6`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s\n%s", want, text)
		}
	}

	// Under maxHeaderBytes, a request line longer than the detection
	// window is an ordinary request, counted and logged.
	tp2 := startProxy(t, withService("", backend), fixedDst(serviceVIP), func(o *Options) { o.AccessLog = &log })
	if got := rawRequest(t, tp2.outbound, "GET "+longTarget+" HTTP/1.1\r\nHost: a\r\n\r\n"); got != "HTTP/1.1 200 OK" {
		t.Fatalf("status %q", got)
	}
	waitFor(t, func() bool { return strings.Contains(tp2.metricsText(t), `code="200",method_class="read"} 1`) })
}

// A request line trickled a byte at a time, slower than detection waits,
// is cut at headerReadTimeout counted from the accept, with 408: it used
// to become an opaque TCP connection held for tcpIdleTimeout.
func TestDetectionTrickledRequestLineTimesOut(t *testing.T) {
	backend, reached := countingBackend(t)
	var log lockedBuffer
	tp := startProxy(t, withService("limits: {detectTimeout: 100ms, headerReadTimeout: 1s}\n", backend), fixedDst(serviceVIP),
		func(o *Options) { o.AccessLog = &log })
	c := dialWithDeadline(t, tp.outbound)
	start := time.Now()
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		answer <- strings.TrimSpace(line)
	}()
	// Never ends: a byte at once, then one every 150 ms, each slower than
	// detectTimeout.
	trickle := "GET /" + strings.Repeat("a", 100)
	c.Write([]byte{trickle[0]})
	var got string
loop:
	for i := 1; ; i++ {
		select {
		case got = <-answer:
			break loop
		case <-time.After(150 * time.Millisecond):
			c.Write([]byte{trickle[i%len(trickle)]})
		}
	}
	if got != "HTTP/1.1 408 Request Timeout" {
		t.Fatalf("answer %q after %v, want 408", got, time.Since(start))
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("cut after %v, want about headerReadTimeout (1s) after the accept", d)
	}
	waitFor(t, func() bool { return entries(&log) == 1 })
	if e := lastEntry(t, &log); e.Status != 408 || e.Error != "timeout" || e.Protocol != "http1" {
		t.Errorf("access log %+v", e)
	}
	if reached.Load() != 0 {
		t.Error("the trickled request reached the application")
	}
}

// What is clearly not HTTP still falls back to TCP on a detected port:
// a first line that names no HTTP version (an SSH banner, an inline
// command), or bytes that cannot start a method.
func TestDetectionNotHTTPStaysTCP(t *testing.T) {
	echo := listenTCP(t, func(c net.Conn) { io.Copy(c, c) })
	tp := startProxy(t, withService("", echo), fixedDst(serviceVIP))
	for _, msg := range []string{"SSH-2.0-OpenSSH_9.6 Ubuntu-3\r\n", "PING\r\n", "\x00\x01binary"} {
		c := dialWithDeadline(t, tp.outbound)
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Errorf("%q: echoed %q, %v", msg, got, err)
		}
	}
	if !strings.Contains(tp.metricsText(t), `meshproxy_detections_total{direction="outbound",protocol="tcp"} 3`) {
		t.Errorf("detections:\n%s", tp.metricsText(t))
	}
}
