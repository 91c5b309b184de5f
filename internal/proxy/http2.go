package proxy

import (
	"context"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/metrics"
	"github.com/meshctl/mesh/internal/proxy/telemetry"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// serveHTTP2 serves an h2c connection with the Go HTTP/2 server and
// forwards each stream with httputil.ReverseProxy over pooled, multiplexed
// h2c connections to the upstream. Trailers, streaming in both directions
// and cancellation (RST_STREAM both ways) are the standard library's.
func (s *session) serveHTTP2() {
	// The limit the server decodes header strings to (x/net adds 320
	// bytes to MaxHeaderBytes for its per-field overhead).
	maxString := uint32(s.p.h2Base.MaxHeaderBytes + 320)
	acct := &h2Account{Conn: s.client, series: s.series}
	in := newSettingsDedup(acct, maxString, func() { s.series.Error(metrics.ReasonBadRequest) })
	in.onTooLarge(acct.headerLimit)
	// A copy of the server for this connection, to hear its errors; the
	// copy shares the original's state, so a drain still reaches it.
	srv := *s.p.h2Server
	srv.CountError = acct.countError
	srv.ServeConn(in, &http2.ServeConnOpts{
		Context:    context.Background(),
		Handler:    &h2Handler{s: s},
		BaseConfig: s.p.h2Base,
	})
	acct.finish()
}

type h2Handler struct{ s *session }

// ServeHTTP forwards one stream, routed with the table in force when the
// stream began.
func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	sw := &statusWriter{ResponseWriter: w}
	rec := &sw.rec
	*rec = telemetry.Record{Kind: telemetry.Request, Conn: &s.info, Service: s.service, Series: s.series,
		Class: metrics.ClassOf(r.Method), Start: time.Now()}
	if s.p.recorder.Logging() {
		rec.Method, rec.Authority, rec.Path = r.Method, r.Host, r.URL.RequestURI()
	}
	defer func() {
		rec.Status, rec.BytesSent = sw.code, sw.n
		rec.Duration = time.Since(rec.Start)
		s.p.recorder.Record(rec)
	}()

	if !h.withinHeaderLimits(r) {
		rec.Fail(metrics.ReasonHeaderLimit)
		http.Error(sw, "request header fields too large", http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if r.Method == http.MethodConnect && !s.p.cfg.Load().ConnectProxy(s.info.Direction == metrics.Inbound, s.dst.Port()) {
		// As for HTTP/1 (refuseConnect): only a CONNECT proxy gets one.
		// A stream cannot smuggle into others, but an application that is
		// no CONNECT proxy has no business answering it either.
		rec.Fail(metrics.ReasonBadRequest)
		sw.Header().Set("Allow", allowedMethods)
		http.Error(sw, "CONNECT is not forwarded to this destination", http.StatusMethodNotAllowed)
		return
	}
	// The route lives in the stream's transport, which replaces it when
	// it sends the stream elsewhere (h2Retry); both live in sw, the
	// stream's one allocation.
	tr := &sw.transport
	tr.s, tr.rec = s, rec
	var err error
	tr.rt, err = s.route(meshapi.ProtocolHTTP2)
	rt := &tr.rt
	defer rt.done()
	rec.Service, rec.Series = rt.service, s.seriesOf(rt.service)
	if err != nil {
		rec.Fail(metrics.ReasonNoEndpoints)
		http.Error(sw, "no endpoints", http.StatusServiceUnavailable)
		return
	}
	rec.Upstream = rt.target.Addr
	ctx, cancel := context.WithCancel(context.WithValue(r.Context(), targetKey{}, rt.target))
	defer cancel()
	guard := newIdleGuard(s.limits.StreamIdleTimeout.D(), s.limits.RequestTimeout.D(), cancel)
	defer guard.stop()
	sw.guard = guard
	body := &h2Body{rc: r.Body, guard: guard}
	r = r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	addr := rt.target.Addr
	idHeader := ""
	if s.info.Direction == metrics.Inbound {
		idHeader = s.p.cfg.Load().ClientIdentityHeader()
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			pr.Out.Host = pr.In.Host
			if idHeader != "" {
				// Never forwarded as the client sent it: only mesh TLS
				// vouches for an identity.
				pr.Out.Header.Del(idHeader)
				if id := s.info.PeerIdentity; id != "" {
					pr.Out.Header.Set(idHeader, id)
				}
			}
		},
		Transport: tr,
		// A response of unknown length (every gRPC response) is flushed
		// as it comes; ReverseProxy decides that from ContentLength.
		ModifyResponse: keepTrailersOnly,
		BufferPool:     copyBufPool{},
		ErrorLog:       slogStd(s.p.log),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code, reason := http.StatusBadGateway, metrics.ReasonConnect
			switch {
			case guard.fired():
				code, reason = http.StatusGatewayTimeout, metrics.ReasonTimeout
			case r.Context().Err() != nil:
				code, reason = 499, metrics.ReasonClientReset
			}
			rec.Fail(reason)
			s.p.log.Debug("forwarding HTTP/2 request", "upstream", rt.target.Addr, "error", err)
			if upstream.IsDialError(err) && s.info.PeerIdentity != "" {
				// As HTTP/1 does: the client is a mesh proxy, and the
				// application never saw the stream.
				w.Header().Set(unprocessedHeader, "connect")
			}
			w.WriteHeader(code)
		},
	}
	rp.ServeHTTP(sw, r)
	rec.BytesReceived = body.n.Load()
}

