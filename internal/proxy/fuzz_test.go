package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// FuzzHTTP1Conn sends arbitrary bytes to the outbound listener as the start
// of an HTTP/1 connection. Whatever the bytes, the proxy must answer with a
// well-formed HTTP response or close, within a bound, and must not crash.
func FuzzHTTP1Conn(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
	} {
		f.Add([]byte(s))
	}
	backend := echoBackend(f)
	tp := startProxy(f, withService("limits: {headerReadTimeout: 200ms, streamIdleTimeout: 500ms, detectTimeout: 100ms, idleTimeout: 200ms}\n", backend), fixedDst(serviceVIP))
	f.Fuzz(func(t *testing.T, in []byte) {
		if !bytes.HasPrefix(in, []byte("GET ")) && !bytes.HasPrefix(in, []byte("POST ")) && !bytes.HasPrefix(in, []byte("HEAD ")) {
			in = append([]byte("GET / HTTP/1.1\r\n"), in...)
		}
		c, err := net.Dial("tcp", tp.outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		for {
			if _, err := br.Peek(1); err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "reset") {
					t.Fatalf("connection neither answered nor closed: %v", err)
				}
				return
			}
			if !bytes.HasPrefix(peekAll(br), []byte("HTTP/1.")) {
				// Detection gave up on these bytes: forwarded as TCP, and
				// the answer is the backend's business.
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("malformed response: %v", err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil && resp.StatusCode != 101 {
				return // cut mid-body by a timeout or the backend
			}
		}
	})
}

func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(min(br.Buffered(), 7))
	return b
}

// The differential fuzz targets below hold the HTTP/1 parser and body relay
// to one rule: whatever the proxy accepts and forwards, net/http (standing
// in for the application behind the proxy, and for any other HTTP/1
// implementation on the path) reads the same way. Where the two differ the
// proxy and the application would disagree on where a message ends, which
// is request smuggling. The proxy may refuse what net/http accepts; it must
// not accept what net/http reads differently or refuses, except where
// net/http departs from RFC 9112 and what the proxy forwards cannot carry
// the difference: each such exception says why, and relaxes only the
// comparison it must.

// FuzzParseRequestMatchesNetHTTP parses arbitrary request heads; when
// parseRequest accepts one, http.ReadRequest must accept it too and read
// the same method, host, target, framing and connection persistence, and
// it must read the head the proxy forwards upstream the same way again.
func FuzzParseRequestMatchesNetHTTP(f *testing.F) {
	for _, tc := range parseRequestAccepted {
		f.Add([]byte(tc.raw))
	}
	for _, tc := range parseRequestRefused {
		f.Add([]byte(tc.raw))
	}
	for _, s := range []string{
		"GET /p%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a:port/ HTTP/1.1\r\n\r\n",
		"GET http://a/p#frag HTTP/1.1\r\n\r\n",
		"GET http://a#frag HTTP/1.1\r\n\r\n",
		"GET http://a%C3%A4/ HTTP/1.1\r\n\r\n",
		"GET http://[fe80::1%25en0]/ HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\n",
		"GET /\xc3\xa4 HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := headEnd(b, 0)
		if n == 0 {
			return
		}
		head := b[:n]
		var h h1head
		if h.parseRequest(head, 100) != nil {
			return
		}
		checkRequestMatchesNetHTTP(t, head, &h)
	})
}

