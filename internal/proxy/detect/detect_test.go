package detect

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Protocol
		done bool
	}{
		{"empty", "", TCP, false},
		{"GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", HTTP1, true},
		{"HTTP/1.0 LF only", "POST /a?b=c HTTP/1.0\n", HTTP1, true},
		{"extension method", "PROPFIND /dav HTTP/1.1\r\n", HTTP1, true},
		{"absolute form", "GET http://a.example/x HTTP/1.1\r\n", HTTP1, true},
		{"partial method", "GE", HTTP1, false},
		{"partial line", "GET /long/path", HTTP1, false},
		{"request line longer than the window", "GET /" + strings.Repeat("a", MaxPeek), HTTP1, false},
		// Not RFC 9112's exact grammar, but what a lenient server reads
		// as a request: HTTP/1, for the HTTP/1 parser to refuse.
		{"tab separator", "GET\t/ HTTP/1.1\r\n", HTTP1, true},
		{"trailing space", "GET / HTTP/1.1 \r\n", HTTP1, true},
		{"lower-case version", "GET / http/1.1\r\n", HTTP1, true},
		{"two spaces", "GET  / HTTP/1.1\r\n", HTTP1, true},
		{"empty line before the request", "\r\nGET / HTTP/1.1\r\n", HTTP1, true},
		{"only empty lines", "\r\n\r\n", HTTP1, false},
		{"SSH banner", "SSH-2.0-OpenSSH_9.6 Ubuntu-3\r\n", TCP, true},
		{"inline command without argument", "PING\r\n", TCP, true},
		{"token then binary", "AB\x00", TCP, true},
		{"Redis inline command", "GET key\r\n", TCP, true},
		{"lowercase memcached", "get key\r\n", TCP, true},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\n", HTTP1, true},
		{"control byte in target", "GET /\x01 HTTP/1.1\r\n", TCP, true},
		{"binary", "\x00\x01\x02", TCP, true},
		{"RESP", "*1\r\n$4\r\nPING\r\n", TCP, true},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP2, true},
		{"h2 preface with frames", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", HTTP2, true},
		{"partial h2 preface", "PRI * HTTP/2", HTTP2, false},
		{"broken h2 preface", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", HTTP2, true},
		{"TLS partial header", "\x16\x03", TCP, false},
		{"not TLS version", "\x16\x07\x01\x00\x10", TCP, true},
		{"TLS record not a ClientHello", "\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", TCP, true},
		{"TLS ClientHello still coming", "\x16\x03\x01\x00\x40\x01\x00\x00\x3c", TLS, false},
		{"long token", strings.Repeat("A", 40), HTTP1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _, done := Classify([]byte(tc.in))
			if p != tc.want || done != tc.done {
				t.Errorf("Classify(%q) = %v, done %v; want %v, done %v", tc.in, p, done, tc.want, tc.done)
			}
		})
	}
}

