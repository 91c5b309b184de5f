package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// HTTP/1 is forwarded by the proxy's own code rather than net/http's
// server and transport: each request is parsed in place in the
// connection's read buffer (h1msg.go), its head re-written for the upstream
// into one buffer, and bodies relayed between fixed buffers (h1body.go).
// A request allocates nothing in the common case, where net/http allocated
// a Request, a Header map and its strings twice over. It also lets the
// proxy be strict where net/http is lenient (it drops Content-Length when
// Transfer-Encoding is also present, a classic smuggling vector) and count
// header fields.

// h1conn is the server side of one HTTP/1 client connection.
type h1conn struct {
	s   *session
	in  *h1in
	out *h1out
	// deadline: a read deadline is set on the client connection.
	deadline bool

	req, resp h1head
	// What forward needs of the request after its head's bytes are gone
	// (the body relay reuses the read buffer).
	class              metrics.MethodClass
	isHEAD, isCONNECT  bool
	logMethod, logHost string
	logPath            string
	// upstreamHead is the request as sent upstream: the head, and the body
	// when it came whole with the head. It is kept for a retry.
	upstreamHead []byte

	// wmu orders writes to out between the request loop and the request
	// body's relay sending "100 Continue"; responded (under wmu) stops the
	// latter once the response has begun.
	wmu       sync.Mutex
	responded bool

	// body relays a request body that did not come whole with its head,
	// on its own goroutine, while the response is awaited; bodyDone closes
	// when it ends.
	body     relay
	bodyDone chan struct{}

	// guard watches each request in turn; upstream is the connection the
	// request in flight uses, for the guard to cut.
	guard    *idleGuard
	upstream atomic.Pointer[upstreamConn]
}

func (s *session) serveHTTP1() {
	h := &h1conn{s: s, in: newH1In(s.client), out: newH1Out(s.client, s.limits.StreamIdleTimeout.D())}
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
		h.in.release()
		h.out.release()
	}()
	for first := true; h.serveOne(first); first = false {
		h.in.shrink()
		h.out.shrink()
		if cap(h.upstreamHead) > 2*h1BufSize {
			h.upstreamHead = nil
		}
	}
}

func (h *h1conn) setReadDeadline(d time.Duration) {
	setReadDeadline(h.s.client, d)
	h.deadline = d > 0
}

// clearReadDeadline lifts the header or idle deadline before the request
// body or a tunnel is read: their time is the guard's business.
func (h *h1conn) clearReadDeadline() {
	if h.deadline {
		h.setReadDeadline(0)
	}
}

// serveOne reads and forwards one request; it reports whether the
// connection may carry another. The first request of a connection is
// always served, even while draining: its client connected before the
// listener closed and has sent it already.
func (h *h1conn) serveOne(first bool) bool {
	s := h.s
	if !first {
		// Wait for the next request without holding anything but the
		// connection; the drain wakes idle connections through their
		// deadline.
		s.tracked.idle.Store(true)
		if s.p.draining.Load() {
			return false
		}
	}
	if len(h.in.buffered()) == 0 {
		h.setReadDeadline(s.limits.IdleTimeout.D())
		if err := h.in.fill(len(h.in.buf)); err != nil {
			s.tracked.idle.Store(false)
			return false
		}
	}
	s.tracked.idle.Store(false)
	start := time.Now()
	h.class, h.logMethod, h.logHost, h.logPath = metrics.MethodOther, "", "", ""
	var err error
	n := headEnd(h.in.buffered(), 0)
	switch {
	case n == 0:
		// The head did not come in one piece: bound the wait for the rest.
		h.setReadDeadline(s.limits.HeaderReadTimeout.D())
		n, err = h.in.head(s.limits.MaxHeaderBytes)
	case n > s.limits.MaxHeaderBytes:
		err = errHeadLimit
	}
	if err != nil {
		switch {
		case err == errHeadLimit:
			h.fail(start, http.StatusRequestHeaderFieldsTooLarge, metrics.ReasonHeaderLimit, "request header too large")
		case errors.Is(err, os.ErrDeadlineExceeded):
			h.fail(start, http.StatusRequestTimeout, metrics.ReasonTimeout, "request header timeout")
		default:
			s.series.Error(metrics.ReasonClientReset)
		}
		return false
	}
	head := h.in.buffered()[:n]
	perr := h.req.parseRequest(head, s.limits.MaxHeaderCount)
	h.in.consume(n) // the head's bytes stay in place until the next read
	if perr != nil {
		reason := metrics.ReasonBadRequest
		if perr.status == http.StatusRequestHeaderFieldsTooLarge {
			reason = metrics.ReasonHeaderLimit
		}
		h.fail(start, perr.status, reason, perr.msg)
		return false
	}
	req := &h.req
	h.class = methodClass(req.method)
	h.isHEAD, h.isCONNECT = req.isMethod(http.MethodHead), req.isMethod(http.MethodConnect)
	if s.p.accessLog != nil {
		h.logMethod, h.logHost, h.logPath = string(req.method), string(req.host), string(req.target)
	}
	return h.forward(start)
}