// withinHeaderLimits checks the request's header fields against the
// limits, counted as HPACK would.
func (h *h2Handler) withinHeaderLimits(r *http.Request) bool {
	fields, size := 0, 0
	for k, vs := range r.Header {
		fields += len(vs)
		for _, v := range vs {
			size += len(k) + len(v) + 32 // the HPACK entry overhead
		}
	}
	return fields <= h.s.limits.MaxHeaderCount && size <= h.s.limits.MaxHeaderBytes
}

// keepTrailersOnly keeps a gRPC "trailers-only" response (RFC-less but
// specified by gRPC: one HEADERS frame with END_STREAM carrying
// grpc-status) in one frame. ReverseProxy flushes the headers of a response
// of unknown length at once, in a race with the end of the handler; a flush
// that wins sends HEADERS without END_STREAM, and the gRPC client then sees
// a stream that ended without trailers. A known length of zero turns that
// early flush off, and the server sends HEADERS with END_STREAM when the
// handler returns.
func keepTrailersOnly(res *http.Response) error {
	// Only a server's proxy says a stream was not processed, and only to
	// a client's proxy, which keeps the field to itself (h2Retry).
	res.Header.Del(unprocessedHeader)
	if res.ContentLength == -1 && res.Header.Get("Grpc-Status") != "" {
		res.ContentLength = 0
	}
	return nil
}

// statusWriter records the status and body bytes of a response, and
// holds the stream's record and transport (one allocation for all); Unwrap lets
// ReverseProxy reach Flush and the trailers of the real writer.
type statusWriter struct {
	http.ResponseWriter
	code      int
	n         int64
	guard     *idleGuard
	rec       telemetry.Record
	transport h2Retry
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	if w.guard != nil {
		w.guard.touch()
	}
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type h2Body struct {
	rc interface {
		Read([]byte) (int, error)
		Close() error
	}
	guard *idleGuard
	// The transport reads the body on its own goroutine, which may outlive
	// the handler.
	n atomic.Int64
}

func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	b.guard.touch()
	return n, err
}

func (b *h2Body) Close() error { return b.rc.Close() }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBufPool lends ReverseProxy its copy buffers.
type copyBufPool struct{}

func (copyBufPool) Get() []byte  { return *(copyBufs.Get().(*[]byte)) }
func (copyBufPool) Put(b []byte) { copyBufs.Put(&b) }
