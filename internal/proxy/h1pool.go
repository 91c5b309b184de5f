package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/sys/unix"
)

// The HTTP/1 upstream side is a pool of persistent connections per endpoint
// address, used by the request's own goroutine: write the request, read the
// response, hand the connection back when the response body ends. It
// replaced http.Transport on this path after profiling: the Transport hands
// every request to two goroutines of its own (write and read loops) and
// back, which cost more than the proxy's own work per request.

// upstreamConn is one pooled HTTP/1 connection to an endpoint.
type upstreamConn struct {
	net.Conn
	addr      string
	lim       *headLimiter
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// maxResponseHead bounds a response's status line and headers: an upstream
// must not be able to make the proxy buffer without end either.
const maxResponseHead = 1 << 20

var errResponseHeadTooLarge = errors.New("response header too large")

// headLimiter fails reads once n bytes were read while it is armed.
type headLimiter struct {
	r     io.Reader
	n     int
	armed bool
}

func (l *headLimiter) Read(p []byte) (int, error) {
	if l.armed {
		if l.n <= 0 {
			return 0, errResponseHeadTooLarge
		}
		p = p[:min(len(p), l.n)]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// h1Pool keeps idle upstream connections, at most maxIdle per address, for
// at most idleTimeout.
type h1Pool struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*upstreamConn
	closed bool
}

func newH1Pool(dial func(context.Context, string, string) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *h1Pool {
	return &h1Pool{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: map[string][]*upstreamConn{}}
}

// get returns an idle connection to addr, most recently used first, or
// dials a new one; reused tells which.
func (p *h1Pool) get(ctx context.Context, addr string) (uc *upstreamConn, reused bool, err error) {
	p.mu.Lock()
	for list := p.idle[addr]; len(list) > 0; list = p.idle[addr] {
		uc = list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		if time.Since(uc.idleSince) < p.idleTimeout {
			p.mu.Unlock()
			// A guard of the previous request may have set a deadline.
			uc.SetDeadline(time.Time{})
			return uc, true, nil
		}
		uc.Close()
	}
	p.mu.Unlock()
	c, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	lim := &headLimiter{r: c}
	return &upstreamConn{Conn: c, addr: addr, lim: lim, br: bufio.NewReaderSize(lim, 4096), bw: bufio.NewWriterSize(c, 4096)}, false, nil
}

// put returns a connection whose last response was read to the end.
func (p *h1Pool) put(uc *upstreamConn) {
	uc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.addr]) >= p.maxIdle {
		p.mu.Unlock()
		uc.Close()
		return
	}
	p.idle[uc.addr] = append(p.idle[uc.addr], uc)
	p.mu.Unlock()
}

// reap closes the connections idle for idleTimeout or more at now, and
// forgets addresses left without any, so that connections to endpoints a
// reload removed do not stay open for ever.
func (p *h1Pool) reap(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		kept := list[:0]
		for _, uc := range list {
			if now.Sub(uc.idleSince) >= p.idleTimeout {
				uc.Close()
				continue
			}
			kept = append(kept, uc)
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = kept
		}
	}
}

// idleCount returns the number of idle connections.
func (p *h1Pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// close closes the idle connections and every connection put back later.
func (p *h1Pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, list := range p.idle {
		for _, uc := range list {
			uc.Close()
		}
		delete(p.idle, addr)
	}
}

// closedByPeer reports, without blocking, whether the upstream has closed
// an idle connection (a read would return EOF at once), so that a request
// whose body cannot be replayed is not sent on a dead connection.
func closedByPeer(c net.Conn) bool {
	tc, ok := tcpConn(c)
	if !ok {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	closed := false
	raw.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = n == 0 && err == nil || err != nil && !errors.Is(err, unix.EAGAIN)
		return true
	})
	return closed
}

// roundTrip sends req to addr over a pooled connection and returns the
// final response (1xx other than 101 are skipped: the proxy already tells
// the client to continue when the body is first read). The response body
// returns the connection to the pool when read to the end, or closes it.
// A request without a body that fails on a reused connection before any
// response byte is retried once on a new connection: the upstream may have
// closed the idle connection as the request went out.
//
// cur is set to the connection in use as soon as there is one, so that the
// caller's timeout can cut it while the request waits on it.
//
// hasBody means a body streamed from the client, which cannot be replayed;
// replay, when not nil, is a body held whole in memory (req.Body reads it),
// rewound for each attempt.
func (p *h1Pool) roundTrip(ctx context.Context, addr string, req *http.Request, hasBody bool, replay *bufferedBody, cur *atomic.Pointer[upstreamConn]) (*http.Response, *upstreamConn, error) {
	for attempt := 0; ; attempt++ {
		uc, reused, err := p.get(ctx, addr)
		if err != nil {
			return nil, nil, &dialError{err}
		}
		if reused && hasBody && closedByPeer(uc.Conn) {
			uc.Close()
			if uc, _, err = p.get(ctx, addr); err != nil {
				return nil, nil, &dialError{err}
			}
			reused = false
		}
		cur.Store(uc)
		if replay != nil {
			replay.rewind()
			req.Body = replay.rc
		}
		resp, err := p.exchange(uc, req, hasBody, replay)
		if err == nil {
			return resp, uc, nil
		}
		uc.Close()
		if !reused || hasBody || attempt > 0 {
			return nil, nil, err
		}
	}
}

