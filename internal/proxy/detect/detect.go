// Package detect tells the protocol of a connection from its first bytes:
// HTTP/1.x, HTTP/2 with prior knowledge, TLS (with the server name it asks
// for) or, failing those, opaque TCP. It only reads; the bytes it read are
// handed back so that they are forwarded untouched.
package detect

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// Protocol is what a connection speaks.
type Protocol uint8

// The protocols detection can tell apart.
const (
	// TCP is anything else; the connection is forwarded as bytes.
	TCP Protocol = iota
	HTTP1
	// HTTP2 is HTTP/2 over cleartext with prior knowledge (h2c).
	HTTP2
	TLS
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http1"
	case HTTP2:
		return "h2c"
	case TLS:
		return "tls"
	default:
		return "tcp"
	}
}

// MaxPeek is the most bytes detection reads before it decides with what it
// has: a TLS record of the largest size, which holds any ClientHello a
// client sends in one record. A request line longer than that is HTTP/1.
const MaxPeek = 5 + 16384

// preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// prefaceLine is the preface's first line.
const prefaceLine = "PRI * HTTP/2.0\r\n"

// Classify decides what the bytes read so far are. done is false when more
// bytes are needed to decide. An undecided HTTP/1 or HTTP/2 answer means
// the bytes so far could still start such a request: a caller out of time
// or buffer serves the connection as that protocol (see Sniff), anything
// else undecided is TCP. sni is the server name of a TLS ClientHello, when
// it has one.
func Classify(b []byte) (p Protocol, sni string, done bool) {
	if len(b) == 0 {
		return TCP, "", false
	}
	// HTTP/2: the fixed preface, compared as far as we have it.
	n := min(len(b), len(preface))
	if string(b[:n]) == preface[:n] {
		return HTTP2, "", n == len(preface)
	}
	// Only HTTP/2 starts with this line: a client that gets the rest of the
	// preface wrong is a broken HTTP/2 client, and the HTTP/2 server, not
	// the application, must refuse it (RFC 9113 section 3.4).
	if n >= len(prefaceLine) && string(b[:len(prefaceLine)]) == prefaceLine {
		return HTTP2, "", true
	}
	if b[0] == recordTypeHandshake {
		return classifyTLS(b)
	}
	return classifyHTTP1(b)
}

// classifyHTTP1 decides whether the bytes start an HTTP/1 request. The
// proxy enforces HTTP's limits (maxHeaderBytes, headerReadTimeout) only on
// what it serves as HTTP, and an application may read as a request more
// than RFC 9112's exact grammar (RFC 9112 section 3 lets it take any
// whitespace as the separator, and lenient parsers take a lower-case
// version or trailing spaces). So anything that starts like a request, a
// token (the method) followed by whitespace, is HTTP/1 as soon as its
// first line names an HTTP version anywhere, or while the line is still
// incomplete when the caller runs out of time or buffer; the HTTP/1
// parser then answers 400, 414 or 431, or 408 at headerReadTimeout.
// Only what no HTTP parser reads as a request stays TCP: a first byte
// that cannot start a method, a control byte in the first line, or a
// complete first line that names no HTTP version (an SSH banner, Redis
// and memcached inline commands).
func classifyHTTP1(b []byte) (Protocol, string, bool) {
	// RFC 9112 section 2.2: empty lines before the request line are
	// ignored by servers.
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	line := b[i:]
	j := 0
	for j < len(line) && isTokenChar(line[j]) {
		j++
	}
	switch {
	case j == len(line):
		// Empty lines, or a method still coming.
		return HTTP1, "", false
	case j == 0 || !isSpace(line[j]) && line[j] != '\n':
		return TCP, "", true
	}
	eol := bytes.IndexByte(line, '\n')
	if eol < 0 {
		eol = len(line)
	}
	for _, c := range line[j:eol] {
		if c < ' ' && !isSpace(c) || c == 0x7f {
			return TCP, "", true
		}
	}
	if eol == len(line) {
		return HTTP1, "", false
	}
	if namesHTTPVersion(line[j:eol]) {
		return HTTP1, "", true
	}
	return TCP, "", true
}