func checkRequestMatchesNetHTTP(t *testing.T, head []byte, h *h1head) {
	t.Helper()
	// RFC 9112 section 2.2: a server ignores empty lines before the
	// request line, and so does the proxy; net/http's ReadRequest does
	// not (its server skips them only after a POST). The proxy forwards
	// the request without them, so net/http reads it without them too.
	std := head
	for len(std) > 0 && (std[0] == '\n' || std[0] == '\r' && len(std) > 1 && std[1] == '\n') {
		std = std[bytes.IndexByte(std, '\n')+1:]
	}
	line, _, _ := bytes.Cut(std, []byte("\n"))
	_, rawTarget, _ := strings.Cut(string(line), " ")
	rawTarget, _, _ = strings.Cut(rawTarget, " ")
	form := "origin"
	switch {
	case h.isMethod("CONNECT") && !strings.HasPrefix(rawTarget, "/"):
		form = "authority"
	case rawTarget == "*":
		form = "asterisk"
	case !strings.HasPrefix(rawTarget, "/"):
		form = "absolute"
	}

	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(std)))
	var ue *url.Error
	if errors.As(err, &ue) && badURI(rawTarget, form) {
		// net/http checks the request target as a URI (RFC 3986
		// percent-encoding, ports, userinfo); the proxy checks only
		// what it needs to frame and route the request, and forwards
		// the target as it came (the application judges it). The
		// rest of the head must still read the same: with a plain
		// target in its place.
		std = bytes.Replace(std, []byte(" "+rawTarget+" "), []byte(" / "), 1)
		req, err = http.ReadRequest(bufio.NewReader(bytes.NewReader(std)))
		if err != nil {
			t.Fatalf("net/http refuses %q (with a plain target) that the proxy accepts: %v", std, err)
		}
		form = ""
	} else if err != nil && sameLengths(h, head) {
		// RFC 9110 section 8.6: Content-Length fields with the same
		// decimal value ("5" and "05") may be read as one; net/http
		// wants them spelled alike. The proxy forwards one
		// Content-Length of its own, so the application never sees
		// the two spellings.
		return
	} else if err != nil {
		t.Fatalf("net/http refuses %q that the proxy accepts as %+v: %v", std, viewRequest(h), err)
	}
	if req.Method != string(h.method) {
		t.Errorf("%q: method %q, net/http %q", std, h.method, req.Method)
	}
	switch form {
	case "origin", "asterisk":
		if req.RequestURI != string(h.target) || req.Host != string(h.host) {
			t.Errorf("%q: target %q host %q, net/http %q %q", std, h.target, h.host, req.RequestURI, req.Host)
		}
	case "absolute":
		// The proxy forwards the path and query in origin-form and the
		// authority as Host (RFC 9112 section 3.2.2): net/http must
		// read the same from the absolute URI. Both sides go through
		// net/url's escaping, which only normalises the spelling.
		u, err := url.ParseRequestURI(string(h.target))
		if err != nil || u.RequestURI() != req.URL.RequestURI() || req.URL.Host != string(h.host) || req.Host != string(h.host) {
			t.Errorf("%q: target %q host %q, net/http %q %q (%v)", std, h.target, h.host, req.URL.RequestURI(), req.URL.Host, err)
		}
	case "authority":
		// CONNECT: the target is forwarded as it came, and the
		// upstream reads it as net/http does. The proxy's host is the
		// Host field, used for logging only (RFC 9110 section 9.3.6:
		// the target, not Host, names the tunnel's end).
		if req.RequestURI != string(h.target) {
			t.Errorf("%q: target %q, net/http %q", std, h.target, req.RequestURI)
		}
	}
	checkFraming(t, std, h, req)
	if req.Close != h.close {
		t.Errorf("%q: close %v, net/http %v", std, h.close, req.Close)
	}

	// What the proxy sends upstream must read the same way again, and
	// carry no hop-by-hop field and no way to close or re-frame.
	const addr = "10.0.0.1:8080"
	fwd := h.appendRequest(nil, addr)
	up, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(fwd)))
	if err != nil {
		if errors.As(err, &ue) && badURI(rawTarget, form) || form == "" {
			return // the target as it came; see above
		}
		t.Fatalf("net/http refuses the forwarded %q: %v", fwd, err)
	}
	wantHost := string(h.host)
	switch {
	case form == "authority":
		wantHost = up.URL.Host // net/http's Host of a CONNECT is its target
	case h.host == nil:
		wantHost = addr
	}
	if up.Method != string(h.method) || up.RequestURI != string(h.target) || up.Host != wantHost {
		t.Errorf("forwarded %q: %s %s host %q, want %s %s %q", fwd, up.Method, up.RequestURI, up.Host, h.method, h.target, wantHost)
	}
	checkFraming(t, fwd, h, up)
	if up.Close {
		t.Errorf("forwarded %q closes the upstream connection", fwd)
	}
	if got := up.Header.Get("Upgrade"); got != string(h.upgrade) {
		t.Errorf("forwarded %q: Upgrade %q, want %q", fwd, got, h.upgrade)
	}
	for _, k := range []string{"Keep-Alive", "Proxy-Connection"} {
		if _, ok := up.Header[k]; ok {
			t.Errorf("forwarded %q has hop-by-hop %s", fwd, k)
		}
	}
	if te := up.Header.Values("Te"); len(te) > 1 || len(te) == 1 && (te[0] != "trailers" || !h.teTrailers) {
		t.Errorf("forwarded %q: TE %q", fwd, te)
	}
}

