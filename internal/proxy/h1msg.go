package proxy

import (
	"bytes"
	"net/http"
	"strconv"
)

// The HTTP/1 message head parser works in place, on the bytes of the head
// in the connection's read buffer: a request or response is a handful of
// slices into that buffer and allocates nothing. It is strict where a
// lenient parser would let a request mean one thing to the proxy and
// another to the application (request smuggling): RFC 9112's framing rules
// are applied whole, and anything ambiguous is refused.

// bodyKind is how a message's body is delimited (RFC 9112 section 6.3).
type bodyKind uint8

const (
	bodyNone       bodyKind = iota
	bodyLength              // Content-Length bytes
	bodyChunked             // chunked transfer coding
	bodyUntilClose          // until the sender closes (responses only)
)

// h1field is one header field line: views into the head.
type h1field struct {
	name, value []byte
	// drop marks a field not forwarded as it is: hop-by-hop (RFC 9110
	// section 7.6.1), named by Connection, or framing that the proxy
	// writes itself.
	drop bool
}

// h1head is a parsed request or response head. Its slices point into the
// buffer the head was parsed from.
type h1head struct {
	fields []h1field

	// minor is the x of HTTP/1.x.
	minor byte
	// body and length are the message's framing as the sender declared it.
	body   bodyKind
	length int64
	// close: the sender ends the connection after this message (Connection:
	// close, or HTTP/1.0 without keep-alive).
	close bool
	// upgrade is the protocol asked for, when Connection lists "upgrade".
	upgrade []byte
	// teTrailers: the client accepts trailers (TE: trailers), which tells a
	// gRPC server it may answer.
	teTrailers bool

	// Requests only.
	method, target, host []byte
	// hostOverride: host is the authority of an absolute-form target,
	// which replaces the Host field (an HTTP/1.0 request without Host gets
	// the upstream address instead, in appendRequest).
	hostOverride bool
	expect       bool // Expect: 100-continue

	// Responses only.
	status int
	reason []byte
	// unprocessed: the response came from a server's proxy that did not
	// pass the request on (unprocessedHeader), so another endpoint may
	// take it.
	unprocessed bool
}

// h1Error is a request the proxy refuses, with the status it answers.
type h1Error struct {
	status int
	msg    string
}

func (e *h1Error) Error() string { return e.msg }

func badRequest(msg string) *h1Error { return &h1Error{http.StatusBadRequest, msg} }

var (
	errBadFieldLine  = badRequest("malformed header field")
	errBadFraming    = badRequest("malformed framing")
	errBothFramings  = badRequest("both Content-Length and Transfer-Encoding")
	errTooManyField  = &h1Error{http.StatusRequestHeaderFieldsTooLarge, "too many header fields"}
	errUnsupportedTE = &h1Error{http.StatusNotImplemented, "unsupported transfer coding"}
)

func (h *h1head) reset() {
	clear(h.fields)
	fields := h.fields[:0]
	*h = h1head{fields: fields}
}

// nextLine splits the first line off b, without its line ending (CRLF, or a
// bare LF, which RFC 9112 section 2.2 allows a recipient to accept).
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

// parseRequest parses a request head: the bytes up to and including the
// empty line that ends it. maxFields bounds the number of field lines.
func (h *h1head) parseRequest(b []byte, maxFields int) *h1Error {
	h.reset()
	line, rest := nextLine(b)
	// RFC 9112 section 2.2: empty lines before the request line are ignored.
	for len(line) == 0 && len(rest) > 0 {
		line, rest = nextLine(rest)
	}
	if !h.parseRequestLine(line) {
		return badRequest("malformed request line")
	}
	if err := h.parseFields(rest, maxFields, true); err != nil {
		return err
	}
	if h.minor == 0 && h.body == bodyChunked {
		// RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding
		// has faulty framing.
		return errBadFraming
	}
	switch {
	case len(h.target) > 0 && h.target[0] == '/':
	case h.isMethod("CONNECT"):
		// authority-form: host:port, which is also the Host.
		if !validHost(h.target) || bytes.IndexByte(h.target, ':') < 0 {
			return badRequest("malformed CONNECT target")
		}
	case len(h.target) == 1 && h.target[0] == '*' && h.isMethod("OPTIONS"):
	default:
		if !h.absoluteForm() {
			return badRequest("malformed request target")
		}
	}
	if !h.hostOverride && h.host == nil && h.minor >= 1 {
		// RFC 9112 section 3.2.
		return badRequest("missing Host header")
	}
	return nil
}

