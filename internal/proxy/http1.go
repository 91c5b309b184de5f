package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/metrics"
	"github.com/meshctl/mesh/internal/proxy/telemetry"
	"github.com/meshctl/mesh/internal/proxy/upstream"
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
	isHEAD, isCONNECT bool
	// rec is the record of the request in flight, handed to the recorder
	// when it ends (one per connection, so that a request allocates none).
	rec telemetry.Record
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
	cut := func() {
		now := time.Now()
		s.client.SetDeadline(now)
		if uc := h.upstream.Load(); uc != nil {
			uc.SetDeadline(now)
		}
	}
	h.guard = newStoppedGuard(s.limits.StreamIdleTimeout.D(), s.limits.RequestTimeout.D(), cut)
	s.tracked.cut.Store(&cut)
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

func (h *h1conn) setReadDeadlineAt(t time.Time) {
	h.s.client.SetReadDeadline(t)
	h.deadline = true
}

// requestLineEnds reports whether the first line of b that is not empty
// ends within its first limit bytes.
func requestLineEnds(b []byte, limit int) bool {
	b = b[:min(len(b), limit)]
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return bytes.IndexByte(b[i:], '\n') >= 0
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
	// The first request after detection is due by the session's
	// headDeadline, which counts from the accept.
	headDeadline := time.Time{}
	if first {
		headDeadline = s.headDeadline
	}
	if len(h.in.buffered()) == 0 {
		if headDeadline.IsZero() {
			h.setReadDeadline(s.limits.IdleTimeout.D())
		} else {
			h.setReadDeadlineAt(headDeadline)
		}
		if err := h.in.fill(len(h.in.buf)); err != nil {
			s.tracked.idle.Store(false)
			return false
		}
	}
	s.tracked.idle.Store(false)
	h.rec = telemetry.Record{Kind: telemetry.Request, Conn: &s.info, Service: s.service, Series: s.series,
		Class: metrics.MethodOther, Start: time.Now()}
	var err error
	n := headEnd(h.in.buffered(), 0)
	switch {
	case n == 0:
		// The head did not come in one piece: bound the wait for the rest.
		if headDeadline.IsZero() {
			h.setReadDeadline(s.limits.HeaderReadTimeout.D())
		} else {
			h.setReadDeadlineAt(headDeadline)
		}
		n, err = h.in.head(s.limits.MaxHeaderBytes)
	case n > s.limits.MaxHeaderBytes:
		err = errHeadLimit
	}
	if err != nil {
		switch {
		case err == errHeadLimit && !requestLineEnds(h.in.buffered(), s.limits.MaxHeaderBytes):
			// The request line alone is over the limit: its target is.
			h.fail(http.StatusRequestURITooLong, metrics.ReasonHeaderLimit, "request target too long")
		case err == errHeadLimit:
			h.fail(http.StatusRequestHeaderFieldsTooLarge, metrics.ReasonHeaderLimit, "request header too large")
		case errors.Is(err, os.ErrDeadlineExceeded):
			h.fail(http.StatusRequestTimeout, metrics.ReasonTimeout, "request header timeout")
		default:
			// Not a request: the client left mid-head. Counted, not logged.
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
		h.fail(perr.status, reason, perr.msg)
		return false
	}
	req := &h.req
	h.rec.Class = methodClass(req.method)
	h.isHEAD, h.isCONNECT = req.isMethod(http.MethodHead), req.isMethod(http.MethodConnect)
	if s.p.recorder.Logging() {
		h.rec.Method, h.rec.Authority, h.rec.Path = string(req.method), string(req.host), string(req.target)
	}
	if h.isCONNECT && !s.p.cfg.Load().ConnectProxy(s.info.Direction == metrics.Inbound, s.dst.Port()) {
		return h.refuseConnect()
	}
	return h.forward()
}

// allowedMethods are the methods the proxy forwards to any destination:
// the Allow field of its 405 to a CONNECT.
const allowedMethods = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"

// refuseConnect answers 405 to a CONNECT for a destination that the
// configuration does not name as a CONNECT proxy (connectProxyPorts).
// Forwarding it would let the application's 2xx turn the connection into
// a raw tunnel while the application, which is no CONNECT proxy, goes on
// parsing HTTP: whatever the client sends next would reach it unchecked
// (request smuggling). The request never reaches the upstream. A CONNECT
// without content leaves the connection at a request boundary, so it
// stays open for the next request; one with content is closed.
func (h *h1conn) refuseConnect() bool {
	req := &h.req
	keep := !req.close && !h.s.p.draining.Load() && (req.body == bodyNone || req.body == bodyLength && req.length == 0)
	h.rec.Status, h.rec.Upstream = http.StatusMethodNotAllowed, ""
	h.record()
	conn := "close"
	switch {
	case keep && req.minor == 0:
		conn = "keep-alive"
	case keep:
		conn = ""
	}
	h.writeError(http.StatusMethodNotAllowed, "Allow: "+allowedMethods+"\r\n", "CONNECT is not forwarded here", conn)
	return keep
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

// forward routes the request with the table in force, sends it upstream
// and the response back; it reports whether the connection may carry
// another request.
func (h *h1conn) forward() bool {
	s := h.s
	r, err := s.route(meshapi.ProtocolHTTP1)
	defer func() { r.done() }()
	h.rec.Service, h.rec.Series = r.service, s.seriesOf(r.service)
	if err != nil {
		h.fail(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints")
		return false
	}
	h.responded = false
	h.guard.arm()
	defer h.guard.stop()

	streamed := h.prepareUpstreamHead(r.target.Addr)
	uc, err := h.exchange(r.target, streamed)
	for retries := 0; retries < maxUnprocessedRetries && h.unprocessed(r.target, streamed, err); retries++ {
		other, rerr := s.routeAround(meshapi.ProtocolHTTP1, r.ep)
		if rerr != nil {
			break
		}
		s.p.log.Debug("retrying an HTTP/1 request its endpoint did not process", "upstream", r.target.Addr, "next", other.target.Addr, "error", err)
		h.rec.Series.Retry()
		if uc != nil {
			h.upstream.Store(nil)
			uc.discard()
		}
		r.done()
		r = other
		uc, err = h.exchange(r.target, streamed)
	}
	if err != nil {
		code, reason := http.StatusBadGateway, metrics.ReasonUpstream
		switch {
		case h.guard.fired():
			code, reason = http.StatusGatewayTimeout, metrics.ReasonTimeout
		case streamed && h.body.readErr != nil && !errors.Is(h.body.readErr, os.ErrDeadlineExceeded):
			// The client's body was malformed (a bad chunk, say) or cut;
			// a deadline error is stopBody's own doing.
			code, reason = http.StatusBadRequest, metrics.ReasonBadRequest
		case upstream.IsDialError(err):
			reason = metrics.ReasonConnect
		}
		// The client gets a fixed text: the error names addresses of
		// the mesh that are none of its business. The detail is logged.
		s.p.log.Debug("forwarding HTTP/1 request", "upstream", r.target.Addr, "reason", reason.String(), "error", err)
		fields := ""
		if reason == metrics.ReasonConnect && s.info.PeerIdentity != "" {
			// The client is a mesh proxy: tell it the application never
			// saw the request, so that it may send it to another endpoint.
			fields = unprocessedHeader + ": connect\r\n"
		}
		h.failWith(code, reason, fields, failureText[reason])
		return false
	}
	h.rec.Upstream = r.target.Addr
	if resp := &h.resp; resp.status == http.StatusSwitchingProtocols || h.isCONNECT && resp.status/100 == 2 {
		return h.tunnel(uc, streamed)
	}
	keep := h.respond(uc, streamed)
	h.record()
	return keep && !h.guard.fired()
}

// prepareUpstreamHead writes the request's head as sent upstream into
// h.upstreamHead, with the body when it came whole with the head; it
// reports whether the body is streamed instead.
func (h *h1conn) prepareUpstreamHead(addr string) (streamed bool) {
	req := &h.req
	if h.s.info.Direction == metrics.Inbound {
		h.setClientIdentity()
	}
	h.upstreamHead = req.appendRequest(h.upstreamHead[:0], addr)
	switch req.body {
	case bodyLength:
		if b := h.in.buffered(); !req.expect && int64(len(b)) >= req.length {
			// The whole body came with the head: it goes in the same
			// write, and the request can be retried.
			h.upstreamHead = append(h.upstreamHead, b[:req.length]...)
			h.in.consume(int(req.length))
			h.rec.BytesReceived = req.length
			return false
		}
		return true
	case bodyChunked:
		return true
	}
	return false
}

// respond frames the response for the client and relays its body, then
// gives the upstream connection back to the pool or closes it. It fills
// the record and reports whether the client connection may carry another
// request.
func (h *h1conn) respond(uc *upstreamConn, streamed bool) bool {
	s, req, resp := h.s, &h.req, &h.resp
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
	sent := h.out.sent
	h.out.buf = resp.appendResponse(h.out.buf, dst, conn)
	h.rec.Status = resp.status
	upstreamClose := resp.close
	rr := relay{in: uc.in, out: h.out, guard: h.guard, maxTrailer: maxResponseHead}
	ok := rr.run(src, resp.length, dst == bodyChunked)
	h.rec.BytesSent = rr.n

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
		h.rec.BytesReceived = h.body.n
		if h.body.readErr != nil || h.body.writeErr != nil {
			ok, keep = false, false
		}
	}
	h.upstream.Store(nil)
	h.guard.stop()
	if !ok {
		switch {
		case h.guard.fired():
			h.rec.Fail(metrics.ReasonTimeout)
		case rr.readErr != nil:
			h.rec.Fail(metrics.ReasonUpstream)
		case rr.writeErr != nil:
			h.rec.Fail(metrics.ReasonClientReset)
		}
		keep = false
		if h.out.sent == sent && rr.writeErr == nil {
			// Nothing of the response reached the client (its framing
			// broke within the first buffer): the client gets the
			// proxy's error instead of a bare close, and the record says
			// so rather than the status that was never sent.
			h.out.buf = h.out.buf[:0]
			code := http.StatusBadGateway
			if h.rec.Reason == metrics.ReasonTimeout {
				code = http.StatusGatewayTimeout
			}
			h.rec.Status, h.rec.BytesSent = code, 0
			h.s.p.log.Debug("relaying HTTP/1 response", "upstream", h.rec.Upstream, "reason", h.rec.Reason.String(), "error", rr.readErr)
			h.writeError(code, "", failureText[h.rec.Reason], "close")
		}
	}
	if ok && !upstreamClose && src != bodyUntilClose && !h.guard.fired() {
		s.p.h1Pool.put(uc)
	} else {
		uc.discard()
	}
	return keep
}

// record hands the request's record to the recorder.
func (h *h1conn) record() {
	h.rec.Duration = time.Since(h.rec.Start)
	h.s.p.recorder.Record(&h.rec)
}

// exchange sends the request upstream over a pooled connection and reads
// the head of the final response into h.resp (1xx other than 101 are
// skipped: the proxy already told the client to continue). A request that
// fails on a reused connection before any byte of response is retried
// once on a new connection, when it can be: when its body is not streamed.
// The upstream may have closed the idle connection as the request went
// out.
func (h *h1conn) exchange(t upstream.Target, streamed bool) (*upstreamConn, error) {
	pool := h.s.p.h1Pool
	for attempt := 0; ; attempt++ {
		uc, reused, err := pool.get(context.Background(), t)
		if err != nil {
			return nil, err
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

// unprocessedHeader is the response field with which a server's proxy
// tells a client's proxy that the application never saw the request (it
// could not connect to it: the application is gone or not yet listening,
// as during a rollout), like HTTP/2's REFUSED_STREAM. The client's proxy
// then sends the request to another endpoint, at most
// maxUnprocessedRetries times, and never passes the field on.
const unprocessedHeader = "x-meshctl-unprocessed"

const maxUnprocessedRetries = 2

// unprocessed reports whether the last attempt's endpoint did not process
// the request, so that another endpoint may be sent it: the proxy could
// not connect to it (nothing was sent), or its proxy said so and the
// request can be sent again whole (its body was not streamed).
func (h *h1conn) unprocessed(t upstream.Target, streamed bool, err error) bool {
	if err != nil {
		return upstream.IsDialError(err) && !h.guard.fired()
	}
	return t.Meshed && h.resp.unprocessed && !streamed
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
func (h *h1conn) tunnel(uc *upstreamConn, streamed bool) bool {
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
	// No framing: after this head the bytes are the new protocol's.
	h.out.buf = h.resp.appendResponse(h.out.buf, bodyUntilClose, "")
	// Bytes the upstream sent after its head are already buffered.
	err := h.out.write(uc.in.buffered())
	if err == nil {
		err = h.out.flush()
	}
	// The tunnel's bytes are counted as the connection's; the request
	// ends with the response head.
	h.rec.Status, h.rec.Upstream, h.rec.BytesReceived = h.resp.status, "", 0
	h.record()
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

// fail answers the client with a short plain-text error and records it.
// The connection is closed after: its state is unknown.
// failureText is what a client reads when the exchange with the upstream
// failed, by reason.
var failureText = map[metrics.Reason]string{
	metrics.ReasonConnect:    "upstream unreachable",
	metrics.ReasonUpstream:   "upstream failed",
	metrics.ReasonTimeout:    "upstream timed out",
	metrics.ReasonBadRequest: "malformed request body",
}

func (h *h1conn) fail(code int, reason metrics.Reason, msg string) {
	h.failWith(code, reason, "", msg)
}

// failWith is fail with extra header lines (each ending in CRLF).
func (h *h1conn) failWith(code int, reason metrics.Reason, fields, msg string) {
	h.rec.Status, h.rec.Upstream, h.rec.BytesReceived, h.rec.BytesSent = code, "", 0, 0
	h.rec.Fail(reason)
	h.record()
	h.writeError(code, fields, msg, "close")
}

// writeError sends the proxy's own short plain-text answer: fields holds
// extra header lines (each ending in CRLF), conn the Connection field (""
// for none).
func (h *h1conn) writeError(code int, fields, msg, conn string) {
	text := http.StatusText(code)
	body := text + ": " + msg + "\n"
	h.wmu.Lock()
	defer h.wmu.Unlock()
	b := h.out.buf
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\n"...)
	b = append(b, fields...)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	if conn != "" {
		b = append(b, "Connection: "...)
		b = append(b, conn...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	h.out.buf = append(b, body...)
	h.out.flush()
}

func setReadDeadline(c net.Conn, d time.Duration) {
	if d <= 0 {
		c.SetReadDeadline(time.Time{})
		return
	}
	c.SetReadDeadline(time.Now().Add(d))
}

// setClientIdentity removes the client identity header from an inbound
// request, so that no client can forge it, and sets it to the verified
// SPIFFE id when the request came over mesh TLS.
func (h *h1conn) setClientIdentity() {
	name := h.s.p.cfg.Load().ClientIdentityHeader()
	if name == "" {
		return
	}
	for i := range h.req.fields {
		if asciiEqualFoldBytes(h.req.fields[i].name, name) {
			h.req.fields[i].drop = true
		}
	}
	if id := h.s.info.PeerIdentity; id != "" {
		h.req.fields = append(h.req.fields, h1field{name: []byte(name), value: []byte(id)})
	}
}