// methodClass is metrics.ClassOf for a method in bytes.
func methodClass(m []byte) metrics.MethodClass {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return metrics.MethodRead
	case "POST", "PUT", "PATCH", "DELETE":
		return metrics.MethodWrite
	}
	return metrics.MethodOther
}

// forward sends the request upstream and the response back; it reports
// whether the connection may carry another request.
func (h *h1conn) forward(start time.Time) bool {
	s := h.s
	req := &h.req
	addr, ep, err := s.upstream()
	defer done(ep)
	if err != nil {
		h.fail(start, http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints")
		return false
	}
	h.responded = false
	h.guard.arm()
	defer h.guard.stop()

	h.upstreamHead = req.appendRequest(h.upstreamHead[:0], addr)
	streamed := false
	var sent int64
	switch req.body {
	case bodyLength:
		if b := h.in.buffered(); !req.expect && int64(len(b)) >= req.length {
			// The whole body came with the head: it goes in the same
			// write, and the request can be retried.
			h.upstreamHead = append(h.upstreamHead, b[:req.length]...)
			h.in.consume(int(req.length))
			sent = req.length
		} else {
			streamed = true
		}
	case bodyChunked:
		streamed = true
	}
	uc, err := h.exchange(addr, streamed)
	if err != nil {
		code, reason := http.StatusBadGateway, metrics.ReasonUpstream
		var de *dialError
		switch {
		case h.guard.fired():
			code, reason = http.StatusGatewayTimeout, metrics.ReasonTimeout
		case streamed && h.body.readErr != nil && !errors.Is(h.body.readErr, os.ErrDeadlineExceeded):
			// The client's body was malformed (a bad chunk, say) or cut;
			// a deadline error is stopBody's own doing.
			code, reason = http.StatusBadRequest, metrics.ReasonBadRequest
		case errors.As(err, &de):
			reason = metrics.ReasonConnect
		}
		h.fail(start, code, reason, "upstream: "+err.Error())
		return false
	}
	resp := &h.resp
	if resp.status == http.StatusSwitchingProtocols || h.isCONNECT && resp.status/100 == 2 {
		return h.tunnel(uc, start, streamed)
	}

	// Frame the response for the client.
	src := resp.body
	if h.isHEAD || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified {
		src = bodyNone
	}
	keep := !req.close && !s.p.draining.Load()
	dst := src
	if src == bodyChunked || src == bodyUntilClose {
		if req.minor >= 1 {
			dst = bodyChunked
		} else {
			// An HTTP/1.0 client learns the end of the body from the close.
			dst, keep = bodyUntilClose, false
		}
	}
	conn := ""
	switch {
	case !keep:
		conn = "close"
	case req.minor == 0:
		conn = "keep-alive"
	}
	h.wmu.Lock()
	h.responded = true
	h.wmu.Unlock()
	h.out.buf = resp.appendResponse(h.out.buf, dst, conn)
	status, upstreamClose := resp.status, resp.close
	rr := relay{in: uc.in, out: h.out, guard: h.guard, maxTrailer: maxResponseHead}
	ok := rr.run(src, resp.length, dst == bodyChunked)

	if streamed {
		select {
		case <-h.bodyDone:
		default:
			// The upstream answered without reading the whole request
			// body: what is left of it cannot be told apart from the next
			// request, so the connection ends here.
			h.stopBody(uc)
			keep = false
		}
		sent = h.body.n
		if h.body.readErr != nil || h.body.writeErr != nil {
			ok, keep = false, false
		}
	}
	h.upstream.Store(nil)
	h.guard.stop()
	reason := ""
	if !ok {
		switch {
		case h.guard.fired():
			s.series.Error(metrics.ReasonTimeout)
			reason = "timeout"
		case rr.readErr != nil:
			s.series.Error(metrics.ReasonUpstream)
			reason = "upstream"
		case rr.writeErr != nil:
			s.series.Error(metrics.ReasonClientReset)
			reason = "client_reset"
		}
		keep = false
	}
	if ok && !upstreamClose && src != bodyUntilClose && !h.guard.fired() {
		s.p.h1Pool.put(uc)
	} else {
		uc.discard()
	}
	d := time.Since(start)
	s.series.Request(status, h.class, d, sent, rr.n)
	h.log(status, d, sent, rr.n, addr, reason)
	return keep && !h.guard.fired()
}

// exchange sends the request upstream over a pooled connection and reads
// the head of the final response into h.resp (1xx other than 101 are
// skipped: the proxy already told the client to continue). A request that
// fails on a reused connection before any byte of response is retried
// once on a new connection, when it can be: when its body is not streamed.
// The upstream may have closed the idle connection as the request went
// out.
func (h *h1conn) exchange(addr string, streamed bool) (*upstreamConn, error) {
	pool := h.s.p.h1Pool
	for attempt := 0; ; attempt++ {
		uc, reused, err := pool.get(context.Background(), addr)
		if err != nil {
			return nil, &dialError{err}
		}
		h.upstream.Store(uc)
		h.bodyDone = nil
		mark := uc.in.n
		err = uc.out.writeNow(h.upstreamHead)
		if err == nil && streamed {
			h.startBody(uc)
		}
		if err == nil {
			err = h.readResponseHead(uc)
		}
		if err == nil {
			return uc, nil
		}
		if h.bodyDone != nil {
			h.stopBody(uc)
		}
		silent := uc.in.n == mark
		h.upstream.Store(nil)
		uc.discard()
		if !reused || streamed || attempt > 0 || !silent || h.guard.fired() {
			return nil, err
		}
	}
}

var (
	errBadResponse = errors.New("malformed response")
	errInternal    = errors.New("internal error")
)

func (h *h1conn) readResponseHead(uc *upstreamConn) error {
	for {
		n, err := uc.in.head(maxResponseHead)
		if err != nil {
			return err
		}
		ok := h.resp.parseResponse(uc.in.buffered()[:n])
		uc.in.consume(n)
		if !ok {
			return errBadResponse
		}
		switch {
		case h.resp.status == http.StatusSwitchingProtocols:
			if h.req.upgrade == nil || h.resp.upgrade == nil {
				return errBadResponse
			}
			return nil
		case h.resp.status < 200:
			continue
		}
		return nil
	}
}

// startBody relays the request body upstream on its own goroutine, so
// that an upstream that answers before reading it all (413, 401) is heard
// and a streamed upload does not wait for its own end.
func (h *h1conn) startBody(uc *upstreamConn) {
	h.clearReadDeadline()
	h.body = relay{in: h.in, out: uc.out, guard: h.guard, maxTrailer: h.s.limits.MaxHeaderBytes}
	h.bodyDone = make(chan struct{})
	kind, length, expect := h.req.body, h.req.length, h.req.expect
	go func() {
		defer close(h.bodyDone)
		defer func() {
			if h.s.p.containPanic(h.s, recover()) {
				h.body.readErr = errInternal
				uc.Close()
			}
		}()
		if expect && len(h.in.buffered()) == 0 {
			h.wmu.Lock()
			if !h.responded {
				h.out.write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
				h.out.flush()
			}
			h.wmu.Unlock()
		}
		if !h.body.run(kind, length, true) {
			uc.Close() // unblocks the response read
		}
	}()
}

// stopBody ends the request body's relay, wherever it waits, and waits
// for it to end. The client connection cannot carry another request after.
func (h *h1conn) stopBody(uc *upstreamConn) {
	h.s.client.SetReadDeadline(time.Now())
	uc.Close()
	<-h.bodyDone
}

// tunnel completes an Upgrade (WebSocket and others) or a CONNECT: it sends
// the response head and then copies bytes both ways as a TCP connection
// is (half-close, tcpIdleTimeout) until both sides close.
func (h *h1conn) tunnel(uc *upstreamConn, start time.Time, streamed bool) bool {
	s := h.s
	h.guard.stop()
	if streamed {
		<-h.bodyDone
	}
	h.upstream.Store(nil)
	defer uc.discard()
	h.wmu.Lock()
	h.responded = true
	h.wmu.Unlock()
	status := h.resp.status
	// No framing: after this head the bytes are the new protocol's.
	h.out.buf = h.resp.appendResponse(h.out.buf, bodyUntilClose, "")
	// Bytes the upstream sent after its head are already buffered.
	err := h.out.write(uc.in.buffered())
	if err == nil {
		err = h.out.flush()
	}
	d := time.Since(start)
	s.series.Request(status, h.class, d, 0, 0)
	h.log(status, d, 0, 0, "", "")
	if err != nil {
		return false
	}
	// And the client's after its request: those read from the connection,
	// then those detection still holds.
	cc := s.client.(*countingConn)
	if b := h.in.buffered(); len(b) > 0 {
		if _, err := uc.Write(b); err != nil {
			return false
		}
	}
	if _, err := sendPeeked(cc, uc.Conn); err != nil {
		return false
	}
	toServer, toClient, _ := join(rawConn(cc), uc.Conn, s.limits.TCPIdleTimeout.D())
	cc.read.Add(toServer)
	cc.written.Add(toClient)
	return false
}

// fail answers the client with a short plain-text error and counts it. The
// connection is closed after: its state is unknown.
func (h *h1conn) fail(start time.Time, code int, reason metrics.Reason, msg string) {
	s := h.s
	s.series.Error(reason)
	d := time.Since(start)
	s.series.Request(code, h.class, d, 0, 0)
	h.log(code, d, 0, 0, "", reason.String())
	text := http.StatusText(code)
	body := text + ": " + msg + "\n"
	h.wmu.Lock()
	defer h.wmu.Unlock()
	b := h.out.buf
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nConnection: close\r\n\r\n"...)
	h.out.buf = append(b, body...)
	h.out.flush()
}

// log writes the access log line of the request in flight, if the access
// log is on.
func (h *h1conn) log(code int, d time.Duration, in, out int64, upstream, reason string) {
	if h.logMethod == "" {
		return // no request was parsed
	}
	h.s.logRequest(h.logMethod, h.logHost, h.logPath, code, d, in, out, upstream, reason)
}

func setReadDeadline(c net.Conn, d time.Duration) {
	if d <= 0 {
		c.SetReadDeadline(time.Time{})
		return
	}
	c.SetReadDeadline(time.Now().Add(d))
}
