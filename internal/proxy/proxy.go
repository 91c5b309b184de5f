// Package proxy is the data plane: the inbound and outbound listeners, the
// protocol detection that chooses how a connection is forwarded, HTTP/1,
// HTTP/2 and TCP forwarding, and the drain that ends it all gracefully.
//
// Every HTTP/1 request, HTTP/2 stream and new TCP connection is routed
// with the routing table in force at that moment (one atomic load), so a
// reload or a push reaches connections already open at their next
// request; a request already in flight finishes where it started. Only
// the listener's limits are read once per connection.
//
// The forwarders are orchestration: the table comes from package config,
// endpoint state, balancing and dialing from upstream, and every request
// ends as one record handed to telemetry.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/metrics"
	"github.com/meshctl/mesh/internal/proxy/telemetry"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// Options are the proxy's dependencies. Config and Metrics are required;
// everything else has a default.
type Options struct {
	// Config holds the routing table in force; it must hold one before
	// Start.
	Config *config.Store
	// Metrics receives the counts.
	Metrics *metrics.Registry
	// Log receives the proxy's own events. Default: discard.
	Log *slog.Logger
	// AccessLog, when set, receives one JSON line per request and per TCP
	// connection.
	AccessLog io.Writer
	// OriginalDst finds where a redirected connection was going. Default:
	// SocketOriginalDst. Tests inject their own to drive the listeners
	// without iptables.
	OriginalDst OriginalDstFunc
	// Dial opens upstream TCP connections, under the connect timeout and
	// mesh TLS of upstream.Dialer. Default: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ClientTLS, when set, makes connections to meshed endpoints mesh TLS
	// (see upstream.Options.ClientTLS): it returns the configuration for
	// a server that must present identity, with the ALPN protocol alpn.
	ClientTLS func(identity, alpn string) *tls.Config
	// ServerTLS, when set, terminates mesh TLS on the inbound listener: a
	// TLS client that offers one of the mesh's ALPN protocols
	// (meshapi.ALPN*) gets this configuration, which must require and
	// verify a client certificate. Other TLS passes through to the
	// application untouched. Nil: no inbound TLS is terminated.
	ServerTLS func() *tls.Config
	// Resolve, when set, is asked about an outbound destination that no
	// service of the table names, before the connection is passed
	// through: it returns the service that owns the address once the
	// table holds it ("" for none). It is given ResolveTimeout.
	Resolve func(ctx context.Context, addr netip.AddrPort) (string, error)
	// Rand returns a uniform integer in [0, n) for the balancer. Default:
	// math/rand/v2.
	Rand func(n int) int
	// DrainDelay is how long the listeners keep accepting after a drain
	// begins, so that peers notice /ready turning 503 before connections
	// are refused.
	DrainDelay time.Duration
	// DrainTimeout bounds how long in-flight requests and connections may
	// take to finish after the listeners close; then they are cut.
	DrainTimeout time.Duration
}

// ResolveTimeout bounds Options.Resolve: the first connection to a
// service the proxy does not hold yet waits at most this long for the
// controller's answer, and is passed through as an unknown destination
// when none comes.
const ResolveTimeout = time.Second

// Proxy is the sidecar's data plane.
type Proxy struct {
	cfg      *config.Store
	metrics  *metrics.Registry
	log      *slog.Logger
	recorder *telemetry.Recorder
	origDst  OriginalDstFunc
	dialer   *upstream.Dialer
	balancer upstream.P2C
	opts     Options

	h1Pool      *h1Pool
	h2Transport *h2Transports
	h2Server    *http2.Server
	// h2Base carries the HTTP/2 server's settings and, through its
	// Shutdown, sends GOAWAY on every HTTP/2 connection when draining.
	h2Base *http.Server

	listeners  []*listener
	listenPort map[uint16]bool
	// fds shares RLIMIT_NOFILE out, as it was when the proxy was made.
	fds        fdPlan
	localAddrs map[netip.Addr]bool

	conns    sync.WaitGroup
	tracked  sync.Map // *trackedConn -> struct{}
	draining atomic.Bool
	drainCh  chan struct{}
	drainOne sync.Once
	abortCh  chan struct{}
	abortOne sync.Once
	stopped  chan struct{} // closed when Serve returns
}

