package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/detect"
	"github.com/meshctl/mesh/internal/proxy/identity"
	"github.com/meshctl/mesh/internal/proxy/metrics"
	"github.com/meshctl/mesh/internal/proxy/telemetry"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// session is what the proxy knows about one accepted connection. What
// belongs to the listener (its limits, where inbound connections go) is
// read once when the connection is accepted; where each request goes is
// not: route reads the table in force every time.
type session struct {
	p        *Proxy
	limits   config.Limits
	info     telemetry.Conn
	dst      netip.AddrPort
	client   net.Conn
	tracked  *trackedConn
	accepted time.Time
	// service labels the connection's own counters (connections, bytes):
	// the destination service when the connection was accepted.
	service string
	series  *metrics.Series
	// passthrough: an inbound connection, or an outbound one to a
	// destination no service named when it was accepted; it goes to
	// upstreamAddr, formatted once (HTTP/2 streams read it concurrently).
	passthrough  bool
	upstreamAddr string
	// headDeadline, when set, is when the head of the connection's first
	// HTTP/1 request must have arrived.
	headDeadline time.Time
}

// handle owns c until it is closed.
func (p *Proxy) handle(l *listener, raw net.Conn, limits config.Limits) {
	s := &session{p: p, limits: limits, accepted: time.Now()}
	s.info.Direction = l.dir
	s.info.Client = raw.RemoteAddr()
	cc := &countingConn{Conn: raw}
	s.client = cc
	s.tracked = p.track(raw)
	defer p.untrack(s.tracked)
	defer raw.Close()
	defer func() { p.containPanic(s, recover()) }()

	dst, err := p.origDst(raw)
	if err != nil {
		s.series = p.metrics.Series(l.dir, metrics.Unknown)
		s.series.ConnOpened()
		s.series.Error(metrics.ReasonNoOriginalDst)
		p.log.Debug("dropping connection", "listener", l.name, "peer", raw.RemoteAddr().String(), "error", err)
		s.series.ConnClosed(0, 0)
		return
	}
	s.dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	s.info.Destination = s.dst
	table := p.cfg.Load()
	if l.dir == metrics.Outbound && table.Target(s.dst) == nil && p.opts.Resolve != nil && !p.isLoop(s.dst) {
		table = p.resolve(s.dst)
	}
	target := s.classify(table)
	s.series = p.metrics.Series(l.dir, s.service)
	s.series.ConnOpened()
	defer func() { s.series.ConnClosed(cc.read.Load(), cc.written.Load()) }()

	if p.isLoop(s.dst) {
		s.series.Error(metrics.ReasonLoop)
		p.log.Warn("refusing connection to the proxy itself", "listener", l.name, "destination", s.dst.String())
		return
	}

	if l.dir == metrics.Inbound && p.opts.ServerTLS != nil {
		s.dispatchInbound(cc, table)
		return
	}
	s.dispatch(cc, s.opaque(table, target), target == nil)
}

// dispatchInbound serves a connection of the inbound listener when the
// proxy has a mesh identity. Every connection is sniffed, opaque ports too,
// since a peer proxy speaks first with its TLS client hello whatever the
// application protocol: mesh TLS is terminated and served by the protocol
// its ALPN names, without detection. Anything else is plaintext (or the
// client's own TLS), which a strict port refuses and a permissive one
// serves as before. On an opaque port, a plaintext client of a protocol in
// which the server speaks first waits limits.detectTimeout before its
// bytes flow.
func (s *session) dispatchInbound(cc *countingConn, table *config.Table) {
	p := s.p
	res, err := detect.Sniff(cc.Conn, s.limits.DetectTimeout.D())
	if err != nil {
		return
	}
	cc.Conn = res.Conn
	if res.Protocol == detect.TLS && meshALPN(res.ALPN) {
		s.serveMeshTLS(cc)
		return
	}
	if table.InboundMTLS(s.dst.Port()) == meshapi.MTLSStrict {
		s.series.Error(metrics.ReasonMTLSRequired)
		p.log.Debug("refusing plaintext on a port that requires mesh TLS", "peer", s.info.Client.String(), "port", s.dst.Port())
		return
	}
	if table.InboundOpaque(s.dst.Port()) {
		p.metrics.Detected(metrics.Inbound, metrics.DetectOpaque)
		s.info.Protocol = "opaque"
		s.forwardTCP(cc)
		return
	}
	s.serveDetected(cc, res)
}

// meshALPN reports whether a client offered one of the mesh's protocols,
// which only a peer proxy does.
func meshALPN(protos []string) bool {
	return slices.ContainsFunc(protos, func(p string) bool { return slices.Contains(identity.MeshALPN, p) })
}