// checkFraming compares the proxy's reading of a request's body with
// net/http's.
func checkFraming(t *testing.T, raw []byte, h *h1head, req *http.Request) {
	t.Helper()
	want := int64(0)
	switch h.body {
	case bodyLength:
		want = h.length
	case bodyChunked:
		want = -1
	}
	chunked := len(req.TransferEncoding) > 0
	if req.ContentLength != want || chunked != (h.body == bodyChunked) {
		t.Errorf("%q: body %d length %d, net/http length %d chunked %v", raw, h.body, h.length, req.ContentLength, chunked)
	}
}

// badURI reports whether net/url refuses a request target, as net/http
// reads it.
func badURI(target, form string) bool {
	if form == "authority" {
		target = "http://" + target
	}
	_, err := url.ParseRequestURI(target)
	return err != nil
}

// sameLengths reports whether head has more than one Content-Length field,
// all of the same decimal value, spelled differently.
func sameLengths(h *h1head, head []byte) bool {
	var vals []string
	for _, f := range h.fields {
		if asciiEqualFoldBytes(f.name, "content-length") {
			vals = append(vals, string(f.value))
		}
	}
	if len(vals) < 2 || h.body != bodyLength {
		return false
	}
	for _, v := range vals {
		if n, ok := parseContentLength([]byte(v)); !ok || n != h.length {
			return false
		}
	}
	for _, v := range vals[1:] {
		if v != vals[0] {
			return true
		}
	}
	return false
}

// FuzzParseResponseMatchesNetHTTP parses arbitrary response heads; when
// parseResponse accepts one, http.ReadResponse must read the same status,
// framing and connection persistence.
func FuzzParseResponseMatchesNetHTTP(f *testing.F) {
	for _, tc := range parseResponseCases {
		f.Add([]byte(tc.raw))
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := headEnd(b, 0)
		if n == 0 {
			return
		}
		head := b[:n]
		var h h1head
		if !h.parseResponse(head) {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
		if err != nil {
			if sameLengths(&h, head) {
				return // RFC 9110 section 8.6; see checkRequestMatchesNetHTTP
			}
			t.Fatalf("net/http refuses %q that the proxy accepts: %v", head, err)
		}
		if resp.StatusCode != h.status {
			t.Fatalf("%q: status %d, net/http %d", head, h.status, resp.StatusCode)
		}
		// The framing as the proxy applies it: 1xx, 204 and 304 have no
		// body whatever their fields say (RFC 9112 section 6.3, item 1;
		// http1.go skips 1xx heads and relays no body for 204 and 304).
		src := h.body
		bodyless := h.status < 200 || h.status == 204 || h.status == 304
		if bodyless {
			src = bodyNone
		}
		chunked := len(resp.TransferEncoding) > 0
		switch {
		case bodyless:
			if resp.ContentLength != 0 {
				t.Errorf("%q: no body, net/http length %d", head, resp.ContentLength)
			}
		case src == bodyLength && (resp.ContentLength != h.length || chunked),
			src == bodyChunked && (resp.ContentLength != -1 || !chunked),
			src == bodyUntilClose && (resp.ContentLength != -1 || chunked):
			t.Errorf("%q: body %d length %d, net/http length %d chunked %v", head, h.body, h.length, resp.ContentLength, chunked)
		}
		// The proxy does not reuse the connection after a body that ends
		// with the close.
		close := h.close || src == bodyUntilClose
		if close != resp.Close {
			// RFC 9112 section 6.3, item 3: a response with both
			// Transfer-Encoding and Content-Length is read as chunked
			// but "ought to be handled as an error"; the proxy does not
			// reuse its connection, net/http does.
			if !(close && bothFramings(&h)) {
				t.Errorf("%q: close %v, net/http %v", head, close, resp.Close)
			}
		}
	})
}

func bothFramings(h *h1head) bool {
	cl, te := false, false
	for _, f := range h.fields {
		cl = cl || asciiEqualFoldBytes(f.name, "content-length")
		te = te || asciiEqualFoldBytes(f.name, "transfer-encoding")
	}
	return cl && te
}

// chunkedHead is the request head before the bodies of FuzzRelayChunked.
const chunkedHead = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

