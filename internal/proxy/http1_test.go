package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/proxy/telemetry"
)

func echoBackend(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		fmt.Fprintf(w, "%s", b)
	}))
	t.Cleanup(srv.Close)
	return hostPort(srv.URL)
}

func TestHTTP1Hardening(t *testing.T) {
	tp := startProxy(t, withService("limits: {maxHeaderCount: 10, maxHeaderBytes: 2048}\n", echoBackend(t)), fixedDst(serviceVIP))
	many := strings.Repeat("X-A: 1\r\n", 11)
	big := "X-Big: " + strings.Repeat("b", 3000) + "\r\n"
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"ok", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"},
		{"content-length and transfer-encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"transfer-encoding then content-length", "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"two different content-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "HTTP/1.1 400 Bad Request"},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "HTTP/1.1 400 Bad Request"},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		{"head too large", "GET / HTTP/1.1\r\nHost: a\r\n" + big + "\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		{"head far too large", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat(big, 5) + "\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawRequest(t, tp.outbound, tc.raw); got != tc.want {
				t.Errorf("status %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHTTP1HeaderReadTimeout(t *testing.T) {
	tp := startProxy(t, withService("limits: {headerReadTimeout: 200ms}\n", echoBackend(t)), fixedDst(serviceVIP))
	start := time.Now()
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "); got != "HTTP/1.1 408 Request Timeout" {
		t.Errorf("status %q, want 408", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow client held the connection for %v", d)
	}
}

func TestHTTP1IdleTimeout(t *testing.T) {
	tp := startProxy(t, withService("limits: {idleTimeout: 200ms}\n", echoBackend(t)), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle connection held for %v", d)
	}
}

// Three endpoints on one port of three loopback addresses: requests to the
// service's virtual address spread over all of them.
func TestHTTP1KnownServiceBalancesOverEndpoints(t *testing.T) {
	first, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(first.Addr().String())
	lns := []net.Listener{first}
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		ln, err := net.Listen("tcp", ip+":"+port)
		if err != nil {
			t.Skipf("binding a second loopback address: %v", err)
		}
		lns = append(lns, ln)
	}
	for i, ln := range lns {
		name := fmt.Sprint("ep", i)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	cfg := `services:
- name: web
  namespace: default
  addresses: [10.96.0.10]
  ports: [{port: 80, targetPort: ` + port + `}]
  endpoints:
  - {address: 127.0.0.1, identity: "spiffe://cluster.local/ns/default/sa/web"}
  - {address: 127.0.0.2}
  - {address: 127.0.0.3, weight: 2}
  - {address: 127.0.0.4, weight: 0}
`
	tp := startProxy(t, cfg, fixedDst("10.96.0.10:80"))
	client := proxyClient(tp.outbound)
	hits := map[string]int{}
	for range 200 {
		resp, err := client.Get("http://web.default/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		hits[string(b)]++
	}
	// Sequential requests leave nothing in flight, so the choice is the
	// weighted draw alone: expect about 50, 50, 100.
	if hits["ep0"] < 20 || hits["ep1"] < 20 || hits["ep2"] < 60 {
		t.Errorf("hits %v, want about 50/50/100", hits)
	}
	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `meshproxy_requests_total{direction="outbound",service="web.default",code="200",method_class="read"} 200`)
	})
}

func TestHTTP1NoEndpoints(t *testing.T) {
	cfg := `services:
- {name: web, namespace: default, addresses: [10.96.0.10], ports: [{port: 80}]}
`
	tp := startProxy(t, cfg, fixedDst("10.96.0.10:80"))
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got != "HTTP/1.1 503 Service Unavailable" {
		t.Errorf("status %q", got)
	}
}

func TestHTTP1UpstreamDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tp := startProxy(t, withService("", addr), fixedDst(serviceVIP))
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got != "HTTP/1.1 502 Bad Gateway" {
		t.Errorf("status %q", got)
	}
	// The body says what failed, not where: the endpoint's address is the
	// mesh's business, not the client's.
	if got := exchangeRaw(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasSuffix(got, "\r\n\r\nBad Gateway: upstream unreachable\n") || strings.Contains(got, "127.0.0.1") {
		t.Errorf("answer %q", got)
	}
}

func proxyClient(addr string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}}
}