// serveMeshTLS terminates mesh TLS from a peer proxy, records the peer's
// verified identity, and serves the application protocol that the peer
// named in ALPN. The handshake is bounded by limits.detectTimeout, like
// the wait for the first bytes of any connection.
func (s *session) serveMeshTLS(cc *countingConn) {
	p := s.p
	tc := tls.Server(cc.Conn, p.opts.ServerTLS())
	tc.SetDeadline(time.Now().Add(s.limits.DetectTimeout.D()))
	if err := tc.Handshake(); err != nil {
		s.series.Error(metrics.ReasonHandshake)
		p.log.Debug("mesh TLS handshake", "peer", s.info.Client.String(), "error", err)
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	s.info.PeerIdentity = identity.PeerIdentity(st)
	p.metrics.MeshTLS(metrics.Inbound, s.info.PeerIdentity)
	cc.Conn = tc
	switch st.NegotiatedProtocol {
	case meshapi.ALPNHTTP2:
		p.metrics.Detected(metrics.Inbound, metrics.DetectHTTP2)
		s.info.Protocol = "h2"
		s.serveHTTP2()
	case meshapi.ALPNHTTP1:
		p.metrics.Detected(metrics.Inbound, metrics.DetectHTTP1)
		s.info.Protocol = "http1"
		s.serveHTTP1()
	default:
		p.metrics.Detected(metrics.Inbound, metrics.DetectOpaque)
		s.info.Protocol = "opaque"
		s.forwardTCP(cc)
	}
}

// resolve asks the controller about an outbound destination the table does
// not name, and returns the table in force after its answer.
func (p *Proxy) resolve(dst netip.AddrPort) *config.Table {
	ctx, cancel := context.WithTimeout(context.Background(), ResolveTimeout)
	defer cancel()
	if _, err := p.opts.Resolve(ctx, dst); err != nil {
		p.log.Debug("resolving an unknown destination", "destination", dst.String(), "error", err)
	}
	return p.cfg.Load()
}

// classify labels the connection with the table in force when it was
// accepted and decides whether it is a passthrough (inbound, or to a
// destination no service names). It returns the destination's service
// port, or nil.
func (s *session) classify(table *config.Table) *config.Target {
	var target *config.Target
	switch s.info.Direction {
	case metrics.Outbound:
		target = table.Target(s.dst)
		s.service = metrics.Unknown
		if target != nil {
			s.service = target.Label
		}
	case metrics.Inbound:
		s.service = table.Config.Workload.Name
	}
	if target == nil || s.info.Direction == metrics.Inbound {
		s.passthrough = true
		up := s.dst
		if s.info.Direction == metrics.Inbound && table.Config.Inbound.ForwardTo == config.ForwardLoopback {
			lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
			if up.Addr().Is6() {
				lo = netip.IPv6Loopback()
			}
			up = netip.AddrPortFrom(lo, up.Port())
		}
		s.upstreamAddr = up.String()
	}
	return target
}

// dispatch chooses the forwarder: TCP for opaque ports and unknown
// outbound destinations, otherwise what detection finds.
func (s *session) dispatch(cc *countingConn, opaque, unknown bool) {
	p, dir := s.p, s.info.Direction
	if opaque {
		p.metrics.Detected(dir, metrics.DetectOpaque)
		s.info.Protocol = "opaque"
		s.forwardTCP(cc)
		return
	}
	if dir == metrics.Outbound && unknown {
		// A destination no service names is passed through as plain TCP
		// to its original address: no detection (no delay for a protocol
		// in which the server speaks first) and no HTTP parsing (the
		// bytes reach the server as the client sent them).
		s.info.Protocol = "tcp"
		s.forwardTCP(cc)
		return
	}
	res, err := detect.Sniff(cc.Conn, s.limits.DetectTimeout.D())
	if err != nil {
		// The client left before saying anything.
		return
	}
	// Reads go through the sniffed bytes first, and are counted.
	cc.Conn = res.Conn
	s.serveDetected(cc, res)
}

// serveDetected serves a connection by the protocol detection found.
func (s *session) serveDetected(cc *countingConn, res detect.Result) {
	p, dir := s.p, s.info.Direction
	s.info.SNI = res.SNI
	switch {
	case res.TimedOut && res.Protocol == detect.TCP:
		p.metrics.Detected(dir, metrics.DetectTimeout)
	case res.Protocol == detect.HTTP1:
		p.metrics.Detected(dir, metrics.DetectHTTP1)
	case res.Protocol == detect.HTTP2:
		p.metrics.Detected(dir, metrics.DetectHTTP2)
	case res.Protocol == detect.TLS:
		p.metrics.Detected(dir, metrics.DetectTLS)
	default:
		p.metrics.Detected(dir, metrics.DetectTCP)
	}
	s.info.Protocol = res.Protocol.String()
	switch res.Protocol {
	case detect.HTTP1:
		// The first request's head is due headerReadTimeout after the
		// accept: the time detection took counts, so that a request line
		// trickled byte by byte is cut then.
		if d := s.limits.HeaderReadTimeout.D(); d > 0 {
			s.headDeadline = s.accepted.Add(d)
		}
		s.serveHTTP1()
	case detect.HTTP2:
		s.serveHTTP2()
	default:
		s.forwardTCP(cc)
	}
}

// containPanic ends a connection whose handling panicked (v is what
// recover returned) instead of the whole proxy, as net/http's server does:
// a bug that one request can trigger must not take down every connection
// of the pod. It is logged with its stack and counted as the reason
// "internal". It reports whether there was a panic.
func (p *Proxy) containPanic(s *session, v any) bool {
	if v == nil {
		return false
	}
	p.log.Error("recovered from a panic serving a connection", "direction", s.info.Direction.String(),
		"peer", s.client.RemoteAddr().String(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	series := s.series
	if series == nil {
		series = p.metrics.Series(s.info.Direction, metrics.Unknown)
	}
	series.Error(metrics.ReasonInternal)
	return true
}

// opaque reports whether detection is skipped for this connection.
func (s *session) opaque(table *config.Table, target *config.Target) bool {
	if s.info.Direction == metrics.Inbound {
		return table.InboundOpaque(s.dst.Port())
	}
	if table.OutboundOpaque(s.dst.Port()) {
		return true
	}
	return target != nil && target.Opaque()
}

// isLoop reports whether dst is one of the proxy's own listeners, which a
// connection reaches when it was not redirected (or redirected twice):
// forwarding it would connect the proxy to itself without end.
func (p *Proxy) isLoop(dst netip.AddrPort) bool {
	if !p.listenPort[dst.Port()] {
		return false
	}
	a := dst.Addr()
	return a.IsLoopback() || a.IsUnspecified() || p.localAddrs[a]
}

// route is where one request, stream or TCP connection goes.
type route struct {
	// service labels the request: the destination service, the
	// workload's name inbound, or metrics.Unknown.
	service string
	target  upstream.Target
	// ep is the balanced endpoint, nil for a passthrough; the route holds
	// one of its in-flight slots until done.
	ep *upstream.Endpoint
}

// done releases what route took.
func (r *route) done() {
	if r.ep != nil {
		r.ep.Release()
	}
}

// route chooses where a request (or TCP connection) carrying proto goes,
// with the table in force now: an endpoint of the destination's service,
// or for a passthrough the original destination (inbound: the
// application). It is called for every request, so that a push reaches
// open connections at their next request.
func (s *session) route(proto meshapi.Protocol) (route, error) {
	if s.passthrough {
		svc := s.service
		if s.info.Direction == metrics.Inbound {
			svc = s.p.cfg.Load().Config.Workload.Name
		}
		return route{service: svc, target: upstream.Target{Addr: s.upstreamAddr, Protocol: proto}}, nil
	}
	tg := s.p.cfg.Load().Target(s.dst)
	if tg == nil {
		// The service is gone since the connection was accepted.
		return route{service: metrics.Unknown}, errNoEndpoints
	}
	return s.pick(tg.Label, tg.Endpoints, proto)
}

// routeAround routes a request again that the endpoint failed did not
// process, to any endpoint but that one, with the table in force.
func (s *session) routeAround(proto meshapi.Protocol, failed *upstream.Endpoint) (route, error) {
	if s.passthrough || failed == nil {
		return route{}, errNoEndpoints
	}
	tg := s.p.cfg.Load().Target(s.dst)
	if tg == nil {
		return route{}, errNoEndpoints
	}
	others := make([]upstream.Weighted, 0, len(tg.Endpoints))
	for _, w := range tg.Endpoints {
		if w.Endpoint != failed {
			others = append(others, w)
		}
	}
	return s.pick(tg.Label, others, proto)
}

// pick balances over eps and takes an in-flight slot of the chosen one.
func (s *session) pick(service string, eps []upstream.Weighted, proto meshapi.Protocol) (route, error) {
	w := s.p.balancer.Pick(eps)
	if w == nil {
		return route{service: service}, errNoEndpoints
	}
	w.Acquire()
	return route{
		service: service,
		target:  upstream.Target{Addr: w.Address(), Identity: w.Key().Identity, Meshed: w.Meshed, Protocol: proto},
		ep:      w.Endpoint,
	}, nil
}

// seriesOf returns the series of service, from the connection's own when
// the label is the same (the common case: no lookup per request).
func (s *session) seriesOf(service string) *metrics.Series {
	if service == s.service {
		return s.series
	}
	return s.p.metrics.Series(s.info.Direction, service)
}

var errNoEndpoints = errors.New("service has no endpoints")

// countingConn counts the bytes a connection carries each way, for the TCP
// byte counters of every connection whatever its protocol.
type countingConn struct {
	net.Conn
	read    atomic.Int64
	written atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// CloseWrite half-closes the connection: a mesh TLS connection sends its
// close_notify, a TCP connection shuts its write half.
func (c *countingConn) CloseWrite() error {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.CloseWrite()
	}
	if cw, ok := tcpConn(c.Conn); ok {
		return cw.CloseWrite()
	}
	return nil
}

// tcpConn finds the *net.TCPConn under the wrappers.
func tcpConn(c net.Conn) (*net.TCPConn, bool) {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v, true
		case *countingConn:
			c = v.Conn
		case *detectConn:
			c = v.Conn
		default:
			return nil, false
		}
	}
}

type detectConn = detect.Conn

// slogStd adapts the structured logger for the net/http error log.
func slogStd(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}
