package proxy

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/detect"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// session is what the proxy knows about one accepted connection.
type session struct {
	p        *Proxy
	dir      metrics.Direction
	snap     *config.Snapshot
	limits   config.Limits
	dst      netip.AddrPort
	target   *config.Target // nil: unknown outbound destination, or inbound
	service  string
	series   *metrics.Series
	client   net.Conn
	tracked  *trackedConn
	accepted time.Time
	proto    string
	sni      string
	// upstreamAddr is where an inbound or unknown outbound destination is
	// dialed, formatted once per connection (immutable afterwards).
	upstreamAddr string
}

// handle owns c until it is closed.
func (p *Proxy) handle(l *listener, raw net.Conn, snap *config.Snapshot) {
	s := &session{p: p, dir: l.dir, snap: snap, limits: snap.Config.Limits, accepted: time.Now()}
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
	switch l.dir {
	case metrics.Outbound:
		s.target = snap.Target(s.dst)
		s.service = metrics.Unknown
		if s.target != nil {
			s.service = s.target.Label
		}
	case metrics.Inbound:
		s.service = snap.Config.Workload.Name
	}
	if s.target == nil || l.dir == metrics.Inbound {
		// Formatted once here: HTTP/2 streams of the connection read it
		// concurrently.
		up := s.dst
		if l.dir == metrics.Inbound && snap.Config.Inbound.ForwardTo == config.ForwardLoopback {
			lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
			if up.Addr().Is6() {
				lo = netip.IPv6Loopback()
			}
			up = netip.AddrPortFrom(lo, up.Port())
		}
		s.upstreamAddr = up.String()
	}
	s.series = p.metrics.Series(l.dir, s.service)
	s.series.ConnOpened()
	defer func() { s.series.ConnClosed(cc.read.Load(), cc.written.Load()) }()

	if p.isLoop(s.dst) {
		s.series.Error(metrics.ReasonLoop)
		p.log.Warn("refusing connection to the proxy itself", "listener", l.name, "destination", s.dst.String())
		return
	}

	if s.opaque() {
		p.metrics.Detected(l.dir, metrics.DetectOpaque)
		s.proto = "opaque"
		s.forwardTCP(cc)
		return
	}
	if l.dir == metrics.Outbound && s.target == nil {
		// A destination no service names is passed through as plain TCP
		// to its original address: no detection (no delay for a protocol
		// in which the server speaks first) and no HTTP parsing (the
		// bytes reach the server as the client sent them).
		s.proto = "tcp"
		s.forwardTCP(cc)
		return
	}
	res, err := detect.Sniff(raw, s.limits.DetectTimeout.D())
	if err != nil {
		// The client left before saying anything.
		return
	}
	// Reads go through the sniffed bytes first, and are counted.
	cc.Conn = res.Conn
	s.sni = res.SNI
	switch {
	case res.TimedOut:
		p.metrics.Detected(l.dir, metrics.DetectTimeout)
	case res.Protocol == detect.HTTP1:
		p.metrics.Detected(l.dir, metrics.DetectHTTP1)
	case res.Protocol == detect.HTTP2:
		p.metrics.Detected(l.dir, metrics.DetectHTTP2)
	case res.Protocol == detect.TLS:
		p.metrics.Detected(l.dir, metrics.DetectTLS)
	default:
		p.metrics.Detected(l.dir, metrics.DetectTCP)
	}
	s.proto = res.Protocol.String()
	switch res.Protocol {
	case detect.HTTP1:
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
	p.log.Error("recovered from a panic serving a connection", "direction", s.dir.String(),
		"peer", s.client.RemoteAddr().String(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	series := s.series
	if series == nil {
		series = p.metrics.Series(s.dir, metrics.Unknown)
	}
	series.Error(metrics.ReasonInternal)
	return true
}

// opaque reports whether detection is skipped for this connection.
func (s *session) opaque() bool {
	if s.dir == metrics.Inbound {
		return s.snap.InboundOpaque(s.dst.Port())
	}
	if s.snap.OutboundOpaque(s.dst.Port()) {
		return true
	}
	return s.target != nil && s.target.Port.Protocol == config.ProtocolOpaque
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

// upstream chooses where this connection or request goes: an endpoint of
// the target, the original destination, or for inbound the application.
// When ep is not nil the caller holds one of its in-flight slots and must
// call ep.Active.Add(-1) when the request or connection ends.
func (s *session) upstream() (addr string, ep *config.EndpointState, err error) {
	if s.target == nil || s.dir == metrics.Inbound {
		return s.upstreamAddr, nil, nil
	}
	ep = pick(s.target.Endpoints, s.p.rand)
	if ep == nil {
		return "", nil, errNoEndpoints
	}
	ep.Active.Add(1)
	return ep.AddrString, ep, nil
}

// done releases what upstream took.
func done(ep *config.EndpointState) {
	if ep != nil {
		ep.Active.Add(-1)
	}
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

// CloseWrite half-closes the underlying TCP connection.
func (c *countingConn) CloseWrite() error {
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