func TestHTTP1BodiesAndTrailers(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(201)
		w.Write(b)
		w.(http.Flusher).Flush()
		w.Write([]byte("!"))
		w.Header().Set("X-Sum", fmt.Sprint(len(b), r.Trailer.Get("X-Req-Trailer")))
	}))
	defer backend.Close()
	tp := startProxy(t, withService("", hostPort(backend.URL)), fixedDst(serviceVIP))
	client := proxyClient(tp.outbound)
	// Chunked request with a trailer.
	pr, pw := io.Pipe()
	go func() { io.WriteString(pw, strings.Repeat("a", 70000)); pw.Close() }()
	req, _ := http.NewRequest("PUT", "http://x/", pr)
	req.Trailer = http.Header{"X-Req-Trailer": {"t"}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || len(b) != 70001 || resp.Trailer.Get("X-Sum") != "70000t" {
		t.Fatalf("status %d, %d bytes, trailer %q", resp.StatusCode, len(b), resp.Trailer.Get("X-Sum"))
	}
	// HEAD has no body whatever the upstream says.
	resp, err = client.Head("http://x/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestHTTP1ExpectContinue(t *testing.T) {
	tp := startProxy(t, withService("", echoBackend(t)), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "hello" {
		t.Fatalf("body %q", b)
	}
}

func TestHTTP1Upgrade(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	}))
	defer backend.Close()
	tp := startProxy(t, withService("", hostPort(backend.URL)), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly ")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("response %v, %v", resp, err)
	}
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(br)
	if string(b) != "early ping" {
		t.Fatalf("echo %q", b)
	}
}

func TestHTTP1StreamIdleTimeout(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer backend.Close()
	tp := startProxy(t, withService("limits: {streamIdleTimeout: 200ms}\n", hostPort(backend.URL)), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	start := time.Now()
	io.ReadAll(c)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("stalled stream held for %v", d)
	}
	waitFor(t, func() bool {
		return strings.Contains(tp.metricsText(t), `reason="timeout"} 1`)
	})
}

// An upstream that sends headers without end gets a 502, not the proxy's
// memory.
func TestHTTP1UpstreamHeadLimit(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Junk: " + strings.Repeat("j", 1000) + "\r\n"
		for range 2000 {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
	tp := startProxy(t, withService("", backend), fixedDst(serviceVIP))
	if got := rawRequest(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got != "HTTP/1.1 502 Bad Gateway" {
		t.Errorf("status %q", got)
	}
}

// rawBackend answers every request it reads with respond(request head),
// raw bytes written as they are (closing the connection after a response
// without framing fields), and sends each request's head as it
// arrived (lines without their CRLF) on the returned channel. It reads
// requests with net/http, standing in for the application.
func rawBackend(t *testing.T, respond func(head []string) string) (string, <-chan []string) {
	heads := make(chan []string, 16)
	addr := listenTCP(t, func(c net.Conn) {
		var raw bytes.Buffer
		br := bufio.NewReader(io.TeeReader(c, &raw))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			// The raw bytes read so far start with this request's head;
			// a pipelined request after it stays for the next round.
			b := raw.Bytes()
			end := bytes.Index(b, []byte("\r\n\r\n"))
			head := strings.Split(string(b[:end]), "\r\n")
			raw.Next(len(b) - br.Buffered())
			heads <- head
			resp := respond(head)
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			if !strings.Contains(resp, "Content-Length") && !strings.Contains(resp, "chunked") {
				return // a body that ends with the connection
			}
		}
	})
	return addr, heads
}

// exchange writes raw to a new connection to addr, half-closes it, and
// returns everything the proxy sent back.
func exchangeRaw(t *testing.T, addr, raw string) string {
	t.Helper()
	c := dialWithDeadline(t, addr)
	io.WriteString(c, raw)
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return string(b)
}

// What the upstream receives, and what the client gets back, for the
// shapes of HTTP/1 messages a proxy must re-write.
func TestHTTP1Rewrites(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, tc := range []struct {
		name string
		// req is what the client sends; resp what the upstream answers.
		req, resp string
		// upstream lists lines the upstream's head must hold (the first is
		// its request line), notUpstream lines (by prefix) it must not.
		upstream, notUpstream []string
		// client is the exact answer the client gets.
		client string
	}{{
		name:        "hop-by-hop fields dropped, TE trailers kept",
		req:         "GET /p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nX-End: 2\r\n\r\n",
		resp:        "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
		upstream:    []string{"GET /p HTTP/1.1", "Host: a", "TE: trailers", "X-End: 2"},
		notUpstream: []string{"Connection", "X-Private", "Keep-Alive", "Proxy-Connection", "TE: trailers, deflate"},
		client:      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}, {
		name:        "absolute-form target: its authority is the Host",
		req:         "GET http://svc.test:8080/p?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
		resp:        ok,
		upstream:    []string{"GET /p?q=1 HTTP/1.1", "Host: svc.test:8080"},
		notUpstream: []string{"Host: other"},
		client:      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
	}, {
		name:     "HTTP/1.0 without Host, keep-alive",
		req:      "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		resp:     ok,
		upstream: []string{"GET / HTTP/1.1", "Host: 127.0.0.1:"},
		client:   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
	}, {
		name:   "HTTP/1.0 upstream body until close, re-framed as chunks",
		req:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		resp:   "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
		client: "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n",
	}, {
		name:   "HTTP/1.0 client, body until close stays so",
		req:    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		resp:   "HTTP/1.0 200 OK\r\n\r\nuntil the end",
		client: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
	}, {
		name:   "HEAD keeps the length of what GET would send",
		req:    "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
		resp:   "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
		client: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
	}, {
		name:   "chunked response with trailers, extensions dropped",
		req:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		resp:   "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: t\r\n\r\n",
		client: "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: t\r\n\r\n",
	}, {
		name:   "Transfer-Encoding overrides Content-Length in a response",
		req:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		resp:   "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		client: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	}, {
		name:   "interim responses are not forwarded",
		req:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		resp:   "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + ok,
		client: ok,
	}, {
		name:   "malformed response",
		req:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		resp:   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		client: "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 29\r\nConnection: close\r\n\r\nBad Gateway: upstream failed\n",
	}, {
		name:     "pipelined requests answered in order",
		req:      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		resp:     ok,
		upstream: []string{"GET /1 HTTP/1.1"},
		client:   ok + ok,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			backend, heads := rawBackend(t, func([]string) string { return tc.resp })
			tp := startProxy(t, withService("", backend), fixedDst(serviceVIP))
			if got := exchangeRaw(t, tp.outbound, tc.req); got != tc.client {
				t.Errorf("client got\n%q\nwant\n%q", got, tc.client)
			}
			head := <-heads
			if len(tc.upstream) > 0 && head[0] != tc.upstream[0] {
				t.Errorf("upstream request line %q, want %q", head[0], tc.upstream[0])
			}
			for _, want := range tc.upstream[min(1, len(tc.upstream)):] {
				if !slices.ContainsFunc(head, func(l string) bool { return strings.HasPrefix(l, want) }) {
					t.Errorf("upstream head lacks %q:\n%s", want, strings.Join(head, "\n"))
				}
			}
			for _, bad := range tc.notUpstream {
				if slices.ContainsFunc(head[1:], func(l string) bool { return strings.HasPrefix(l, bad) }) {
					t.Errorf("upstream head has %q:\n%s", bad, strings.Join(head, "\n"))
				}
			}
		})
	}
}

