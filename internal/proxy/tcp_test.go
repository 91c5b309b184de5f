package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// listenTCP runs serve for every connection accepted on a loopback port.
func listenTCP(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String()
}

// A client that half-closes after sending must still receive the server's
// answer, which the server sends only after it saw the end of the request.
func TestTCPHalfClose(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes", len(b))
	})
	tp := startProxy(t, "", fixedDst(backend))
	c := dialWithDeadline(t, tp.outbound)
	payload := strings.Repeat("x", 100000)
	if _, err := io.WriteString(c, "\x00binary "+payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("got %d bytes", len(payload)+8); string(b) != want {
		t.Fatalf("answer %q, want %q", b, want)
	}
	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `meshproxy_tcp_bytes_total{direction="outbound",service="unknown",flow="to_server"} 100008`)
	})
}

// A server that speaks first gets its greeting to a silent client once
// detection gives up.
func TestTCPServerSpeaksFirst(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		io.WriteString(c, "220 hello\r\n")
		io.Copy(c, c)
	})
	tp := startProxy(t, withService("limits: {detectTimeout: 100ms}\n", backend), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	buf := make([]byte, 11)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "220 hello\r\n" {
		t.Fatalf("greeting %q", buf)
	}
	io.WriteString(c, "EHLO x\r\n")
	if _, err := io.ReadFull(c, buf[:8]); err != nil || string(buf[:8]) != "EHLO x\r\n" {
		t.Fatalf("echo %q, %v", buf[:8], err)
	}
	if m := tp.metricsText(t); !strings.Contains(m, `meshproxy_detections_total{direction="outbound",protocol="timeout"} 1`) {
		t.Errorf("detection timeout not counted:\n%s", m)
	}
}

// An opaque port skips detection: the greeting arrives without the delay.
func TestTCPOpaquePortSkipsDetection(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) { io.WriteString(c, "* OK\r\n") })
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(t, "limits: {detectTimeout: 10s}\noutbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "* OK\r\n" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestLoopIsRefused(t *testing.T) {
	// The destination is the proxy's own listener, known once it started.
	var self atomic.Value
	tp := startProxy(t, "", func(net.Conn) (netip.AddrPort, error) {
		return netip.MustParseAddrPort(self.Load().(string)), nil
	})
	self.Store(tp.outbound)
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("a looping connection got an answer: %q", b)
	}
	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `meshproxy_errors_total{direction="outbound",service="unknown",reason="loop"} 1`)
	})
}

func TestTCPIdleTimeout(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	tp := startProxy(t, "limits: {tcpIdleTimeout: 200ms, detectTimeout: 50ms}\n", fixedDst(backend))
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle connection closed after %v", d)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An outbound destination that no service names is spliced as plain TCP to
// its original address: no detection (a server that speaks first is heard
// at once, on a port not marked opaque) and no HTTP parsing (a malformed
// request reaches the server byte for byte instead of being answered 400).
func TestUnknownDestinationIsPlainTCP(t *testing.T) {
	greeter := listenTCP(t, func(c net.Conn) { io.WriteString(c, "220 hello\r\n") })
	bad := "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"
	recorder := listenTCP(t, func(c net.Conn) {
		buf := make([]byte, len(bad))
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		io.WriteString(c, "got:")
		c.Write(buf)
	})
	dsts := map[string]string{}
	var mu sync.Mutex
	tp := startProxy(t, "limits: {detectTimeout: 10s}\n", func(c net.Conn) (netip.AddrPort, error) {
		mu.Lock()
		defer mu.Unlock()
		return netip.MustParseAddrPort(dsts[c.RemoteAddr().String()]), nil
	})
	dial := func(backend string) net.Conn {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		c, err := net.Dial("tcp", tp.outbound)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		dsts[c.LocalAddr().String()] = backend
		return c
	}

	c := dial(greeter)
	start := time.Now()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if b, err := io.ReadAll(c); err != nil || string(b) != "220 hello\r\n" {
		t.Fatalf("greeting %q, %v", b, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("greeting took %v: the connection waited for detection", d)
	}
	c.Close()

	c = dial(recorder)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, bad)
	if b, err := io.ReadAll(c); err != nil || string(b) != "got:"+bad {
		t.Fatalf("answer %q, %v; want the request echoed as sent", b, err)
	}
	c.Close()

	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `meshproxy_tcp_connections_closed_total{direction="outbound",service="unknown"} 2`)
	})
	m := tp.metricsText(t)
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, `meshproxy_detections_total{direction="outbound"`) && !strings.HasSuffix(l, " 0") ||
			strings.HasPrefix(l, "meshproxy_requests_total") {
			t.Errorf("an unknown destination went through detection or HTTP: %s", l)
		}
	}
	if !strings.Contains(m, `meshproxy_tcp_bytes_total{direction="outbound",service="unknown",flow="to_server"} `+fmt.Sprint(len(bad))) {
		t.Errorf("bytes to the server not counted:\n%s", m)
	}
}
