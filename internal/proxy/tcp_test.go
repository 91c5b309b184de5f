package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
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
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
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
	tp := startProxy(t, "limits: {detectTimeout: 100ms}\n", fixedDst(backend))
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
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
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
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
