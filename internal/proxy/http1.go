package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// The HTTP/1 server side is a small loop over http.ReadRequest and
// http.Response.Write rather than net/http's Server, for two reasons that
// matter to a proxy: net/http silently drops Content-Length when
// Transfer-Encoding is also present (the proxy must refuse such a request,
// a classic smuggling vector), and it offers no hook to count header fields.
// Framing, chunking and trailers are still the standard library's.

var (
	brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	bwPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

// h1conn is the server side of one HTTP/1 client connection.
type h1conn struct {
	s   *session
	rec headRecorder
	br  *bufio.Reader
	bw  *bufio.Writer
	// wmu orders writes to bw between the request loop and a transport
	// goroutine sending "100 Continue".
	wmu sync.Mutex
	// guard watches each request in turn; upstream is the connection the
	// request in flight uses, for the guard to cut.
	guard    *idleGuard
	upstream atomic.Pointer[upstreamConn]
}

func (s *session) serveHTTP1() {
	h := &h1conn{s: s}
	h.rec.r = s.client
	h.br = brPool.Get().(*bufio.Reader)
	h.br.Reset(&h.rec)
	h.bw = bwPool.Get().(*bufio.Writer)
	h.bw.Reset(deadlineWriter{s.client, s.limits.StreamIdleTimeout.D()})
	// When a request stalls, cut both of its connections: every read and
	// write on them fails at once, which ends the request.
	h.guard = newStoppedGuard(s.limits.StreamIdleTimeout.D(), s.limits.RequestTimeout.D(), func() {
		now := time.Now()
		s.client.SetDeadline(now)
		if uc := h.upstream.Load(); uc != nil {
			uc.SetDeadline(now)
		}
	})
	defer func() {
		h.guard.stop()
		h.br.Reset(nil)
		brPool.Put(h.br)
		h.bw.Reset(nil)
		bwPool.Put(h.bw)
		h.rec.release()
	}()
	for first := true; h.serveOne(first); first = false {
	}
}

// serveOne reads and forwards one request; it reports whether the
// connection may carry another. The first request of a connection is
// always served, even while draining: its client connected before the
// listener closed and has sent it already.
func (h *h1conn) serveOne(first bool) bool {
	s := h.s
	c := s.client
	// Wait for the next request without holding anything but the
	// connection; the drain wakes idle connections through their deadline.
	if !first {
		s.tracked.idle.Store(true)
		if s.p.draining.Load() {
			return false
		}
	}
	setReadDeadline(c, s.limits.IdleTimeout.D())
	if _, err := h.br.Peek(1); err != nil {
		s.tracked.idle.Store(false)
		return false
	}
	s.tracked.idle.Store(false)
	start := time.Now()
	setReadDeadline(c, s.limits.HeaderReadTimeout.D())
	h.rec.begin(h.br, s.limits.MaxHeaderBytes)
	req, err := http.ReadRequest(h.br)
	head := h.rec.end()
	if err != nil {
		switch {
		case h.rec.tooLarge:
			h.fail(start, nil, http.StatusRequestHeaderFieldsTooLarge, metrics.ReasonHeaderLimit, "request header too large")
		case errors.Is(err, os.ErrDeadlineExceeded):
			h.fail(start, nil, http.StatusRequestTimeout, metrics.ReasonTimeout, "request header timeout")
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isNetClosed(err):
			s.series.Error(metrics.ReasonClientReset)
		default:
			h.fail(start, nil, http.StatusBadRequest, metrics.ReasonBadRequest, "malformed request")
		}
		return false
	}
	setReadDeadline(c, 0)
	v := scanHead(head)
	switch {
	case v.bad:
		h.fail(start, req, http.StatusBadRequest, metrics.ReasonBadRequest, "malformed request")
		return false
	case v.contentLength && v.transferEncoding:
		h.fail(start, req, http.StatusBadRequest, metrics.ReasonBadRequest, "both Content-Length and Transfer-Encoding")
		return false
	case v.fields > s.limits.MaxHeaderCount:
		h.fail(start, req, http.StatusRequestHeaderFieldsTooLarge, metrics.ReasonHeaderLimit, "too many header fields")
		return false
	case v.size > s.limits.MaxHeaderBytes:
		h.fail(start, req, http.StatusRequestHeaderFieldsTooLarge, metrics.ReasonHeaderLimit, "request header too large")
		return false
	}
	return h.forward(req, start)
}

// forward sends req upstream and the response back; it reports whether the
// connection may carry another request.
func (h *h1conn) forward(req *http.Request, start time.Time) bool {
	s := h.s
	class := metrics.ClassOf(req.Method)
	addr, ep, err := s.upstream()
	defer done(ep)
	if err != nil {
		h.fail(start, req, http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints")
		return false
	}

	h.upstream.Store(nil)
	guard := h.guard
	guard.arm()
	defer guard.stop()

	clientClose := req.Close
	body := &h1Body{rc: req.Body, h: h, guard: guard, expect: expectsContinue(req)}
	hasBody := prepareUpstreamRequest(req, addr, body)
	var replay *bufferedBody
	if hasBody && !body.expect && req.ContentLength > 0 && req.ContentLength <= int64(h.br.Buffered()) {
		// The whole body came with the head and is in memory already:
		// send it with the head in one write, on this goroutine, and
		// allow the retry of a request without a body, since it can be
		// replayed.
		replay = getBufferedBody(int(req.ContentLength))
		defer putBufferedBody(replay)
		if _, err := io.ReadFull(body.rc, replay.data); err != nil {
			h.fail(start, req, http.StatusBadRequest, metrics.ReasonBadRequest, "reading request body: "+err.Error())
			return false
		}
		body.n.Store(req.ContentLength)
		body.eof.Store(true)
		req.Body = replay.rc
		hasBody = false
	}
	resp, uc, err := s.p.h1Pool.roundTrip(context.Background(), addr, req, hasBody, replay, &h.upstream)
	if err != nil {
		code, reason := http.StatusBadGateway, metrics.ReasonUpstream
		var de *dialError
		var be *bodyWriteError
		switch {
		case guard.fired():
			code, reason = http.StatusGatewayTimeout, metrics.ReasonTimeout
		case body.err.Load() != nil || errors.As(err, &be) && body.err.Load() != nil:
			// The client's body was malformed (a bad chunk, say).
			code, reason = http.StatusBadRequest, metrics.ReasonBadRequest
		case errors.As(err, &de):
			reason = metrics.ReasonConnect
		}
		h.fail(start, req, code, reason, "upstream: "+err.Error())
		return false
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return h.switchProtocols(req, resp, uc, start, guard)
	}
	keep := prepareClientResponse(req, resp, !clientClose && !s.p.draining.Load())
	rb := &respBody{rc: resp.Body, h: h, guard: guard, flush: resp.ContentLength < 0}
	resp.Body = rb
	h.wmu.Lock()
	body.responded = true
	ok, err := writeResponse(h.bw, req, resp)
	if !ok {
		err = resp.Write(h.bw)
	}
	if err == nil {
		err = h.bw.Flush()
	}
	h.wmu.Unlock()
	rb.rc.Close()
	code := resp.StatusCode
	reason := ""
	if err != nil {
		// The response was cut: by the upstream, the client or a timeout.
		switch {
		case guard.fired():
			s.series.Error(metrics.ReasonTimeout)
			reason = "timeout"
		case rb.err != nil:
			s.series.Error(metrics.ReasonUpstream)
			reason = "upstream"
		default:
			s.series.Error(metrics.ReasonClientReset)
			reason = "client_reset"
		}
		keep = false
	}
	if guard.fired() {
		// The guard may have cut the connections after the response went
		// out; they are not fit for another request.
		keep = false
	}
	d := time.Since(start)
	s.series.Request(code, class, d, body.n.Load(), rb.n)
	s.logRequest(req, code, d, body.n.Load(), rb.n, addr, reason)
	if !body.eof.Load() {
		// The upstream answered without reading the whole request body;
		// what is left of it cannot be told apart from the next request.
		return false
	}
	return keep
}

// prepareUpstreamRequest turns the client's request into the one sent to
// addr, in place, with body as its body; it reports whether there is a body.
func prepareUpstreamRequest(req *http.Request, addr string, body *h1Body) (hasBody bool) {
	upgrade := upgradeType(req.Header)
	hasBody = req.ContentLength != 0
	if hasBody {
		req.Body = body
	} else {
		req.Body = nil
		body.eof.Store(true)
	}
	req.URL.Scheme = "http"
	req.URL.Host = addr
	req.Close = false
	removeHopByHop(req.Header)
	if upgrade != "" {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		// An empty value stops Request.Write from adding its own.
		req.Header["User-Agent"] = emptyValue
	}
	return hasBody
}

// prepareClientResponse frames the upstream's response for the client, in
// place: hop-by-hop fields out, chunked or close-delimited for a body of
// unknown length, keep-alive as the client and the drain allow. It reports
// whether the connection stays open after it.
func prepareClientResponse(req *http.Request, resp *http.Response, keep bool) bool {
	removeHopByHop(resp.Header)
	noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified || resp.StatusCode < 200
	if resp.ContentLength < 0 && !noBody {
		if req.ProtoAtLeast(1, 1) {
			resp.TransferEncoding = chunked
		} else {
			// An HTTP/1.0 client learns the end of the body from the close.
			resp.TransferEncoding = nil
			keep = false
		}
	} else {
		resp.TransferEncoding = nil
	}
	if keep && !req.ProtoAtLeast(1, 1) {
		resp.Header.Set("Connection", "keep-alive")
	}
	resp.Close = !keep
	return keep
}

// switchProtocols completes an Upgrade (WebSocket and others): it sends the
// 101 response and then copies bytes both ways until both sides close.
func (h *h1conn) switchProtocols(req *http.Request, resp *http.Response, upConn *upstreamConn, start time.Time, guard *idleGuard) bool {
	s := h.s
	guard.stop()
	defer upConn.Close()
	resp.Body = nil
	h.wmu.Lock()
	err := resp.Write(h.bw)
	if err == nil {
		err = h.bw.Flush()
	}
	h.wmu.Unlock()
	s.series.Request(resp.StatusCode, metrics.ClassOf(req.Method), time.Since(start), 0, 0)
	s.logRequest(req, resp.StatusCode, time.Since(start), 0, 0, "", "")
	if err != nil {
		return false
	}
	// Bytes the client sent after its request are already buffered.
	if n := h.br.Buffered(); n > 0 {
		b, _ := h.br.Peek(n)
		if _, err := upConn.Write(b); err != nil {
			return false
		}
	}
	done := make(chan struct{})
	go func() {
		io.Copy(upConn.Conn, s.client)
		closeWrite(upConn.Conn)
		close(done)
	}()
	// The upstream's bytes after its 101 may already be buffered.
	io.Copy(s.client, upConn.br)
	closeWrite(s.client)
	<-done
	return false
}

// fail answers the client with a short plain-text error and counts it. The
// connection is closed after: its state is unknown.
func (h *h1conn) fail(start time.Time, req *http.Request, code int, reason metrics.Reason, msg string) {
	s := h.s
	s.series.Error(reason)
	class := metrics.MethodOther
	if req != nil {
		class = metrics.ClassOf(req.Method)
	}
	s.series.Request(code, class, time.Since(start), 0, 0)
	if req != nil {
		s.logRequest(req, code, time.Since(start), 0, 0, "", reason.String())
	}
	text := http.StatusText(code)
	body := text + ": " + msg + "\n"
	h.wmu.Lock()
	defer h.wmu.Unlock()
	fmt.Fprintf(h.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", code, text, len(body), body)
	h.bw.Flush()
}

// Shared read-only header values, so that a request does not allocate them.
var (
	emptyValue = []string{""}
	chunked    = []string{"chunked"}
)

// h1Body is the request body as the transport reads it: counted, watched
// by the idle guard, and sending "100 Continue" when the client waits for
// it before sending.
type h1Body struct {
	rc        io.ReadCloser
	h         *h1conn
	guard     *idleGuard
	expect    bool
	responded bool // under h.wmu
	// The transport side reads the body on its own goroutine while the
	// request loop looks at the counts, hence atomics.
	n   atomic.Int64
	eof atomic.Bool
	err atomic.Pointer[error] // a read error other than EOF
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.expect {
		b.expect = false
		b.h.wmu.Lock()
		if !b.responded {
			b.h.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			b.h.bw.Flush()
		}
		b.h.wmu.Unlock()
	}
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	b.guard.touch()
	if err == io.EOF {
		b.eof.Store(true)
	} else if err != nil {
		b.err.Store(&err)
	}
	return n, err
}

// bufferedBody is a request body read whole before it is sent: a
// *bytes.Reader (which net/http writes in the same write as the head)
// that can be rewound for a retry.
type bufferedBody struct {
	buf  [4096]byte
	data []byte
	r    bytes.Reader
	rc   io.ReadCloser
}

var bufferedBodyPool = sync.Pool{New: func() any {
	b := &bufferedBody{}
	b.rc = io.NopCloser(&b.r)
	return b
}}

// getBufferedBody returns a body of n bytes (n <= 4096) to fill.
func getBufferedBody(n int) *bufferedBody {
	b := bufferedBodyPool.Get().(*bufferedBody)
	b.data = b.buf[:n]
	b.r.Reset(b.data)
	return b
}

func putBufferedBody(b *bufferedBody) {
	b.data = nil
	b.r.Reset(nil)
	bufferedBodyPool.Put(b)
}

// rewind makes the body readable from its start again.
func (b *bufferedBody) rewind() { b.r.Reset(b.data) }

// Close is a no-op: the request body belongs to the client connection,
// which outlives the transport's use of it.
func (b *h1Body) Close() error { return nil }

// respBody is the upstream response body as Response.Write copies it to
// the client. For a body of unknown length, it flushes what was written
// before it blocks on the upstream again, so streamed responses (server-sent
// events, long polls) reach the client as they come.
type respBody struct {
	rc    io.ReadCloser
	h     *h1conn
	guard *idleGuard
	flush bool
	n     int64
	err   error
}

func (b *respBody) Read(p []byte) (int, error) {
	if b.flush && b.h.bw.Buffered() > 0 {
		if err := b.h.bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	b.guard.touch()
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *respBody) Close() error { return b.rc.Close() }

func expectsContinue(r *http.Request) bool {
	return r.ProtoAtLeast(1, 1) && r.ContentLength != 0 && asciiEqualFold(r.Header.Get("Expect"), "100-continue")
}

func setReadDeadline(c net.Conn, d time.Duration) {
	if d <= 0 {
		c.SetReadDeadline(time.Time{})
		return
	}
	c.SetReadDeadline(time.Now().Add(d))
}

// deadlineWriter bounds every write to the client, so that a client that
// stops reading cannot hold the proxy's buffers and upstream connection.
type deadlineWriter struct {
	c net.Conn
	d time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	if w.d > 0 {
		w.c.SetWriteDeadline(time.Now().Add(w.d))
	}
	return w.c.Write(b)
}

func isNetClosed(err error) bool {
	var ne *net.OpError
	return errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

// respWriteExclude are the fields Response.Write writes from the response's
// own fields rather than from its Header.
var respWriteExclude = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeResponse writes resp, a response to req with a body of known length,
// to bw exactly as resp.Write would, without its per-response allocations
// (transfer writer, formatted status line). It reports false, having
// written nothing, for a response outside that common case; the caller
// then uses resp.Write.
func writeResponse(bw *bufio.Writer, req *http.Request, resp *http.Response) (bool, error) {
	if resp.ContentLength <= 0 || len(resp.TransferEncoding) > 0 || len(resp.Trailer) > 0 || req.Method == http.MethodHead ||
		resp.StatusCode < 200 || resp.StatusCode > 999 || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified ||
		resp.ProtoMajor < 0 || resp.ProtoMajor > 9 || resp.ProtoMinor < 0 || resp.ProtoMinor > 9 || resp.Body == nil ||
		resp.Close && len(resp.Header["Connection"]) > 0 {
		return false, nil
	}
	text := resp.Status
	var num [20]byte
	code := strconv.AppendInt(num[:0], int64(resp.StatusCode), 10)
	if text == "" {
		return false, nil
	}
	if len(text) > len(code) && text[len(code)] == ' ' && text[:len(code)] == string(code) {
		text = text[len(code)+1:]
	}
	bw.WriteString("HTTP/")
	bw.WriteByte('0' + byte(resp.ProtoMajor))
	bw.WriteByte('.')
	bw.WriteByte('0' + byte(resp.ProtoMinor))
	bw.WriteByte(' ')
	bw.Write(code)
	bw.WriteByte(' ')
	bw.WriteString(text)
	bw.WriteString("\r\n")
	if resp.Close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("Content-Length: ")
	bw.Write(strconv.AppendInt(num[:0], resp.ContentLength, 10))
	bw.WriteString("\r\n")
	if err := resp.Header.WriteSubset(bw, respWriteExclude); err != nil {
		return true, err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return true, err
	}
	n, err := io.Copy(bw, io.LimitReader(resp.Body, resp.ContentLength))
	if err != nil {
		return true, err
	}
	extra, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return true, err
	}
	if n+extra != resp.ContentLength {
		return true, fmt.Errorf("http: ContentLength=%d with Body length %d", resp.ContentLength, n+extra)
	}
	return true, resp.Body.Close()
}
