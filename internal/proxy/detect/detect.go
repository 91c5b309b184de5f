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

// MaxPeek is the most bytes detection reads before giving up and calling the
// connection TCP: a TLS record of the largest size, which holds any ClientHello
// a client sends in one record, and far more than any HTTP/1 request line.
const MaxPeek = 5 + 16384

// preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// prefaceLine is the preface's first line.
const prefaceLine = "PRI * HTTP/2.0\r\n"

// Classify decides what the bytes read so far are. done is false when more
// bytes are needed to decide; a caller out of bytes or time treats that as
// TCP. sni is the server name of a TLS ClientHello, when it has one.
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

// classifyHTTP1 accepts a request line "token SP target SP HTTP/1.d CRLF"
// (RFC 9112 section 3). It waits for the whole line so that a protocol
// whose first word merely looks like a method (Redis inline commands, say)
// is not taken for HTTP.
func classifyHTTP1(b []byte) (Protocol, string, bool) {
	const maxMethod = 32 // no method in use is longer
	i := 0
	for ; i < len(b) && i <= maxMethod && isTokenChar(b[i]); i++ {
	}
	if i > maxMethod {
		return TCP, "", true
	}
	if i == len(b) {
		return TCP, "", false
	}
	if i == 0 || b[i] != ' ' {
		return TCP, "", true
	}
	eol := bytes.IndexByte(b[i+1:], '\n')
	if eol < 0 {
		// The target must be printable ASCII without spaces; one more space
		// starts the version.
		for _, c := range b[i+1:] {
			if c <= ' ' && c != ' ' || c == 0x7f {
				return TCP, "", true
			}
		}
		return TCP, "", false
	}
	line := b[i+1 : i+1+eol]
	line = bytes.TrimSuffix(line, []byte("\r"))
	sp := bytes.LastIndexByte(line, ' ')
	if sp <= 0 {
		return TCP, "", true
	}
	for _, c := range line[:sp] {
		if c <= ' ' || c == 0x7f {
			return TCP, "", true
		}
	}
	v := line[sp+1:]
	if len(v) == 8 && string(v[:7]) == "HTTP/1." && v[7] >= '0' && v[7] <= '9' {
		return HTTP1, "", true
	}
	return TCP, "", true
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
	// TimedOut is true when the client did not send enough bytes in time.
	TimedOut bool
	// Conn reads the sniffed bytes first, then the rest of the connection.
	Conn *Conn
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, MaxPeek); return &b }}

// Sniff reads from c until Classify decides, c closes, MaxPeek bytes have
// come, or timeout passes; everything but a decision means TCP. It returns
// an error only when c failed or closed before sending a byte. It clears
// the read deadline it sets.
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
				// A full buffer undecided is TCP, except a TLS record too
				// large to read whole, which is still TLS.
				if !done && p != TLS {
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
			// A client that half-closed after a few bytes still gets them
			// forwarded; the TCP path will see the EOF again.
			res.Protocol = TCP
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
