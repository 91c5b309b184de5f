package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// h1BufSize is the size of the read and write buffers of every HTTP/1
// connection, client or upstream. A read buffer grows beyond it only while
// a message head or chunk line does not fit, up to the limit of the caller.
const h1BufSize = 4096

var (
	errBufferFull = errors.New("buffer full")
	errHeadLimit  = errors.New("message head too large")
)

var h1BufPool = sync.Pool{New: func() any { b := make([]byte, h1BufSize); return &b }}

func getBuf() []byte { return *(h1BufPool.Get().(*[]byte)) }

// putBuf pools a buffer of the usual size; one grown for a large head is
// left to the collector.
func putBuf(b []byte) {
	if cap(b) == h1BufSize {
		b = b[:h1BufSize]
		h1BufPool.Put(&b)
	}
}

// h1in reads one connection through a buffer. What it returns are views
// into the buffer, valid until the next call that reads.
type h1in struct {
	src  io.Reader
	buf  []byte
	r, w int
	// n counts the bytes read from src, so that a caller can tell whether
	// anything arrived between two points.
	n int64
}

func newH1In(src io.Reader) *h1in {
	return &h1in{src: src, buf: getBuf()}
}

// release returns the buffer to the pool; the reader is unusable after,
// until it is given a buffer again.
func (in *h1in) release() {
	putBuf(in.buf)
	in.buf = nil
}

func (in *h1in) buffered() []byte { return in.buf[in.r:in.w] }

func (in *h1in) consume(n int) {
	in.r += n
	if in.r == in.w {
		in.r, in.w = 0, 0
	}
}

// fill reads once from src into the free end of the buffer, moving the
// unread bytes to the front first when the end is full, and growing the
// buffer up to limit bytes when the unread bytes fill it all.
func (in *h1in) fill(limit int) error {
	if in.w == len(in.buf) {
		switch {
		case in.r > 0:
			in.w = copy(in.buf, in.buf[in.r:in.w])
			in.r = 0
		case len(in.buf) < limit:
			nb := make([]byte, min(2*len(in.buf), limit))
			in.w = copy(nb, in.buf[:in.w])
			in.release()
			in.buf = nb
		default:
			return errBufferFull
		}
	}
	n, err := in.src.Read(in.buf[in.w:])
	in.w += n
	in.n += int64(n)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// shrink gives back a buffer that grew for an unusually large head, once
// what it holds fits the usual size again.
func (in *h1in) shrink() {
	if len(in.buf) == h1BufSize || in.w-in.r > h1BufSize {
		return
	}
	b := getBuf()
	in.w = copy(b, in.buf[in.r:in.w])
	in.r = 0
	in.buf = b
}

// head waits for a complete message head (up to and including the empty
// line that ends it) and returns its length; the head is buffered()[:n].
// A head longer than limit bytes is errHeadLimit.
func (in *h1in) head(limit int) (int, error) {
	scanned := 0
	for {
		b := in.buffered()
		if n := headEnd(b, scanned); n > 0 {
			if n > limit {
				return 0, errHeadLimit
			}
			return n, nil
		}
		if len(b) > limit {
			return 0, errHeadLimit
		}
		// Resume the search a little before the old end: the empty line
		// may straddle two reads.
		scanned = max(len(b)-3, 0)
		// One buffer beyond the limit, so that a head of exactly limit bytes
		// followed by its body is still read whole.
		if err := in.fill(limit + h1BufSize); err != nil {
			if err == errBufferFull {
				err = errHeadLimit
			}
			return 0, err
		}
	}
}

// headEnd returns the length of the head at the start of b, up to and
// including its empty line (CRLF CRLF or a bare LF LF), or 0 when b does
// not hold it all yet. Searching starts at from.
func headEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// h1out gathers bytes for one connection and writes them in as few writes
// as it can. timeout, when not 0, bounds every write: a peer that stops
// reading cannot hold the proxy's buffers.
type h1out struct {
	c       net.Conn
	buf     []byte
	timeout time.Duration
	// sent counts the bytes written to c, so that a caller can tell
	// whether anything reached the peer between two points.
	sent int64
}

func newH1Out(c net.Conn, timeout time.Duration) *h1out {
	return &h1out{c: c, buf: getBuf()[:0], timeout: timeout}
}

// shrink gives back a buffer that grew for an unusually large head; it
// must hold nothing.
func (o *h1out) shrink() {
	if cap(o.buf) != h1BufSize {
		o.buf = getBuf()[:0]
	}
}

func (o *h1out) release() {
	putBuf(o.buf)
	o.buf = nil
}

func (o *h1out) flush() error {
	if len(o.buf) == 0 {
		return nil
	}
	err := o.writeNow(o.buf)
	o.buf = o.buf[:0]
	return err
}

// write gathers p, or writes it at once when it would not fit.
func (o *h1out) write(p []byte) error {
	if len(o.buf)+len(p) <= cap(o.buf) {
		o.buf = append(o.buf, p...)
		return nil
	}
	if err := o.flush(); err != nil {
		return err
	}
	if len(p) < cap(o.buf) {
		o.buf = append(o.buf, p...)
		return nil
	}
	return o.writeNow(p)
}

func (o *h1out) writeNow(p []byte) error {
	if o.timeout > 0 {
		o.c.SetWriteDeadline(time.Now().Add(o.timeout))
	}
	n, err := o.c.Write(p)
	o.sent += int64(n)
	return err
}