// To a port the configuration names as a CONNECT proxy, a CONNECT
// answered 2xx becomes a tunnel, as an upgrade does.
func TestHTTP1Connect(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != "CONNECT" || req.Host != "db.test:5432" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		io.Copy(c, br)
	})
	tp := startProxy(t, withService("outbound: {address: \"127.0.0.1:0\", connectProxyPorts: [80]}\n", backend), fixedDst(serviceVIP))
	got := exchangeRaw(t, tp.outbound, "CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\nping")
	if want := "HTTP/1.1 200 Connection established\r\n\r\nping"; got != want {
		t.Errorf("outbound: got %q, want %q", got, want)
	}
	_, port, _ := net.SplitHostPort(backend)
	tp = startProxy(t, "inbound: {address: \"127.0.0.1:0\", connectProxyPorts: ["+port+"]}\n", fixedDst(backend))
	got = exchangeRaw(t, tp.inbound, "CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\nping")
	if want := "HTTP/1.1 200 Connection established\r\n\r\nping"; got != want {
		t.Errorf("inbound: got %q, want %q", got, want)
	}
}

// An upgraded connection is a TCP connection from then on: the request
// timeouts (and the write deadline of the 101 response) no longer apply,
// only tcpIdleTimeout.
func TestHTTP1UpgradeOutlivesRequestTimeouts(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br)
	})
	tp := startProxy(t, withService("limits: {streamIdleTimeout: 100ms, requestTimeout: 200ms, tcpIdleTimeout: 300ms}\n", backend), fixedDst(serviceVIP))
	c := dialWithDeadline(t, tp.outbound)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("response %v, %v", resp, err)
	}
	// Messages 150 ms apart for 600 ms: past both request timeouts, never
	// silent for tcpIdleTimeout.
	for i := range 4 {
		time.Sleep(150 * time.Millisecond)
		msg := fmt.Sprintf("m%d;", i)
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("message %d: echoed %q, %v", i, got, err)
		}
	}
	// Then silence: tcpIdleTimeout ends it.
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte from a silent tunnel")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("silent tunnel held for %v", d)
	}
}