// parseRequestLine reads "method SP request-target SP HTTP/1.x".
func (h *h1head) parseRequestLine(line []byte) bool {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	h.method = line[:sp]
	for _, c := range h.method {
		if !isToken(c) {
			return false
		}
	}
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	h.target = line[:sp]
	for _, c := range h.target {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	v := line[sp+1:]
	if len(v) != 8 || string(v[:7]) != "HTTP/1." || v[7] < '0' || v[7] > '9' {
		return false
	}
	h.minor = v[7] - '0'
	return true
}

// absoluteForm takes an absolute-form target ("http://host/path"): its
// authority replaces Host (RFC 9112 section 3.2.2), and the target becomes
// the origin-form path and query.
func (h *h1head) absoluteForm() bool {
	t := h.target
	var rest []byte
	switch {
	case len(t) > 7 && asciiEqualFoldBytes(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && asciiEqualFoldBytes(t[:8], "https://"):
		rest = t[8:]
	default:
		return false
	}
	// An absolute-URI has no fragment (RFC 9112 section 3.2.2), and
	// other parsers keep "#..." in the path or query instead of dropping
	// it: refused, so that the upstream is not sent another path than
	// they would read.
	if bytes.IndexByte(rest, '#') >= 0 {
		return false
	}
	end := bytes.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	if at := bytes.LastIndexByte(authority, '@'); at >= 0 {
		authority = authority[at+1:]
	}
	// Percent-encoding in the host is decoded by URI parsers ("a%C3%A4"
	// is "aä" to net/url, "[::1%25e]" is "[::1%e]") and not by the Host
	// field's readers: refused, as the host forwarded would not be the
	// one they read.
	if len(authority) == 0 || !validHost(authority) || bytes.IndexByte(authority, '%') >= 0 {
		return false
	}
	h.host, h.hostOverride = authority, true
	path := rest[end:]
	switch {
	case len(path) == 0:
		h.target = slash
	case path[0] == '?':
		// "http://a?q" has an empty path: "/" with the query. The slice
		// starts one byte earlier, on the last byte of the authority,
		// which cannot be "/": so the bytes are copied.
		h.target = append([]byte("/"), path...)
	default:
		h.target = path
	}
	return true
}

var slash = []byte("/")

// parseResponse parses a response head.
func (h *h1head) parseResponse(b []byte) bool {
	h.reset()
	line, rest := nextLine(b)
	// "HTTP/1.x SP 3DIGIT SP reason"; the space before an empty reason is
	// often missing, and accepted.
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[7] < '0' || line[7] > '9' || line[8] != ' ' {
		return false
	}
	h.minor = line[7] - '0'
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if h.status < 100 {
		return false
	}
	if len(line) > 12 {
		if line[12] != ' ' {
			return false
		}
		h.reason = line[13:]
		for _, c := range h.reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return false
			}
		}
	}
	if h.parseFields(rest, 0, false) != nil {
		return false
	}
	if h.minor == 0 && h.body == bodyChunked {
		// RFC 9112 section 6.1: faulty framing, as in a request. An
		// HTTP/1.0 recipient reads such a body until the close.
		return false
	}
	if h.body == bodyNone {
		// RFC 9112 section 6.3: a response without framing fields ends
		// when the connection does.
		h.body = bodyUntilClose
	}
	return true
}

