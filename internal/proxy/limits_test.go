package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The inbound HTTP/2 server announces the configured stream limit.
func TestHTTP2AnnouncesMaxConcurrentStreams(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tp := startProxy(t, "limits: {maxConcurrentStreams: 7}\n", fixedDst(backend))
	c := dialWithDeadline(t, tp.inbound)
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T", f)
	}
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); !ok || v != 7 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d (%v), want 7", v, ok)
	}
	if v, ok := sf.Value(http2.SettingMaxFrameSize); ok && v != 16384 {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d", v)
	}
}

func TestHTTP2HeaderLimit(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tp := startProxy(t, "limits: {maxHeaderCount: 5}\n", fixedDst(backend))
	req, _ := http.NewRequest("GET", "http://x/", nil)
	for _, k := range []string{"A", "B", "C", "D", "E", "F"} {
		req.Header.Set("X-"+k, "1")
	}
	resp, err := h2cClient(tp.inbound).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
}

// Connections beyond maxConnections are closed at once and counted.
func TestMaxConnections(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) { io.Copy(c, c) })
	tp := startProxy(t, withService("limits: {maxConnections: 2}\n", backend), fixedDst(serviceVIP))
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", tp.outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "\x00x")
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "\x00x")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("third connection answered %q", b)
	}
	if !strings.Contains(tp.metricsText(t), `reason="connection_limit"} 1`) {
		t.Error("limit not counted")
	}
	held[0].Close()
	waitFor(t, func() bool { return tp.listeners[0].active.Load() < 2 })
	c2, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "\x00y")
	b := make([]byte, 2)
	if _, err := io.ReadFull(c2, b); err != nil || string(b) != "\x00y" {
		t.Errorf("connection after one closed: %q %v", b, err)
	}
}

// forwardTo: loopback sends inbound connections to 127.0.0.1 on the
// original port, whatever address they were for.
func TestInboundForwardToLoopback(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) { io.WriteString(c, "app") })
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(t, "inbound: {address: \"127.0.0.1:0\", forwardTo: loopback, opaquePorts: ["+port+"]}\n", fixedDst("10.1.2.3:"+port))
	c := dialWithDeadline(t, tp.inbound)
	if b, _ := io.ReadAll(c); string(b) != "app" {
		t.Errorf("read %q", b)
	}
	if m := tp.metricsText(t); !strings.Contains(m, `meshproxy_detections_total{direction="inbound",protocol="opaque"} 1`) {
		t.Errorf("metrics:\n%s", m)
	}
}

// A silent HTTP/2 upstream is cut after streamIdleTimeout with 504.
func TestHTTP2StreamIdleTimeout(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	tp := startProxy(t, "limits: {streamIdleTimeout: 200ms}\n", fixedDst(backend))
	start := time.Now()
	resp, err := h2cClient(tp.inbound).Get("http://x/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 3*time.Second {
		t.Errorf("status %d after %v", resp.StatusCode, time.Since(start))
	}
}

// requestTimeout bounds a whole HTTP/1 exchange even while bytes flow.
func TestHTTP1RequestTimeout(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
		for range 100 {
			if _, err := io.WriteString(c, "x"); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	tp := startProxy(t, withService("limits: {requestTimeout: 300ms}\n", backend), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	io.ReadAll(c)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("request ran %v with a 300ms timeout", d)
	}
	waitFor(t, func() bool { return strings.Contains(tp.metricsText(t), `reason="timeout"} 1`) })
}

// A client that stops reading a large response does not hold the proxy
// past streamIdleTimeout.
func TestHTTP1SlowReaderIsCut(t *testing.T) {
	big := strings.Repeat("z", 8<<20)
	backend := listenTCP(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big)
	})
	tp := startProxy(t, withService("limits: {streamIdleTimeout: 300ms}\n", backend), fixedDst(serviceVIP))
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	// Never read: the proxy's writes block once the socket buffers fill.
	waitFor(t, func() bool { return tp.listeners[0].active.Load() == 0 })
}

// Streams from several client connections share one pooled upstream
// HTTP/2 connection.
func TestHTTP2MultiplexesUpstream(t *testing.T) {
	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(20 * time.Millisecond)
			io.WriteString(w, r.Proto)
		}),
		Protocols: new(http.Protocols),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	defer srv.Close()
	tp := startProxy(t, "", fixedDst(ln.Addr().String()))
	var wg sync.WaitGroup
	for range 3 {
		c := h2cClient(tp.inbound) // a client connection of its own
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.Get("http://x/")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "HTTP/2.0" {
					t.Errorf("upstream saw %q", b)
				}
			}()
		}
	}
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Errorf("30 streams over 3 client connections used %d upstream connections, want 1", n)
	}
}

// An HTTP/1 upstream that accepts and never answers is cut after
// streamIdleTimeout with 504.
func TestHTTP1SilentUpstream(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	tp := startProxy(t, withService("limits: {streamIdleTimeout: 200ms}\n", backend), fixedDst(serviceVIP))
	start := time.Now()
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got != "HTTP/1.1 504 Gateway Timeout" {
		t.Errorf("status %q", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}