// New builds a proxy. It binds nothing until Start.
func New(o Options) (*Proxy, error) {
	if o.Config == nil || o.Config.Load() == nil {
		return nil, errors.New("creating proxy: no configuration loaded")
	}
	if o.Metrics == nil {
		return nil, errors.New("creating proxy: no metrics registry")
	}
	p := &Proxy{
		cfg:      o.Config,
		metrics:  o.Metrics,
		log:      o.Log,
		origDst:  o.OriginalDst,
		balancer: upstream.P2C{Rand: o.Rand},
		opts:     o,
		drainCh:  make(chan struct{}),
		abortCh:  make(chan struct{}),
		stopped:  make(chan struct{}),
		recorder: telemetry.NewRecorder(o.Metrics, o.AccessLog),
		fds:      planFDs(softNofile()),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.origDst == nil {
		p.origDst = SocketOriginalDst
	}
	limits := o.Config.Load().Config.Limits
	if p.balancer.Rand == nil {
		p.balancer.Rand = rand.IntN
	}
	p.dialer = upstream.NewDialer(upstream.Options{
		Dial:           o.Dial,
		ConnectTimeout: func() time.Duration { return p.cfg.Load().Config.Limits.ConnectTimeout.D() },
		ClientTLS:      o.ClientTLS,
	})
	p.h1Pool = newH1Pool(p.dialer.Dial, limits.MaxIdleConnsPerEndpoint, 90*time.Second)
	p.h2Transport = newH2Transports(p.dialer)
	p.h2Base = &http.Server{
		MaxHeaderBytes: limits.MaxHeaderBytes,
		IdleTimeout:    limits.IdleTimeout.D(),
		ErrorLog:       slogStd(p.log),
	}
	p.h2Server = &http2.Server{
		MaxConcurrentStreams: uint32(limits.MaxConcurrentStreams),
		IdleTimeout:          limits.IdleTimeout.D(),
		// The protocol's default (16 KiB): a larger frame buys a forwarding
		// proxy nothing and costs a larger read buffer per connection.
		MaxReadFrameSize: 16 << 10,
		// What a client may send ahead of the upstream reading it:
		// Envoy's settings for untrusted peers. A request body the
		// upstream does not read holds 64 KiB of the proxy, and of the
		// client's connection window, so that one stalled upload does not
		// stop the others on its connection; a connection holds at most
		// 1 MiB.
		MaxUploadBufferPerStream:     64 << 10,
		MaxUploadBufferPerConnection: 1 << 20,
	}
	if err := http2.ConfigureServer(p.h2Base, p.h2Server); err != nil {
		return nil, fmt.Errorf("configuring HTTP/2: %w", err)
	}
	return p, nil
}

// Start binds the inbound and outbound listeners of the table in force
// and starts accepting. Listener addresses are read once: changing them
// takes a restart.
func (p *Proxy) Start(ctx context.Context) error {
	c := p.cfg.Load().Config
	var err error
	p.localAddrs, err = localAddrs()
	if err != nil {
		return fmt.Errorf("starting proxy: %w", err)
	}
	p.listenPort = map[uint16]bool{}
	for _, spec := range []struct {
		name, addr string
		dir        metrics.Direction
	}{
		{"outbound", c.Outbound.Address, metrics.Outbound},
		{"inbound", c.Inbound.Address, metrics.Inbound},
	} {
		ln, err := Listen(ctx, spec.addr)
		if err != nil {
			for _, l := range p.listeners {
				l.ln.Close()
			}
			return fmt.Errorf("binding %s listener: %w", spec.name, err)
		}
		l := newListener(spec.name, spec.dir, ln)
		p.listeners = append(p.listeners, l)
		p.listenPort[l.port] = true
	}
	for _, l := range p.listeners {
		go p.acceptLoop(l)
	}
	go p.reapIdle()
	p.log.Info("proxy started", "outbound", p.listeners[0].ln.Addr().String(), "inbound", p.listeners[1].ln.Addr().String(), "config_version", c.Version)
	p.log.Info("file descriptors", "rlimit_nofile", p.fds.Limit, "listener_budget", p.fdBudget(c.Limits.FDBudget), "splice_pipes", p.fds.Pipes, "reserve", p.fds.Reserve)
	return nil
}

// reapIdle closes idle upstream HTTP/1 connections past their time, until
// the proxy ends.
func (p *Proxy) reapIdle() {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.h1Pool.reap(now)
		case <-p.stopped:
			return
		}
	}
}

func localAddrs() (map[netip.Addr]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	m := map[netip.Addr]bool{}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			m[pfx.Addr().Unmap()] = true
		}
	}
	return m, nil
}