// clientHello returns the first flight of a real crypto/tls client.
func clientHello(t testing.TB, serverName string, alpn ...string) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go func() {
		tls.Client(c1, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, MaxPeek)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c2.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestSniffReadsALPN(t *testing.T) {
	for _, want := range [][]string{nil, {"meshctl.dev/h2"}, {"h2", "http/1.1"}} {
		hello := clientHello(t, "", want...)
		c1, c2 := net.Pipe()
		go func() { c1.Write(hello) }()
		res, err := Sniff(c2, 5*time.Second)
		c1.Close()
		c2.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.Protocol != TLS || strings.Join(res.ALPN, ",") != strings.Join(want, ",") {
			t.Fatalf("offered %q: got %v %q", want, res.Protocol, res.ALPN)
		}
	}
}

func TestClassifyTLSReadsServerName(t *testing.T) {
	hello := clientHello(t, "reviews.default.svc.cluster.local")
	p, sni, done := Classify(hello)
	if p != TLS || !done || sni != "reviews.default.svc.cluster.local" {
		t.Fatalf("Classify(ClientHello) = %v %q %v", p, sni, done)
	}
	// Every prefix is TLS-in-progress, never a wrong decision.
	for i := 1; i < len(hello); i++ {
		if p, _, done := Classify(hello[:i]); done && p != TLS {
			t.Fatalf("prefix of %d bytes decided %v", i, p)
		}
	}
	// Without a name.
	if _, sni, _ := Classify(clientHello(t, "")); sni != "" {
		t.Errorf("sni %q for a hello without server_name", sni)
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		send     string
		close    bool
		want     Protocol
		timedOut bool
	}{
		{"http1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, HTTP1, false},
		{"silent client", "", false, TCP, true},
		{"slow partial request", "GET /", false, HTTP1, true},
		{"slow partial method", "G", false, HTTP1, true},
		{"slow partial h2 preface", "PRI * HTTP/2", false, HTTP2, true},
		{"slow partial TLS record", "\x16\x03", false, TCP, true},
		{"request line longer than the window", "GET /" + strings.Repeat("a", MaxPeek+100), false, HTTP1, false},
		{"half a request line then close", "GET /", true, TCP, false},
		{"few bytes then close", "ab", true, TCP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			if tc.send != "" {
				io.WriteString(client, tc.send)
			}
			if tc.close {
				client.(*net.TCPConn).CloseWrite()
			}
			res, err := Sniff(server, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != tc.want || res.TimedOut != tc.timedOut {
				t.Fatalf("Sniff = %v timedOut %v, want %v %v", res.Protocol, res.TimedOut, tc.want, tc.timedOut)
			}
			// The sniffed bytes come back first, then the rest.
			io.WriteString(client, "+more")
			client.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(res.Conn)
			if string(got) != tc.send+"+more" && !tc.close {
				t.Fatalf("read back %q", got)
			}
		})
	}
}

func TestSniffClosedBeforeSpeaking(t *testing.T) {
	client, server := tcpPair(t)
	client.Close()
	if _, err := Sniff(server, time.Second); err == nil {
		t.Fatal("no error for a connection closed before any byte")
	}
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// FuzzClassify checks that no input crashes detection, that a decision is
// stable once made (more bytes never change it), and that a server name is
// only ever reported for TLS.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
		"*1\r\n", "", "\x16\x03\x03\xff\xff",
	} {
		f.Add([]byte(s))
	}
	f.Add(clientHello(f, "a.example"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("PROPFIND /x HTTP/1.0\r\n\r\n"))
	f.Add([]byte(strings.Repeat("M", 40) + " /x HTTP/1.0\r\n\r\n")) // a method net/http takes
	f.Fuzz(func(t *testing.T, b []byte) {
		p, sni, done := Classify(b)
		if sni != "" && p != TLS {
			t.Fatalf("sni %q for %v", sni, p)
		}
		// What an HTTP server reads as a request is never passed by as
		// TCP: net/http stands in for the application. (Decisions are
		// stable, so no prefix of it is TCP either.)
		if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b))); err == nil && req.Method != "PRI" && p != HTTP1 {
			t.Fatalf("net/http reads %s %q from %q; detection says %v", req.Method, req.RequestURI, b, p)
		}
		if done {
			p2, sni2, done2 := Classify(append(b[:len(b):len(b)], "extra bytes"...))
			if p2 != p || !done2 || sni2 != sni {
				t.Fatalf("decision changed with more bytes: %v %q -> %v %q", p, sni, p2, sni2)
			}
		}
	})
}

// FuzzServerName parses arbitrary handshake bodies.
func FuzzServerName(f *testing.F) {
	hello := clientHello(f, "a.example")
	f.Add(hello[5:])
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if name := serverName(b); name != "" && !validHostName([]byte(name)) {
			t.Fatalf("invalid name %q", name)
		}
		if protos := alpn(b); len(protos) > maxALPN {
			t.Fatalf("read %d protocol names, more than %d", len(protos), maxALPN)
		}
	})
}

func BenchmarkClassifyHTTP1(b *testing.B) {
	req := []byte("GET /api/v1/reviews/12345 HTTP/1.1\r\nHost: reviews.default.svc.cluster.local\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		Classify(req)
	}
}

func BenchmarkClassifyTLS(b *testing.B) {
	hello := clientHello(b, "reviews.default.svc.cluster.local")
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		Classify(hello)
	}
}

func TestClassifyDecisionsAreStable(t *testing.T) {
	for _, in := range []string{"SSH-2.0-x\r\n", "GET / http/1.1\r\n", "GET key\r\n", "A\x01"} {
		p, _, done := Classify([]byte(in))
		p2, _, done2 := Classify([]byte(in + " /x HTTP/1.1\r\n"))
		if !done || !done2 || p != p2 {
			t.Errorf("%q: %v %v then %v %v", in, p, done, p2, done2)
		}
	}
}
