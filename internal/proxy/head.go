package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// headRecorder sits between the client connection and the HTTP/1 reader
// and keeps a copy of the bytes of one request head while it is parsed, so
// that the raw head can be checked for what http.ReadRequest normalises
// away. It also stops a head that grows past the limit.
type headRecorder struct {
	r        io.Reader
	on       bool
	buf      []byte
	limit    int
	tooLarge bool
}

var errHeadTooLarge = errors.New("request header too large")

func (h *headRecorder) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.on && n > 0 {
		h.buf = append(h.buf, p[:n]...)
		if len(h.buf) > h.limit {
			h.tooLarge = true
			return n, errHeadTooLarge
		}
	}
	return n, err
}

// begin starts recording with the bytes br already holds. The limit allows
// one read buffer beyond max, because a read may bring body bytes along.
func (h *headRecorder) begin(br *bufio.Reader, max int) {
	h.buf = h.buf[:0]
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		h.buf = append(h.buf, b...)
	}
	h.limit = max + br.Size()
	h.tooLarge = false
	h.on = true
}

// end stops recording and returns the bytes from the start of the head; the
// head ends at its first empty line, and bytes after it are not the head's.
func (h *headRecorder) end() []byte {
	h.on = false
	return h.buf
}

// release drops a buffer grown by an unusually large head.
func (h *headRecorder) release() {
	h.buf = nil
}

// headFacts is what scanHead learns from a raw request head.
type headFacts struct {
	fields           int
	size             int
	contentLength    bool
	transferEncoding bool
	bad              bool
}

// scanHead counts the header fields and bytes of a raw request head and
// notes the framing fields it carries.
func scanHead(b []byte) headFacts {
	var v headFacts
	first := true
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return v
		}
		line := b[:i]
		b = b[i+1:]
		v.size += i + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if first {
			first = false
			continue
		}
		if len(line) == 0 {
			return v
		}
		v.fields++
		// RFC 9112 section 5: a field name is a token directly followed by
		// a colon; whitespace before the colon and obsolete line folding
		// are rejected, since other parsers read them differently.
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			v.bad = true
			return v
		}
		for _, c := range line[:colon] {
			if !isToken(c) {
				v.bad = true
				return v
			}
		}
		switch {
		case hasFieldName(line, "content-length"):
			v.contentLength = true
		case hasFieldName(line, "transfer-encoding"):
			v.transferEncoding = true
		}
	}
}

func isToken(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func hasFieldName(line []byte, name string) bool {
	return len(line) > len(name) && line[len(name)] == ':' && asciiEqualFold(string(line[:len(name)]), name)
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