// FuzzRelayChunked relays arbitrary bytes as a chunked body. When the relay
// succeeds, net/http must read the same body from the same bytes and end
// it at the same place; and the relay's re-chunked output must read, to
// net/http, as the same body with the same trailers.
func FuzzRelayChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n",
		"A\r\n0123456789\r\n0;last\r\n\r\n",
		"5 ; ext\r\nhello\r\n0\r\n\r\n",
		"5\nhello\r\n0\r\n\r\n",
		"5\r\nhello\n0\r\n\r\n",
		"0\r\n\n",
		"0\r\nX-A: 1\n\r\n",
		"0\r\nX-A: 1\r\n 2\r\n\r\n",
		"0000000000000005\r\nhello\r\n0\r\n\r\n",
		"5\r\nhel",
	} {
		f.Add([]byte(s))
	}
	const maxTrailer = 1024 // within net/http's 4 KiB trailer peek
	f.Fuzz(func(t *testing.T, body []byte) {
		plain := runRelay(bytes.NewReader(body), bodyChunked, 0, false, maxTrailer)
		// The same bytes a byte at a time: the same outcome (what a
		// failed relay wrote before it failed depends on the reads).
		slow := runRelay(iotest.OneByteReader(bytes.NewReader(body)), bodyChunked, 0, false, maxTrailer)
		if slow.ok != plain.ok || plain.ok && (!bytes.Equal(slow.out, plain.out) || !bytes.Equal(slow.rest, plain.rest)) {
			t.Fatalf("%q: whole %v %q rest %q, a byte at a time %v %q rest %q",
				body, plain.ok, plain.out, plain.rest, slow.ok, slow.out, slow.rest)
		}
		if !plain.ok {
			return
		}
		br := bufio.NewReader(io.MultiReader(strings.NewReader(chunkedHead), bytes.NewReader(body)))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(req.Body)
		if err != nil {
			if extAfterSpace(body) && strings.Contains(err.Error(), "invalid byte in chunk length") {
				// RFC 9112 section 7.1.1 allows whitespace (BWS)
				// before a chunk extension's ";"; net/http refuses it.
				// The proxy drops extensions, so the application never
				// sees it.
				return
			}
			t.Fatalf("net/http refuses the chunked body %q that the proxy reads as %q: %v", body, plain.out, err)
		}
		if !bytes.Equal(got, plain.out) {
			t.Fatalf("%q: the proxy reads %q, net/http %q", body, plain.out, got)
		}
		stdRest, _ := io.ReadAll(br)
		if !bytes.Equal(stdRest, plain.rest) {
			t.Fatalf("%q: the body ends before %q for the proxy, before %q for net/http", body, plain.rest, stdRest)
		}

		// Re-chunked, as the proxy forwards it.
		re := runRelay(bytes.NewReader(body), bodyChunked, 0, true, maxTrailer)
		if !re.ok || !bytes.Equal(re.rest, plain.rest) || re.n != plain.n {
			t.Fatalf("%q: re-chunking %v rest %q n %d, de-chunking rest %q n %d", body, re.ok, re.rest, re.n, plain.rest, plain.n)
		}
		br = bufio.NewReader(io.MultiReader(strings.NewReader(chunkedHead), bytes.NewReader(re.out)))
		req2, err := http.ReadRequest(br)
		if err != nil {
			t.Fatal(err)
		}
		got2, err := io.ReadAll(req2.Body)
		if err != nil || !bytes.Equal(got2, plain.out) {
			t.Fatalf("%q re-chunked as %q: net/http reads %q, %v; want %q", body, re.out, got2, err, plain.out)
		}
		if rest, _ := io.ReadAll(br); len(rest) > 0 {
			t.Fatalf("%q re-chunked as %q: %q left after the body", body, re.out, rest)
		}
		if !reflect.DeepEqual(req2.Trailer, req.Trailer) {
			t.Fatalf("%q re-chunked as %q: trailers %v, want %v", body, re.out, req2.Trailer, req.Trailer)
		}
	})
}

// extAfterSpace reports whether a chunk-size line in b has whitespace
// between the size and a ";".
func extAfterSpace(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\r\n")) {
		l = bytes.TrimLeft(l, "0123456789abcdefABCDEF")
		if t := bytes.TrimLeft(l, " \t"); len(t) < len(l) && len(t) > 0 && t[0] == ';' {
			return true
		}
	}
	return false
}
