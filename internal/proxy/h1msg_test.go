package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// reqView is what the proxy acts on in a parsed request head, in a form
// that compares and prints well. Fields the case does not care about are
// compared too: a case states the whole outcome.
type reqView struct {
	method, target, host string
	noHost               bool // host is nil: no Host at all (HTTP/1.0)
	hostOverride         bool
	minor                byte
	body                 bodyKind
	length               int64
	close                bool
	upgrade              string
	teTrailers, expect   bool
	dropped              string // names of the fields marked drop, comma-separated
}

func viewRequest(h *h1head) reqView {
	var dropped []string
	for _, f := range h.fields {
		if f.drop {
			dropped = append(dropped, string(f.name))
		}
	}
	return reqView{
		method: string(h.method), target: string(h.target), host: string(h.host), noHost: h.host == nil,
		hostOverride: h.hostOverride, minor: h.minor, body: h.body, length: h.length, close: h.close,
		upgrade: string(h.upgrade), teTrailers: h.teTrailers, expect: h.expect, dropped: strings.Join(dropped, ","),
	}
}

// parseRequestAccepted are request heads the proxy forwards, with what it
// reads from them. They also seed FuzzParseRequestMatchesNetHTTP.
var parseRequestAccepted = []struct {
	name, raw string
	want      reqView
}{
	{"origin-form", "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
		reqView{method: "GET", target: "/a/b?c=d", host: "example.com", minor: 1}},
	{"absolute-form http with path and query", "GET http://svc.ns:8080/p/q?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
		reqView{method: "GET", target: "/p/q?x=1", host: "svc.ns:8080", hostOverride: true, minor: 1}},
	{"absolute-form https without path", "GET https://a.example HTTP/1.1\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a.example", hostOverride: true, minor: 1}},
	{"absolute-form https with path", "DELETE https://a.example/x HTTP/1.1\r\n\r\n",
		reqView{method: "DELETE", target: "/x", host: "a.example", hostOverride: true, minor: 1}},
	{"absolute-form with a query and no path", "GET http://a.example?q=1 HTTP/1.1\r\n\r\n",
		reqView{method: "GET", target: "/?q=1", host: "a.example", hostOverride: true, minor: 1}},
	{"absolute-form with userinfo", "GET http://user:pw@a.example/x HTTP/1.1\r\n\r\n",
		reqView{method: "GET", target: "/x", host: "a.example", hostOverride: true, minor: 1}},
	{"absolute-form upper-case scheme", "GET HTTP://A.example/x HTTP/1.1\r\n\r\n",
		reqView{method: "GET", target: "/x", host: "A.example", hostOverride: true, minor: 1}},
	{"absolute-form IPv6 literal", "GET http://[::1]:8080/x HTTP/1.1\r\n\r\n",
		reqView{method: "GET", target: "/x", host: "[::1]:8080", hostOverride: true, minor: 1}},
	{"OPTIONS asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		reqView{method: "OPTIONS", target: "*", host: "a", minor: 1}},
	{"CONNECT authority-form", "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n",
		reqView{method: "CONNECT", target: "db.example:5432", host: "db.example:5432", minor: 1}},
	{"HTTP/1.0 without Host", "GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
		reqView{method: "GET", target: "/old", noHost: true, minor: 0, close: true}},
	{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", close: false, dropped: "Connection"}},
	{"HTTP/1.0 with a body length", "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
		reqView{method: "POST", target: "/", noHost: true, body: bodyLength, length: 3, close: true, dropped: "Content-Length"}},
	{"bare LF line endings", "GET / HTTP/1.1\nHost: a\nX-A: 1\n\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1}},
	{"leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1}},
	{"leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1}},
	{"Connection close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, close: true, dropped: "Connection"}},
	{"Connection close among other tokens", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive , CLOSE\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, close: true, dropped: "Connection"}},
	{"upgrade", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
		reqView{method: "GET", target: "/ws", host: "a", minor: 1, upgrade: "websocket", dropped: "Connection,Upgrade"}},
	{"Upgrade field without the Connection token", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, dropped: "Upgrade"}},
	{"Connection upgrade without an Upgrade field", "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, dropped: "Connection"}},
	{"Connection names another field", "GET / HTTP/1.1\r\nX-Hop: 1\r\nHost: a\r\nConnection: x-hop\r\nX-End: 2\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, dropped: "X-Hop,Connection"}},
	{"Connection cannot drop Host or framing", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: host, content-length, transfer-encoding, te\r\n\r\n",
		reqView{method: "POST", target: "/", host: "a", minor: 1, body: bodyLength, length: 1, dropped: "Content-Length,Connection"}},
	{"hop-by-hop fields", "GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, dropped: "Keep-Alive,Proxy-Connection,TE"}},
	{"TE trailers", "POST /grpc HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
		reqView{method: "POST", target: "/grpc", host: "a", minor: 1, teTrailers: true, dropped: "TE"}},
	{"TE trailers with parameters in a list", "GET / HTTP/1.1\r\nHost: a\r\nte: gzip, Trailers;q=0.5\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, teTrailers: true, dropped: "te"}},
	{"Expect 100-continue", "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n",
		reqView{method: "PUT", target: "/u", host: "a", minor: 1, expect: true, body: bodyLength, length: 5, dropped: "Content-Length"}},
	{"other Expect", "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n",
		reqView{method: "PUT", target: "/u", host: "a", minor: 1}},
	{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
		reqView{method: "POST", target: "/", host: "a", minor: 1, body: bodyChunked, dropped: "Transfer-Encoding"}},
	{"two identical Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
		reqView{method: "POST", target: "/", host: "a", minor: 1, body: bodyLength, length: 5, dropped: "Content-Length,content-length"}},
	{"Content-Length with leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
		reqView{method: "POST", target: "/", host: "a", minor: 1, body: bodyLength, length: 7, dropped: "Content-Length"}},
	{"Content-Length of 18 digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n",
		reqView{method: "POST", target: "/", host: "a", minor: 1, body: bodyLength, length: 999999999999999999, dropped: "Content-Length"}},
	{"Content-Length of 0", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1, body: bodyLength, length: 0, dropped: "Content-Length"}},
	{"IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
		reqView{method: "GET", target: "/", host: "[::1]:8080", minor: 1}},
	{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		reqView{method: "GET", target: "/", host: "", minor: 1}},
	{"value whitespace and obs-text", "GET / HTTP/1.1\r\nHost: \t a \t\r\nX-A: \tv\xff\tw \r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 1}},
	{"later minor version", "GET / HTTP/1.9\r\nHost: a\r\n\r\n",
		reqView{method: "GET", target: "/", host: "a", minor: 9}},
	{"extension method", "PROPFIND /d HTTP/1.1\r\nHost: a\r\n\r\n",
		reqView{method: "PROPFIND", target: "/d", host: "a", minor: 1}},
}

func TestParseRequestAccepts(t *testing.T) {
	for _, tc := range parseRequestAccepted {
		t.Run(tc.name, func(t *testing.T) {
			var h h1head
			if err := h.parseRequest([]byte(tc.raw), 100); err != nil {
				t.Fatalf("refused with %d %q: %q", err.status, err.msg, tc.raw)
			}
			if got := viewRequest(&h); got != tc.want {
				t.Errorf("%q\n got %+v\nwant %+v", tc.raw, got, tc.want)
			}
		})
	}
}

// parseRequestRefused are request heads the proxy answers with an error
// status instead of forwarding. They also seed the differential fuzz
// target, where they check nothing (a refusal is always safe) but give the
// fuzzer the shapes to mutate.
var parseRequestRefused = []struct {
	name, raw string
	status    int
}{
	{"Content-Length then Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	{"Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
	{"two different Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
	{"Content-Length with a plus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400},
	{"Content-Length with a minus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", 400},
	{"Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400},
	{"Content-Length with inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 3\r\n\r\n", 400},
	{"Content-Length in hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400},
	{"Content-Length empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
	{"Content-Length of 19 digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n", 400},
	{"Content-Length of 19 digits with leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000005\r\n\r\n", 400},
	{"Transfer-Encoding gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
	{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
	{"Transfer-Encoding chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501},
	{"Transfer-Encoding identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
	{"Transfer-Encoding empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 501},
	{"two Transfer-Encoding fields", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
	{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	{"missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
	{"two Hosts with absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400},
	{"Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
	{"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
	{"Host with a quote", "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", 400},
	{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
	{"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n", 400},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n", 400},
	{"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n", 400},
	{"field line without colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", 400},
	{"empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400},
	{"NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400},
	{"DEL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", 400},
	{"bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400},
	{"CR CR LF", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400},
	{"double space in the request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400},
	{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
	{"missing version", "GET /\r\nHost: a\r\n\r\n", 400},
	{"missing version after a space", "GET / \r\nHost: a\r\n\r\n", 400},
	{"trailing space after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
	{"leading space before the method", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"method with a non-token byte", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"control byte in the target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"target of no known form", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"absolute-form without authority", "GET http:///x HTTP/1.1\r\n\r\n", 400},
	{"absolute-form scheme only", "GET http:// HTTP/1.1\r\n\r\n", 400},
	{"absolute-form of another scheme", "GET ftp://a/x HTTP/1.1\r\n\r\n", 400},
	{"absolute-form with a bad host byte", "GET http://a\"b/x HTTP/1.1\r\n\r\n", 400},
	// net/url reads "#frag" as part of the path; the proxy used to drop
	// it and forward another path.
	{"absolute-form with a fragment", "GET http://a/p#frag HTTP/1.1\r\n\r\n", 400},
	{"absolute-form with a fragment and no path", "GET http://a#frag HTTP/1.1\r\n\r\n", 400},
	// net/url decodes the host; the proxy used to forward it encoded.
	{"absolute-form with a percent-encoded host", "GET http://a%C3%A4/ HTTP/1.1\r\n\r\n", 400},
	{"absolute-form with an IPv6 zone", "GET http://[fe80::1%25en0]/ HTTP/1.1\r\n\r\n", 400},
	{"CONNECT without a port", "CONNECT db.example HTTP/1.1\r\nHost: db.example\r\n\r\n", 400},
	{"CONNECT with a path", "CONNECT db.example:1/x HTTP/1.1\r\nHost: db.example\r\n\r\n", 400},
	{"empty head", "\r\n\r\n", 400},
}

func TestParseRequestRefuses(t *testing.T) {
	for _, tc := range parseRequestRefused {
		t.Run(tc.name, func(t *testing.T) {
			var h h1head
			err := h.parseRequest([]byte(tc.raw), 100)
			if err == nil {
				t.Fatalf("accepted %q as %+v", tc.raw, viewRequest(&h))
			}
			if err.status != tc.status {
				t.Errorf("%q: status %d (%s), want %d", tc.raw, err.status, err.msg, tc.status)
			}
		})
	}
}

func TestParseRequestFieldLimit(t *testing.T) {
	const max = 10
	fields := func(n int) string {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\r\nHost: a\r\n")
		for i := 1; i < n; i++ { // Host is one of the n
			fmt.Fprintf(&b, "X-%d: v\r\n", i)
		}
		b.WriteString("\r\n")
		return b.String()
	}
	var h h1head
	if err := h.parseRequest([]byte(fields(max)), max); err != nil {
		t.Errorf("%d fields, limit %d: refused with %d %s", max, max, err.status, err.msg)
	}
	err := h.parseRequest([]byte(fields(max+1)), max)
	if err == nil || err.status != 431 {
		t.Errorf("%d fields, limit %d: %v, want 431", max+1, max, err)
	}
	// 0 is no limit, as for responses.
	if err := h.parseRequest([]byte(fields(500)), 0); err != nil {
		t.Errorf("500 fields, no limit: refused with %d %s", err.status, err.msg)
	}
}

// TestParseRequestReuse parses a request with fields after one without:
// reset must leave nothing of the first behind.
func TestParseRequestReuse(t *testing.T) {
	var h h1head
	first := "POST http://a/x HTTP/1.1\r\nConnection: close, x-a\r\nX-A: 1\r\nTE: trailers\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
	if err := h.parseRequest([]byte(first), 100); err != nil {
		t.Fatal(err)
	}
	if err := h.parseRequest([]byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n"), 100); err != nil {
		t.Fatal(err)
	}
	want := reqView{method: "GET", target: "/", host: "b", minor: 1}
	if got := viewRequest(&h); got != want {
		t.Errorf("second request\n got %+v\nwant %+v", got, want)
	}
}

func TestH1AppendRequest(t *testing.T) {
	const addr = "10.1.2.3:8080"
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"hop-by-hop fields dropped",
			"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, gzip\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n",
			"GET /x HTTP/1.1\r\nHost: a\r\nX-End: 2\r\nTE: trailers\r\n\r\n"},
		{"TE without trailers dropped",
			"GET /x HTTP/1.1\r\nHost: a\r\nTE: gzip\r\n\r\n",
			"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"upgrade re-added",
			"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
			"GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"Upgrade without the Connection token dropped",
			"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
			"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"Content-Length written by the proxy",
			"POST /p HTTP/1.1\r\nContent-Length: 05\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
			"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"},
		{"Transfer-Encoding written by the proxy",
			"POST /p HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\nHost: a\r\n\r\n",
			"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"POST without a body", "POST /p HTTP/1.1\r\nHost: a\r\n\r\n", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
		{"PUT without a body", "PUT /p HTTP/1.1\r\nHost: a\r\n\r\n", "PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
		{"PATCH without a body", "PATCH /p HTTP/1.1\r\nHost: a\r\n\r\n", "PATCH /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
		{"GET without a body", "GET /p HTTP/1.1\r\nHost: a\r\n\r\n", "GET /p HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"DELETE without a body", "DELETE /p HTTP/1.1\r\nHost: a\r\n\r\n", "DELETE /p HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"HTTP/1.0 without Host",
			"GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
			"GET /old HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: x\r\n\r\n"},
		{"HTTP/1.0 with Host",
			"GET /old HTTP/1.0\r\nUser-Agent: x\r\nHost: b\r\nConnection: keep-alive\r\n\r\n",
			"GET /old HTTP/1.1\r\nUser-Agent: x\r\nHost: b\r\n\r\n"},
		{"absolute-form rewrites Host",
			"GET http://b.example/p?q HTTP/1.1\r\nX-A: 1\r\nHost: ignored\r\nX-B: 2\r\n\r\n",
			"GET /p?q HTTP/1.1\r\nHost: b.example\r\nX-A: 1\r\nX-B: 2\r\n\r\n"},
		{"absolute-form without Host field",
			"GET https://b.example HTTP/1.1\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"},
		{"bare LF and whitespace normalised",
			"GET / HTTP/1.1\nHost:a\nX-A: \t1 \t\n\n",
			"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n"},
		{"CONNECT as it came",
			"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
			"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h h1head
			if err := h.parseRequest([]byte(tc.raw), 100); err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := string(h.appendRequest(nil, addr)); got != tc.want {
				t.Errorf("%q\n got %q\nwant %q", tc.raw, got, tc.want)
			}
		})
	}
}

// parseResponseCases seed FuzzParseResponseMatchesNetHTTP too.
var parseResponseCases = []struct {
	name, raw string
	ok        bool
	status    int
	body      bodyKind
	length    int64
	close     bool
}{
	{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, 200, bodyLength, 3, false},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 200, bodyChunked, 0, false},
	{"until close", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", true, 200, bodyUntilClose, 0, false},
	{"no reason", "HTTP/1.1 204\r\n\r\n", true, 204, bodyUntilClose, 0, false},
	{"empty reason", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", true, 404, bodyLength, 0, false},
	{"Connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", true, 200, bodyLength, 1, true},
	{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", true, 200, bodyLength, 1, true},
	{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", true, 200, bodyLength, 1, false},
	{"Content-Length then chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true, 200, bodyChunked, 3, true},
	{"chunked then Content-Length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", true, 200, bodyChunked, 0, true},
	{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\n", true, 200, bodyLength, 2, false},
	{"continue", "HTTP/1.1 100 Continue\r\n\r\n", true, 100, bodyUntilClose, 0, false},
	{"switching protocols", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true, 101, bodyUntilClose, 0, false},
	{"reason with obs-text", "HTTP/1.1 200 \xe2\x9c\x93 fine\r\nContent-Length: 0\r\n\r\n", true, 200, bodyLength, 0, false},

	{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", false, 0, 0, 0, false},
	{"status below 100", "HTTP/1.1 099 Low\r\n\r\n", false, 0, 0, 0, false},
	{"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", false, 0, 0, 0, false},
	{"no space after status", "HTTP/1.1 200OK\r\n\r\n", false, 0, 0, 0, false},
	{"two spaces before status", "HTTP/1.1  200 OK\r\n\r\n", false, 0, 0, 0, false},
	{"HTTP/2", "HTTP/2 200 OK\r\n\r\n", false, 0, 0, 0, false},
	{"lower-case version", "http/1.1 200 OK\r\n\r\n", false, 0, 0, 0, false},
	{"control byte in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", false, 0, 0, 0, false},
	{"two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, 0, 0, 0, false},
	{"Content-Length with a sign", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", false, 0, 0, 0, false},
	{"Transfer-Encoding gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, 0, 0, 0, false},
	{"two Transfer-Encodings", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 0, 0, false},
	// RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding
	// has faulty framing (an HTTP/1.0 recipient, net/http included,
	// reads the body until the close instead).
	{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 0, 0, false},
	{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n", false, 0, 0, 0, false},
	{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n", false, 0, 0, 0, false},
}

func TestParseResponse(t *testing.T) {
	for _, tc := range parseResponseCases {
		t.Run(tc.name, func(t *testing.T) {
			var h h1head
			ok := h.parseResponse([]byte(tc.raw))
			if ok != tc.ok {
				t.Fatalf("%q: accepted %v, want %v", tc.raw, ok, tc.ok)
			}
			if !ok {
				return
			}
			if h.status != tc.status || h.body != tc.body || h.length != tc.length || h.close != tc.close {
				t.Errorf("%q: status %d body %d length %d close %v, want %d %d %d %v",
					tc.raw, h.status, h.body, h.length, h.close, tc.status, tc.body, tc.length, tc.close)
			}
		})
	}
}

func TestH1AppendResponse(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		body      bodyKind
		conn      string
		want      string
	}{
		{"length rewritten, hop-by-hop dropped",
			"HTTP/1.1 200 OK\r\nContent-Length: 03\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\n", bodyLength, "",
			"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n"},
		{"until close re-framed as chunks",
			"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n", bodyChunked, "",
			"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"chunked to an HTTP/1.0 client",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n", bodyUntilClose, "close",
			"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nConnection: close\r\n\r\n"},
		{"no body keeps the representation's length",
			"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", bodyNone, "",
			"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"},
		{"no body without length",
			"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", bodyNone, "keep-alive",
			"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nConnection: keep-alive\r\n\r\n"},
		{"switching protocols",
			"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n", bodyUntilClose, "",
			"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"Connection-named field dropped",
			"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n", bodyLength, "close",
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{"no reason", "HTTP/1.1 204\r\n\r\n", bodyNone, "",
			"HTTP/1.1 204 \r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h h1head
			if !h.parseResponse([]byte(tc.raw)) {
				t.Fatalf("refused %q", tc.raw)
			}
			if got := string(h.appendResponse(nil, tc.body, tc.conn)); got != tc.want {
				t.Errorf("%q\n got %q\nwant %q", tc.raw, got, tc.want)
			}
		})
	}
}

func TestH1SplitFieldLine(t *testing.T) {
	for _, tc := range []struct {
		line, name, value string
		ok                bool
	}{
		{"A: b", "A", "b", true},
		{"A:b", "A", "b", true},
		{"A:", "A", "", true},
		{"A: \t b c \t", "A", "b c", true},
		{"A: b\xff", "A", "b\xff", true},
		{"A : b", "", "", false},
		{" A: b", "", "", false},
		{": b", "", "", false},
		{"A", "", "", false},
		{"A\x00: b", "", "", false},
		{"A: b\x00", "", "", false},
		{"A: b\r", "", "", false},
		{"A: \x7f", "", "", false},
		{"A/B: c", "", "", false},
	} {
		name, value, ok := splitFieldLine([]byte(tc.line))
		if ok != tc.ok || string(name) != tc.name || string(value) != tc.value {
			t.Errorf("splitFieldLine(%q) = %q, %q, %v; want %q, %q, %v", tc.line, name, value, ok, tc.name, tc.value, tc.ok)
		}
	}
}

func TestParseContentLength(t *testing.T) {
	for _, tc := range []struct {
		v  string
		n  int64
		ok bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"007", 7, true},
		{"999999999999999999", 999999999999999999, true},
		{"1000000000000000000", 0, false},
		{"", 0, false},
		{"+1", 0, false},
		{"-1", 0, false},
		{"1,1", 0, false},
		{"1 ", 0, false},
		{"0x1", 0, false},
		{"١", 0, false}, // a non-ASCII digit
	} {
		n, ok := parseContentLength([]byte(tc.v))
		if n != tc.n || ok != tc.ok {
			t.Errorf("parseContentLength(%q) = %d, %v; want %d, %v", tc.v, n, ok, tc.n, tc.ok)
		}
	}
}

func TestH1HasToken(t *testing.T) {
	for _, tc := range []struct {
		v, tok string
		want   bool
	}{
		{"trailers", "trailers", true},
		{"gzip, Trailers", "trailers", true},
		{"trailers;q=1", "trailers", true},
		{" trailers ; q=0 , gzip", "trailers", true},
		{"trailersx", "trailers", false},
		{"gzip", "trailers", false},
		{"", "trailers", false},
		{",,", "trailers", false},
	} {
		if got := hasToken([]byte(tc.v), tc.tok); got != tc.want {
			t.Errorf("hasToken(%q, %q) = %v, want %v", tc.v, tc.tok, got, tc.want)
		}
	}
}

func TestH1ValidHost(t *testing.T) {
	for _, tc := range []struct {
		h    string
		want bool
	}{
		{"example.com", true},
		{"example.com:8080", true},
		{"[::1]:80", true},
		{"[fe80::1%25en0]", true},
		{"", true},
		{"a b", false},
		{"a/b", false},
		{"a\"b", false},
		{"a\x00", false},
		{"é", false},
		{"a@b", false},
	} {
		if got := validHost([]byte(tc.h)); got != tc.want {
			t.Errorf("validHost(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestHeadEnd(t *testing.T) {
	for _, tc := range []struct {
		b    string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 27},
		{"GET / HTTP/1.1\nHost: a\n\nbody", 24},
		{"GET / HTTP/1.1\r\nHost: a\n\r\nbody", 26},
		{"GET / HTTP/1.1\nHost: a\r\n\nbody", 25},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\r\n", 0},
		{"", 0},
		{"\n\n", 2},
		{"\r\n\r\n", 4},
		// An empty line at the very start is not the end: RFC 9112
		// section 2.2 lets it come before the request line.
		{"\r\nGET / HTTP/1.1\r\n\r\n", 20},
	} {
		if got := headEnd([]byte(tc.b), 0); got != tc.want {
			t.Errorf("headEnd(%q) = %d, want %d", tc.b, got, tc.want)
		}
	}
	// Resuming the search a few bytes before the old end finds an end
	// that straddles it.
	b := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	for from := len(b) - 4; from >= 0; from-- {
		if got := headEnd(b, from); got != len(b) {
			t.Errorf("headEnd from %d = %d, want %d", from, got, len(b))
		}
	}
}

// bigHead is a request head of exactly n bytes (n >= 64).
func bigHead(n int) string {
	const start, end = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ", "\r\n\r\n"
	return start + strings.Repeat("p", n-len(start)-len(end)) + end
}

func TestHeadSplitReads(t *testing.T) {
	const next = "POST /next HTTP/1.1\r\n"
	for _, tc := range []struct {
		name, head string
	}{
		{"CRLF", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n"},
		{"LF", "GET / HTTP/1.1\nHost: a\nX-A: 1\n\n"},
		{"LF CRLF", "GET / HTTP/1.1\r\nHost: a\n\r\n"},
		{"beyond one buffer", bigHead(3 * h1BufSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newH1In(iotest.OneByteReader(strings.NewReader(tc.head + next)))
			defer in.release()
			n, err := in.head(4 * h1BufSize)
			if err != nil {
				t.Fatalf("head: %v", err)
			}
			if got := string(in.buffered()[:n]); got != tc.head {
				t.Fatalf("head %d bytes, want %d", n, len(tc.head))
			}
			// A byte at a time, nothing beyond the head was read yet;
			// the rest is read by the next fill.
			in.consume(n)
			rest := append([]byte(nil), in.buffered()...)
			for {
				if err := in.fill(len(in.buf)); err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				rest = append(rest[:0], in.buffered()...)
			}
			if string(rest) != next {
				t.Errorf("after the head %q, want %q", rest, next)
			}
		})
	}
}

func TestHeadLimit(t *testing.T) {
	const limit = 10000 // beyond one buffer: the buffer grows
	for _, tc := range []struct {
		name    string
		size    int
		wantErr error
	}{
		{"small", 100, nil},
		{"one buffer", h1BufSize, nil},
		{"beyond one buffer", h1BufSize + 1, nil},
		{"at the limit", limit, nil},
		{"one byte beyond the limit", limit + 1, errHeadLimit},
		{"far beyond the limit", 5 * limit, errHeadLimit},
	} {
		for _, r := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"one byte at a time", iotest.OneByteReader},
			{"half", iotest.HalfReader},
		} {
			t.Run(tc.name+"/"+r.name, func(t *testing.T) {
				head := bigHead(tc.size)
				// A body follows the head, so that a head that ends where
				// the buffer ends is not helped by the EOF.
				in := newH1In(r.wrap(strings.NewReader(head + strings.Repeat("b", 2*h1BufSize))))
				defer in.release()
				n, err := in.head(limit)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("%d-byte head, limit %d: error %v, want %v", tc.size, limit, err, tc.wantErr)
				}
				if err != nil {
					return
				}
				if n != len(head) || !bytes.Equal(in.buffered()[:n], []byte(head)) {
					t.Errorf("head of %d bytes read as %d", len(head), n)
				}
			})
		}
	}
}

// TestHeadEOF: a connection that ends inside a head is an error, not a
// head.
func TestHeadEOF(t *testing.T) {
	in := newH1In(iotest.OneByteReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n")))
	defer in.release()
	if n, err := in.head(h1BufSize); err != io.EOF {
		t.Errorf("cut head: %d, %v; want EOF", n, err)
	}
}