// parseFields reads the field lines of a head up to its empty line and
// derives the framing and connection options from them. maxFields of 0 is
// no limit.
func (h *h1head) parseFields(b []byte, maxFields int, request bool) *h1Error {
	keepAlive := false
	named := false
	var upgrade []byte
	upgradeToken := false
	for {
		var line []byte
		line, b = nextLine(b)
		if len(line) == 0 {
			break
		}
		if maxFields > 0 && len(h.fields) == maxFields {
			return errTooManyField
		}
		name, value, ok := splitFieldLine(line)
		if !ok {
			return errBadFieldLine
		}
		f := h1field{name: name, value: value}
		switch len(name) {
		case 2:
			if asciiEqualFoldBytes(name, "te") {
				f.drop = true
				h.teTrailers = h.teTrailers || hasToken(value, "trailers")
			}
		case 4:
			if request && asciiEqualFoldBytes(name, "host") {
				if h.host != nil {
					return badRequest("more than one Host header")
				}
				if !validHost(value) {
					return badRequest("malformed Host header")
				}
				h.host = value
			}
		case 6:
			if request && asciiEqualFoldBytes(name, "expect") && asciiEqualFoldBytes(value, "100-continue") {
				h.expect = true
			}
		case 7:
			if asciiEqualFoldBytes(name, "upgrade") {
				f.drop = true
				upgrade = value
			}
		case 10:
			switch {
			case asciiEqualFoldBytes(name, "connection"):
				f.drop = true
				for v := value; len(v) > 0; {
					var tok []byte
					tok, v = nextToken(v)
					switch {
					case asciiEqualFoldBytes(tok, "close"):
						h.close = true
					case asciiEqualFoldBytes(tok, "keep-alive"):
						keepAlive = true
					case asciiEqualFoldBytes(tok, "upgrade"):
						upgradeToken = true
					case len(tok) > 0:
						named = true
					}
				}
			case asciiEqualFoldBytes(name, "keep-alive"):
				f.drop = true
			}
		case 14:
			if asciiEqualFoldBytes(name, "content-length") {
				f.drop = true
				n, ok := parseContentLength(value)
				if !ok || h.body == bodyLength && n != h.length {
					return badRequest("invalid Content-Length")
				}
				switch {
				case h.body != bodyChunked:
					h.body, h.length = bodyLength, n
				case request:
					return errBothFramings
				default:
					// As below: Transfer-Encoding wins, whatever the order.
					h.close = true
				}
			}
		case 16:
			if asciiEqualFoldBytes(name, "proxy-connection") {
				f.drop = true
			}
		case len(unprocessedHeader):
			// Only a server's proxy may say that a request was not
			// processed: an application's field of that name is dropped,
			// so that it cannot make a client's proxy send its request
			// again.
			if !request && asciiEqualFoldBytes(name, unprocessedHeader) {
				f.drop = true
				h.unprocessed = true
			}
		case 17:
			if asciiEqualFoldBytes(name, "transfer-encoding") {
				f.drop = true
				if h.body == bodyChunked {
					// Two codings (two fields) would mean chunked twice, or
					// another coding: neither is forwarded.
					return errUnsupportedTE
				}
				if !asciiEqualFoldBytes(value, "chunked") {
					return errUnsupportedTE
				}
				if h.body == bodyLength {
					if request {
						return errBothFramings
					}
					// RFC 9112 section 6.3: in a response, Transfer-Encoding
					// overrides Content-Length; the connection is not reused.
					h.close = true
				}
				h.body = bodyChunked
			}
		}
		h.fields = append(h.fields, f)
	}
	if h.minor == 0 && !keepAlive {
		h.close = true
	}
	if upgradeToken && len(upgrade) > 0 {
		h.upgrade = upgrade
	}
	if named {
		h.dropNamed()
	}
	return nil
}