// Serve waits until ctx is done or Drain is called, then drains: /ready
// turns 503 at once, the listeners keep accepting for DrainDelay, then close;
// HTTP/2 connections get GOAWAY, HTTP/1 connections close after their
// request in flight, and everything still open after DrainTimeout is cut.
// Shutdown skips the waiting. Serve returns when no connection is left.
func (p *Proxy) Serve(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-p.drainCh:
	case <-p.abortCh:
	}
	p.draining.Store(true)
	p.log.Info("draining", "delay", p.opts.DrainDelay, "timeout", p.opts.DrainTimeout)
	if p.opts.DrainDelay > 0 {
		t := time.NewTimer(p.opts.DrainDelay)
		select {
		case <-t.C:
		case <-p.abortCh:
			t.Stop()
		}
	}
	for _, l := range p.listeners {
		l.ln.Close()
	}
	// Ask HTTP/2 clients to go away and wake idle HTTP/1 connections.
	shutCtx, cancel := context.WithCancel(context.Background())
	cancel() // Shutdown only needs to run its hooks; we wait below.
	_ = p.h2Base.Shutdown(shutCtx)
	p.closeIdle()

	done := make(chan struct{})
	go func() { p.conns.Wait(); close(done) }()
	timer := time.NewTimer(p.opts.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
		p.log.Info("drained")
	case <-timer.C:
		p.log.Warn("drain timeout: closing connections still open")
		p.closeAll()
		<-done
	case <-p.abortCh:
		p.closeAll()
		<-done
	}
	p.h1Pool.close()
	close(p.stopped)
	p.h2Transport.CloseIdleConnections()
	return nil
}

// Drain starts the same graceful drain as cancelling Serve's context.
func (p *Proxy) Drain() { p.drainOne.Do(func() { close(p.drainCh) }) }

// Shutdown ends the proxy without waiting: listeners and connections close
// at once.
func (p *Proxy) Shutdown() { p.abortOne.Do(func() { close(p.abortCh) }) }

// Draining reports whether a drain has begun.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// Ready reports whether the proxy should receive traffic, and if not why.
func (p *Proxy) Ready() (bool, string) {
	if p.cfg.Load() == nil {
		return false, "no configuration"
	}
	if p.draining.Load() {
		return false, "draining"
	}
	if len(p.listeners) == 0 {
		return false, "not started"
	}
	return true, ""
}

// Listeners describes the data listeners.
func (p *Proxy) Listeners() []adminapi.Listener {
	out := make([]adminapi.Listener, 0, len(p.listeners))
	for _, l := range p.listeners {
		out = append(out, adminapi.Listener{Name: l.name, Address: l.ln.Addr().String(), ActiveConnections: l.active.Load()})
	}
	return out
}

// Gauges are the proxy's own gauges for /metrics.
func (p *Proxy) Gauges() []metrics.Gauge {
	var g []metrics.Gauge
	for _, l := range p.listeners {
		g = append(g, metrics.Gauge{Name: "meshproxy_connections_active", Help: "Connections open, by listener.", Labels: [][2]string{{"direction", l.name}}, Value: float64(l.active.Load())})
	}
	limits := p.cfg.Load().Config.Limits
	for _, l := range p.listeners {
		g = append(g, metrics.Gauge{Name: "meshproxy_fd_budget", Help: "File descriptors the connections of a listener may hold (two per connection).", Labels: [][2]string{{"direction", l.name}}, Value: float64(p.fdBudget(limits.FDBudget))})
	}
	for _, l := range p.listeners {
		g = append(g, metrics.Gauge{Name: "meshproxy_fd_budget_refused_total", Help: "Connections closed at once because their listener's descriptor budget was spent.", Type: "counter", Labels: [][2]string{{"direction", l.name}}, Value: float64(l.fdRefused.Load())})
	}
	open, idle := splicePipes.stats()
	g = append(g, metrics.Gauge{Name: "meshproxy_splice_pipes", Help: "Splice pipes open (two descriptors each), by state.", Labels: [][2]string{{"state", "in_use"}}, Value: float64(open - idle)},
		metrics.Gauge{Name: "meshproxy_splice_pipes", Labels: [][2]string{{"state", "idle"}}, Value: float64(idle)})
	draining := 0.0
	if p.draining.Load() {
		draining = 1
	}
	g = append(g, metrics.Gauge{Name: "meshproxy_draining", Help: "1 while the proxy drains.", Value: draining})
	return g
}

// trackedConn lets the drain reach connections: idle HTTP/1 connections are
// woken so that they close, and anything left at the timeout is cut.
type trackedConn struct {
	c    net.Conn
	idle atomic.Bool
	// cut, when set, also ends what the connection is waiting on (an
	// HTTP/1 request's upstream): closing the client connection alone
	// does not wake a read from a silent upstream, and the drain timeout
	// is a hard bound.
	cut atomic.Pointer[func()]
}

func (p *Proxy) track(c net.Conn) *trackedConn {
	t := &trackedConn{c: c}
	p.tracked.Store(t, struct{}{})
	return t
}

func (p *Proxy) untrack(t *trackedConn) { p.tracked.Delete(t) }

func (p *Proxy) closeIdle() {
	p.tracked.Range(func(k, _ any) bool {
		if t := k.(*trackedConn); t.idle.Load() {
			t.c.SetReadDeadline(time.Now())
		}
		return true
	})
}

func (p *Proxy) closeAll() {
	p.tracked.Range(func(k, _ any) bool {
		t := k.(*trackedConn)
		t.c.Close()
		if cut := t.cut.Load(); cut != nil {
			(*cut)()
		}
		return true
	})
}