// Bytes an upstream sends after the end of a response (here, a whole
// second response nobody asked for) must not become the answer to the next
// request sent on that connection, whether they came with the response or
// later, while the connection sat idle in the pool: it is not reused.
func TestHTTP1UpstreamBytesAfterResponse(t *testing.T) {
	const stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
	for _, tc := range []struct {
		name  string
		delay time.Duration // before the stray bytes
	}{{"with the response", 0}, {"while idle", 50 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			backend := listenTCP(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					ok := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
					if tc.delay == 0 {
						io.WriteString(c, ok+stale)
						continue
					}
					io.WriteString(c, ok)
					time.Sleep(tc.delay)
					io.WriteString(c, stale)
				}
			})
			tp := startProxy(t, withService("", backend), fixedDst(serviceVIP))
			for i := range 2 {
				got := exchangeRaw(t, tp.outbound, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
				if want := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"; got != want {
					t.Fatalf("request %d: got %q, want %q", i, got, want)
				}
				time.Sleep(2 * tc.delay) // the stray bytes arrive
			}
		})
	}
}

// A CONNECT to a destination that is not configured as a CONNECT proxy is
// answered 405 by the proxy and never reaches the application. Forwarded,
// an application that is no CONNECT proxy (net/http here) answers it 200
// and goes on parsing HTTP, while the proxy would have turned the
// connection into a raw tunnel: a request with both Content-Length and
// Transfer-Encoding sent next would reach the application unchecked.
// After the 405 the connection is still HTTP, held to the proxy's rules.
func TestHTTP1ConnectRefusedUnlessConnectProxy(t *testing.T) {
	seen := make(chan string, 16)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Method + " " + r.RequestURI
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(app.Close)
	smuggle := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tc := range []struct {
		name, cfg string
		addr      func(*testProxy) string
		dst       string
	}{
		{"outbound", withService("", hostPort(app.URL)), func(tp *testProxy) string { return tp.outbound }, serviceVIP},
		{"inbound", "", func(tp *testProxy) string { return tp.inbound }, hostPort(app.URL)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log lockedBuffer
			tp := startProxy(t, tc.cfg, fixedDst(tc.dst), func(o *Options) { o.AccessLog = &log })
			c := dialWithDeadline(t, tc.addr(tp))
			br := bufio.NewReader(c)
			io.WriteString(c, "CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" || strings.Contains(resp.Header.Get("Allow"), "CONNECT") || resp.Close {
				t.Fatalf("CONNECT answered %d, Allow %q, close %v", resp.StatusCode, resp.Header.Get("Allow"), resp.Close)
			}
			// The connection is still HTTP: an ordinary request is forwarded.
			io.WriteString(c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("request after the 405: %v, %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			// And the smuggling attempt meets the proxy's parser.
			io.WriteString(c, smuggle)
			if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("smuggling attempt: %v, %v", resp, err)
			}
			if got := <-seen; got != "GET /after" {
				t.Errorf("the application saw %q first, want GET /after", got)
			}
			select {
			case got := <-seen:
				t.Errorf("the application saw %q", got)
			case <-time.After(100 * time.Millisecond):
			}
			waitFor(t, func() bool { return entries(&log) == 3 })
			var e telemetry.AccessEntry
			json.Unmarshal([]byte(log.lines()[0]), &e)
			if e.Method != "CONNECT" || e.Status != 405 || e.Upstream != "" {
				t.Errorf("access log %+v", e)
			}
		})
	}
}

// An HTTP/2 CONNECT stream is refused the same way outside
// connectProxyPorts, and the connection serves the next stream.
func TestHTTP2ConnectRefusedUnlessConnectProxy(t *testing.T) {
	seen := make(chan string, 16)
	app := dualBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Method
		w.WriteHeader(http.StatusOK)
	}))
	backend := "127.0.0.1:" + strconv.Itoa(int(app))
	for _, tc := range []struct {
		name, cfg string
		addr      func(*testProxy) string
		dst       string
	}{
		{"outbound", withService("", backend), func(tp *testProxy) string { return tp.outbound }, serviceVIP},
		{"inbound", "", func(tp *testProxy) string { return tp.inbound }, backend},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, tc.cfg, fixedDst(tc.dst))
			c := h2cClient(tc.addr(tp))
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest(http.MethodConnect, "http://db.test:5432", pr)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
				t.Fatalf("CONNECT answered %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
			}
			resp, err = c.Get("http://web/after")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("stream after the 405: %v, %v", resp, err)
			}
			resp.Body.Close()
			if got := <-seen; got != http.MethodGet {
				t.Errorf("the application saw %s", got)
			}
		})
	}
}
