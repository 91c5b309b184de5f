package proxy

import (
	"bytes"
	"errors"
	"io"
)

var errBadChunk = errors.New("malformed chunked encoding")

// relay copies one message body from in to out: a body of known length as
// it is, a chunked body as chunks (normalised: extensions dropped, trailers
// checked and kept) or as plain bytes, a body that runs until the close as
// chunks or as plain bytes. Whatever waits in out is written before relay
// blocks on in, so a body that trickles (server-sent events, a long poll)
// reaches the receiver as it comes.
type relay struct {
	in    *h1in
	out   *h1out
	guard *idleGuard
	// maxTrailer bounds the trailer section of a chunked body.
	maxTrailer int

	// n counts the body's bytes, framing excluded.
	n int64
	// readErr is a failure of in (a cut, malformed chunks); writeErr one
	// of out.
	readErr, writeErr error
}

// run relays a body framed as kind (length bytes for bodyLength); chunked
// chooses the framing towards out for a chunked or until-close body. It
// reports whether the whole body went through.
func (r *relay) run(kind bodyKind, length int64, chunked bool) bool {
	switch kind {
	case bodyLength:
		r.copyN(length)
	case bodyChunked:
		r.chunks(chunked)
	case bodyUntilClose:
		r.untilClose(chunked)
	}
	if r.readErr == nil && r.writeErr == nil {
		r.writeErr = r.out.flush()
	}
	return r.readErr == nil && r.writeErr == nil
}

// fill waits for more bytes from in, after writing what out holds.
func (r *relay) fill() bool {
	if err := r.out.flush(); err != nil {
		r.writeErr = err
		return false
	}
	if err := r.in.fill(len(r.in.buf)); err != nil {
		r.readErr = err
		return false
	}
	r.guard.touch()
	return true
}

func (r *relay) write(b []byte) bool {
	if err := r.out.write(b); err != nil {
		r.writeErr = err
		return false
	}
	return true
}

func (r *relay) copyN(n int64) bool {
	for n > 0 {
		b := r.in.buffered()
		if len(b) == 0 {
			if !r.fill() {
				if r.readErr == io.EOF {
					r.readErr = io.ErrUnexpectedEOF
				}
				return false
			}
			continue
		}
		if int64(len(b)) > n {
			b = b[:n]
		}
		if !r.write(b) {
			return false
		}
		r.in.consume(len(b))
		n -= int64(len(b))
		r.n += int64(len(b))
	}
	return true
}

// line reads a line of the chunked framing, without its CRLF. A bare LF
// is malformed: RFC 9112 allows it for the lines of a head, not for those
// of the chunked coding (erratum 7633), and parsers that read it as a line
// end and those that do not disagree on where the body ends.
func (r *relay) line() ([]byte, bool) {
	for {
		b := r.in.buffered()
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			r.in.consume(i + 1)
			if i == 0 || b[i-1] != '\r' {
				r.readErr = errBadChunk
				return nil, false
			}
			return b[:i-1], true
		}
		if len(b) >= len(r.in.buf) {
			r.readErr = errBadChunk
			return nil, false
		}
		if !r.fill() {
			if r.readErr == io.EOF {
				r.readErr = io.ErrUnexpectedEOF
			}
			return nil, false
		}
	}
}

func (r *relay) chunks(chunked bool) {
	var hex [20]byte
	for {
		l, ok := r.line()
		if !ok {
			return
		}
		size, ok := parseChunkSize(l)
		if !ok {
			r.readErr = errBadChunk
			return
		}
		if size == 0 {
			r.trailers(chunked)
			return
		}
		if chunked {
			h := appendHex(hex[:0], size)
			h = append(h, '\r', '\n')
			if !r.write(h) {
				return
			}
		}
		if !r.copyN(size) {
			return
		}
		if l, ok = r.line(); !ok {
			return
		}
		if len(l) != 0 {
			r.readErr = errBadChunk
			return
		}
		if chunked && !r.write(crlf) {
			return
		}
	}
}

var crlf = []byte("\r\n")

// trailers relays the trailer section after the last chunk: field lines,
// checked as header fields are, and the empty line.
func (r *relay) trailers(chunked bool) {
	if chunked && !r.write([]byte("0\r\n")) {
		return
	}
	size := 0
	for {
		l, ok := r.line()
		if !ok {
			return
		}
		size += len(l) + 2
		if size > r.maxTrailer {
			r.readErr = errBadChunk
			return
		}
		if len(l) == 0 {
			if chunked {
				r.write(crlf)
			}
			return
		}
		if !validFieldLine(l) {
			r.readErr = errBadChunk
			return
		}
		if chunked && (!r.write(l) || !r.write(crlf)) {
			return
		}
	}
}

func (r *relay) untilClose(chunked bool) {
	var hex [20]byte
	for {
		b := r.in.buffered()
		if len(b) == 0 {
			if !r.fill() {
				if r.readErr == io.EOF {
					r.readErr = nil
					if chunked {
						r.write([]byte("0\r\n\r\n"))
					}
				}
				return
			}
			continue
		}
		if chunked {
			h := appendHex(hex[:0], int64(len(b)))
			h = append(h, '\r', '\n')
			if !r.write(h) {
				return
			}
		}
		if !r.write(b) || chunked && !r.write(crlf) {
			return
		}
		r.in.consume(len(b))
		r.n += int64(len(b))
	}
}

// parseChunkSize reads "hex-size [ws] [; extensions]" (RFC 9112 section
// 7.1). Extensions are allowed and ignored.
func parseChunkSize(l []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(l); i++ {
		c := l[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto rest
		}
		if i == 15 {
			return 0, false // beyond 2^60: nobody sends that
		}
		n = n<<4 | int64(d)
	}
rest:
	if i == 0 {
		return 0, false
	}
	for _, c := range l[i:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, false
		}
	}
	ext := trimOWS(l[i:])
	if len(ext) > 0 && ext[0] != ';' {
		return 0, false
	}
	return n, true
}

func appendHex(dst []byte, n int64) []byte {
	const digits = "0123456789abcdef"
	var b [16]byte
	i := len(b)
	for {
		i--
		b[i] = digits[n&0xf]
		n >>= 4
		if n == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

// validFieldLine checks a trailer field line as parseFields checks a
// header field line.
func validFieldLine(l []byte) bool {
	_, _, ok := splitFieldLine(l)
	return ok
}