// splitFieldLine splits "name: value" (RFC 9112 section 5). The name is a
// token directly followed by the colon: whitespace before the colon, and
// obsolete line folding (a line starting with whitespace), are refused,
// since other parsers read them differently. The value loses its leading
// and trailing whitespace and may hold no control character but HTAB.
func splitFieldLine(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name = line[:colon]
	for _, c := range name {
		if !isToken(c) {
			return nil, nil, false
		}
	}
	value = trimOWS(line[colon+1:])
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// dropNamed marks the fields that a Connection field names (RFC 9110
// section 7.6.1). Host and the framing fields stay: the proxy reads them
// itself, and a sender must not be able to make the proxy and the upstream
// disagree on them.
func (h *h1head) dropNamed() {
	for _, c := range h.fields {
		if !asciiEqualFoldBytes(c.name, "connection") {
			continue
		}
		for v := c.value; len(v) > 0; {
			var tok []byte
			tok, v = nextToken(v)
			if len(tok) == 0 || asciiEqualFoldBytes(tok, "te") || asciiEqualFoldBytes(tok, "host") ||
				asciiEqualFoldBytes(tok, "content-length") || asciiEqualFoldBytes(tok, "transfer-encoding") {
				continue
			}
			for i := range h.fields {
				if bytes.EqualFold(h.fields[i].name, tok) {
					h.fields[i].drop = true
				}
			}
		}
	}
}

func (h *h1head) isMethod(m string) bool { return string(h.method) == m }

// appendRequest appends the head sent upstream: the request line in
// HTTP/1.1, the end-to-end fields in their order, and the proxy's own
// framing and connection fields. addr is the Host of a request that came
// without one (HTTP/1.0).
func (h *h1head) appendRequest(dst []byte, addr string) []byte {
	dst = append(dst, h.method...)
	dst = append(dst, ' ')
	dst = append(dst, h.target...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	switch {
	case h.hostOverride:
		dst = appendField(dst, "Host", h.host)
	case h.host == nil:
		dst = append(dst, "Host: "...)
		dst = append(dst, addr...)
		dst = append(dst, "\r\n"...)
	}
	for _, f := range h.fields {
		if f.drop || h.hostOverride && asciiEqualFoldBytes(f.name, "host") {
			continue
		}
		dst = appendField(dst, string(f.name), f.value)
	}
	if h.upgrade != nil {
		dst = append(dst, "Connection: Upgrade\r\n"...)
		dst = appendField(dst, "Upgrade", h.upgrade)
	}
	if h.teTrailers {
		dst = append(dst, "TE: trailers\r\n"...)
	}
	switch h.body {
	case bodyLength:
		dst = appendContentLength(dst, h.length)
	case bodyChunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	default:
		if h.isMethod("POST") || h.isMethod("PUT") || h.isMethod("PATCH") {
			// As Go's client does: some servers want a length on these.
			dst = append(dst, "Content-Length: 0\r\n"...)
		}
	}
	return append(dst, "\r\n"...)
}

// appendResponse appends the head sent to the client: the status line in
// HTTP/1.1, the end-to-end fields, and framing as body says (for a
// response without a body, the upstream's Content-Length is kept: it tells
// a HEAD or 304 the length of the representation). conn is the
// Connection field to add ("" for none).
func (h *h1head) appendResponse(dst []byte, body bodyKind, conn string) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(h.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, h.reason...)
	dst = append(dst, "\r\n"...)
	for _, f := range h.fields {
		if f.drop {
			continue
		}
		dst = appendField(dst, string(f.name), f.value)
	}
	switch {
	case body == bodyLength || body == bodyNone && h.body == bodyLength:
		dst = appendContentLength(dst, h.length)
	case body == bodyChunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	if h.status == http.StatusSwitchingProtocols && h.upgrade != nil {
		dst = append(dst, "Connection: Upgrade\r\n"...)
		dst = appendField(dst, "Upgrade", h.upgrade)
	} else if conn != "" {
		dst = append(dst, "Connection: "...)
		dst = append(dst, conn...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func appendField(dst []byte, name string, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

func appendContentLength(dst []byte, n int64) []byte {
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, "\r\n"...)
}

// parseContentLength reads a Content-Length value: decimal digits only
// (no sign, no list), at most 18 of them.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// nextToken splits the first element off a comma-separated list.
func nextToken(v []byte) (tok, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return trimOWS(v[:i]), v[i+1:]
	}
	return trimOWS(v), nil
}

// hasToken reports whether the list v has the element tok, ignoring case
// and parameters ("trailers;q=1" has "trailers").
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v = nextToken(v)
		if i := bytes.IndexByte(t, ';'); i >= 0 {
			t = trimOWS(t[:i])
		}
		if asciiEqualFoldBytes(t, tok) {
			return true
		}
	}
	return false
}

func asciiEqualFoldBytes(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isToken(c byte) bool { return tokenByte[c] }

// validHost is httpguts.ValidHostHeader on bytes: no byte outside those
// that a host, an IPv6 literal or a port may hold.
func validHost(h []byte) bool {
	for _, c := range h {
		if !hostByte[c] {
			return false
		}
	}
	return true
}

var tokenByte, hostByte [256]bool

func init() {
	for c := '0'; c <= '9'; c++ {
		tokenByte[c], hostByte[c] = true, true
	}
	for c := 'a'; c <= 'z'; c++ {
		tokenByte[c], hostByte[c] = true, true
		tokenByte[c-'a'+'A'], hostByte[c-'a'+'A'] = true, true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		tokenByte[c] = true
	}
	for _, c := range []byte("!$%&'()*+,-.:;=[]_~") {
		hostByte[c] = true
	}
}