// isSpace reports whether c separates the words of a request line for a
// lenient parser (RFC 9112 section 3): SP, HTAB, VT, FF or a bare CR.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'
}

// namesHTTPVersion reports whether b holds "HTTP/", in any case.
func namesHTTPVersion(b []byte) bool {
	// The common case first: a line that ends in "HTTP/1.x" and its CR.
	if len(b) >= 9 && string(b[len(b)-9:len(b)-3]) == "HTTP/1" {
		return true
	}
	for k := 0; k+5 <= len(b); k++ {
		if (b[k]|0x20) == 'h' && (b[k+1]|0x20) == 't' && (b[k+2]|0x20) == 't' && (b[k+3]|0x20) == 'p' && b[k+4] == '/' {
			return true
		}
	}
	return false
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// section 5.6.2).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// Result is the outcome of Sniff.
type Result struct {
	Protocol Protocol
	// SNI is the server name a TLS client asked for.
	SNI string
	// ALPN are the application protocols a TLS client offered (at most
	// eight): the mesh's own names mark mesh TLS from a peer proxy.
	ALPN []string
	// TimedOut is true when the client did not send enough bytes in time
	// to decide; Protocol is then HTTP1 or HTTP2 for bytes that could
	// still start such a request, else TCP.
	TimedOut bool
	// Conn reads the sniffed bytes first, then the rest of the connection.
	Conn *Conn
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, MaxPeek); return &b }}

// Sniff reads from c until Classify decides, c closes, MaxPeek bytes have
// come, or timeout passes. Bytes that could still start an HTTP request
// when the time or the buffer runs out are HTTP (HTTP/1, or HTTP/2 for a
// part of its preface): a request line trickled or too long for the
// window is held to HTTP's limits, not forwarded as TCP. A TLS record too
// large to read whole is still TLS. Everything else undecided is TCP. It
// returns an error only when c failed or closed before sending a byte. It
// clears the read deadline it sets.
func Sniff(c net.Conn, timeout time.Duration) (Result, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Result{}, err
	}
	n := 0
	var res Result
	for {
		m, err := c.Read(buf[n:])
		n += m
		if m > 0 {
			p, sni, done := Classify(buf[:n])
			if done || n == len(buf) {
				if !done && p != TLS && p != HTTP1 && p != HTTP2 {
					p = TCP
				}
				res.Protocol, res.SNI = p, sni
				if p == TLS && n > 5 {
					res.ALPN = alpn(buf[5:n])
				}
				break
			}
		}
		if err != nil {
			timedOut := errors.Is(err, os.ErrDeadlineExceeded)
			if n == 0 && !timedOut {
				return Result{}, err
			}
			res.TimedOut = timedOut
			res.Protocol = TCP
			if p, _, _ := Classify(buf[:n]); timedOut && (p == HTTP1 || p == HTTP2) {
				// A request still coming: the HTTP server's own deadline
				// (headerReadTimeout, counted from the accept) bounds it.
				res.Protocol = p
			}
			// Otherwise a client that half-closed after a few bytes still
			// gets them forwarded; the TCP path will see the EOF again.
			break
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return Result{}, err
	}
	res.Conn = &Conn{Conn: c, peeked: bytes.Clone(buf[:n])}
	return res, nil
}

// Conn is a connection whose first bytes were already read by Sniff; Read
// returns those bytes before reading further.
type Conn struct {
	net.Conn
	peeked []byte
}

// Read returns the sniffed bytes first.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(p, c.peeked)
		c.peeked = c.peeked[n:]
		if len(c.peeked) == 0 {
			c.peeked = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Peeked returns the sniffed bytes not yet read, and forgets them: the caller
// takes over forwarding them.
func (c *Conn) Peeked() []byte {
	p := c.peeked
	c.peeked = nil
	return p
}