func (p *h1Pool) exchange(uc *upstreamConn, req *http.Request, hasBody bool, replay *bufferedBody) (*http.Response, error) {
	var writeDone chan error
	if hasBody {
		// The body is written while the response is read, so that an
		// upstream that answers early (413, 401) is heard, and a streamed
		// upload does not wait for its own end.
		writeDone = make(chan error, 1)
		go func() {
			err := req.Write(uc.bw)
			if err == nil {
				err = uc.bw.Flush()
			}
			if err != nil {
				uc.Close() // unblock the reader
			}
			writeDone <- err
		}()
	} else {
		var body []byte
		if replay != nil {
			body = replay.data
		}
		ok, err := writeRequest(uc.bw, req, body)
		if !ok {
			err = req.Write(uc.bw)
		}
		if err != nil {
			return nil, err
		}
		if err := uc.bw.Flush(); err != nil {
			return nil, err
		}
	}
	for {
		uc.lim.n, uc.lim.armed = maxResponseHead, true
		resp, err := http.ReadResponse(uc.br, req)
		uc.lim.armed = false
		if err != nil {
			if writeDone != nil {
				uc.Close() // stop the writer if it is sending
				if werr := <-writeDone; werr != nil {
					err = &bodyWriteError{werr}
				}
			}
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		resp.Body = &upstreamBody{rc: resp.Body, uc: uc, pool: p, reusable: !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols, writeDone: writeDone}
		return resp, nil
	}
}

// dialError is a failure to connect, as opposed to a failure of an
// established connection.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dialing upstream: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// bodyWriteError is a failure to send the request body upstream, usually
// because reading it from the client failed.
type bodyWriteError struct{ err error }

func (e *bodyWriteError) Error() string { return "sending request body: " + e.err.Error() }
func (e *bodyWriteError) Unwrap() error { return e.err }

// upstreamBody is a response body that gives its connection back to the
// pool once read to the end, and closes it otherwise.
type upstreamBody struct {
	rc        io.ReadCloser
	uc        *upstreamConn
	pool      *h1Pool
	reusable  bool
	writeDone chan error
	done      bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	b.finish(false)
	return nil
}

func (b *upstreamBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	ok := complete && b.reusable
	if ok && b.writeDone != nil {
		// Reuse only if the request body went out whole, and has already.
		select {
		case err := <-b.writeDone:
			ok = err == nil
		default:
			ok = false
		}
	}
	if ok {
		b.pool.put(b.uc)
		return
	}
	b.uc.Close()
}

// reqWriteExclude are the fields Request.Write writes from the request's
// own fields rather than from its Header.
var reqWriteExclude = map[string]bool{"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeRequest writes req and body (req.ContentLength bytes held in memory,
// or none) to bw exactly as req.Write would, without its per-request
// allocations (transfer writer, body wrappers, the head flushed apart from
// the body). It reports false, having written nothing, for a request
// outside the common case it handles; the caller then uses req.Write.
func writeRequest(bw *bufio.Writer, req *http.Request, body []byte) (bool, error) {
	if req.Method == http.MethodConnect || req.Host == "" || len(req.Trailer) > 0 || req.URL.Opaque != "" ||
		len(req.TransferEncoding) > 0 || req.Close || req.ContentLength != int64(len(body)) {
		return false, nil
	}
	host := req.Host
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= utf8.RuneSelf || c == '%' {
			// Punycode and zones are req.Write's business.
			return false, nil
		}
	}
	if !httpguts.ValidHostHeader(host) {
		return false, nil
	}
	ruri := req.URL.RequestURI()
	if hasCTL(ruri) {
		return false, nil
	}
	ua := ""
	if v := req.Header["User-Agent"]; len(v) > 0 {
		ua = v[0]
		if strings.ContainsAny(ua, "\r\n") || strings.TrimSpace(ua) != ua {
			return false, nil
		}
	} else {
		return false, nil
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	switch {
	case len(body) > 0:
		bw.WriteString("Content-Length: ")
		var num [20]byte
		bw.Write(strconv.AppendInt(num[:0], int64(len(body)), 10))
		bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if err := req.Header.WriteSubset(bw, reqWriteExclude); err != nil {
		return true, err
	}
	bw.WriteString("\r\n")
	_, err := bw.Write(body)
	return true, err
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}
