package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

var kib = bytes.Repeat([]byte("x"), 1024)

// benchBackend answers every request with 1 KiB, like the load harness's
// echo server.
func benchBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(kib)
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func benchHTTP(b *testing.B, addr string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}
	defer tr.CloseIdleConnections()
	benchGets(b, &http.Client{Transport: tr})
}

// benchGets measures parallel GETs of 1 KiB responses through c.
func benchGets(b *testing.B, c *http.Client) {
	b.SetBytes(1024)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get("http://svc.test/bench")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkHTTP1Direct is the baseline: client straight to the backend.
func BenchmarkHTTP1Direct(b *testing.B) {
	benchHTTP(b, benchBackend(b))
}

// BenchmarkHTTP1Proxy goes through the outbound listener to a configured
// service (an unknown destination would be spliced as TCP): detection once
// per connection, then the HTTP/1 loop with a pooled upstream connection.
// The difference to BenchmarkHTTP1Direct is the proxy's cost per request
// (the client, backend and proxy share the machine's cores).
func BenchmarkHTTP1Proxy(b *testing.B) {
	tp := startProxy(b, withService("", benchBackend(b)), fixedDst(serviceVIP))
	benchHTTP(b, tp.outbound)
}

// BenchmarkHTTP1ProxyKnownService is BenchmarkHTTP1Proxy with the
// service written out (the HTTP/1 path always has a service now).
func BenchmarkHTTP1ProxyKnownService(b *testing.B) {
	backend := benchBackend(b)
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(b, `services:
- {name: svc, namespace: test, addresses: [10.96.0.30], ports: [{port: 80, targetPort: `+port+`}], endpoints: [{address: 127.0.0.1}]}
`, fixedDst("10.96.0.30:80"))
	benchHTTP(b, tp.outbound)
}

// BenchmarkH2Proxy sends HTTP/2 streams through the inbound listener to an
// h2c backend.
func BenchmarkH2Proxy(b *testing.B) {
	backend := h2cOnlyBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(kib)
	}))
	tp := startProxy(b, "", fixedDst(backend))
	benchGets(b, h2cClient(tp.inbound))
}

// BenchmarkTCPSplice measures bulk throughput of one opaque TCP connection
// through the proxy (splice(2) both ways).
func BenchmarkTCPSplice(b *testing.B) {
	backend := listenTCP(b, func(c net.Conn) { io.Copy(io.Discard, c); c.Write([]byte("k")) })
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(b, "outbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := bytes.Repeat([]byte("y"), 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, _ := io.ReadAll(c); string(got) != "k" {
		b.Fatalf("end marker %q", got)
	}
}

// BenchmarkParseRequest is the head parse every HTTP/1 request pays.
func BenchmarkParseRequest(b *testing.B) {
	head := []byte("GET /api/v1/reviews/12345 HTTP/1.1\r\nHost: reviews.default.svc.cluster.local\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Request-Id: " + strings.Repeat("a", 36) + "\r\n\r\n")
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	var h h1head
	for b.Loop() {
		if err := h.parseRequest(head, 100); err != nil {
			b.Fatal(err)
		}
	}
}

// benchEcho answers every request with its body, like the load harness's
// echo server (fortio's /echo).
func benchEcho(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// BenchmarkHTTP1ProxyPost is the load harness's request through the
// outbound listener: POST with a 1 KiB body, echoed back.
func BenchmarkHTTP1ProxyPost(b *testing.B) {
	tp := startProxy(b, withService("", benchEcho(b)), fixedDst(serviceVIP))
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", tp.outbound)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	b.SetBytes(1024)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Post("http://svc.test/echo", "application/octet-stream", bytes.NewReader(kib))
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != 1024 {
				b.Fatalf("echoed %d bytes", n)
			}
		}
	})
}

// rawEcho is an HTTP/1 backend that costs next to nothing: it reads each
// request of the raw benchmarks (a head and a 1 KiB body) and writes a
// canned 1 KiB response, so that the proxy's share dominates a profile.
func rawEcho(b *testing.B) string { return rawServer(b, 1024) }

// rawServer is rawEcho for requests with a body of reqBody bytes.
func rawServer(b *testing.B, reqBody int) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n" + string(kib))
	return listenTCP(b, func(c net.Conn) {
		buf := make([]byte, 16<<10)
		have := 0
		for {
			n, err := c.Read(buf[have:])
			if err != nil {
				return
			}
			have += n
			for {
				end := bytes.Index(buf[:have], []byte("\r\n\r\n"))
				if end < 0 || have < end+4+reqBody {
					break
				}
				used := end + 4 + reqBody
				copy(buf, buf[used:have])
				have -= used
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
}

// BenchmarkHTTP1ProxyRaw is the load harness's request (POST, 1 KiB body,
// 1 KiB answer) through the outbound listener with a raw client and a raw
// backend, which cost next to nothing: the time per op is mostly the
// proxy's, and -cpuprofile shows where it goes.
func BenchmarkHTTP1ProxyRaw(b *testing.B) {
	tp := startProxy(b, withService("", rawEcho(b)), fixedDst(serviceVIP))
	benchRaw(b, tp, []byte("POST /echo HTTP/1.1\r\nHost: svc.test\r\nUser-Agent: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n"+string(kib)))
}

// BenchmarkHTTP1ProxyRawGet is the harness's -shape get (a GET answered
// with 1 KiB, the head fortio sends) through the outbound listener, with
// the raw client and backend of BenchmarkHTTP1ProxyRaw.
func BenchmarkHTTP1ProxyRawGet(b *testing.B) {
	tp := startProxy(b, withService("", rawServer(b, 0)), fixedDst(serviceVIP))
	benchRaw(b, tp, []byte("GET /echo?size=1024 HTTP/1.1\r\nHost: 10.96.0.80\r\nUser-Agent: fortio.org/fortio-1.63.9\r\n\r\n"))
}

// benchRaw sends req over one connection per parallel worker and reads
// each 1 KiB response.
func benchRaw(b *testing.B, tp *testProxy, req []byte) {
	b.SetBytes(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", tp.outbound)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			// Read one response: a head with Content-Length: 1024, then
			// the body.
			have := 0
			for {
				n, err := c.Read(buf[have:])
				if err != nil {
					b.Error(err)
					return
				}
				have += n
				if end := bytes.Index(buf[:have], []byte("\r\n\r\n")); end >= 0 && have >= end+4+1024 {
					break
				}
			}
		}
	})
}
