// Package discovery is the proxy's client of the controller's discovery
// stream (meshapi.PathDiscovery): one HTTP/2 stream over mesh TLS that
// carries the proxy's hello, subscriptions and ACK/NACKs one way and
// resource versions the other. Each version is applied to the Set held
// (meshapi.Set.Apply), acknowledged, and the new Set handed to OnUpdate; a
// version that cannot be applied is NACKed and the last good Set stays.
//
// Losing the controller loses nothing the proxy routes with: the Set is
// kept, the client reconnects with jittered exponential backoff and
// resubscribes everything it held.
package discovery

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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/meshapi"
)

// BundleSink takes the Bundle resource: the identity package's Trust.
type BundleSink interface {
	SetBundle(b meshapi.Bundle, version uint64) error
}

// Defaults of Options.
const (
	DefaultMinBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultMaxAddresses = 10000
)

// ErrTooManyAddresses is returned by Resolve for a new address once
// MaxAddresses are subscribed; the data path treats the address as one no
// service owns.
var ErrTooManyAddresses = errors.New("too many addresses subscribed on demand")

// Options configure New.
type Options struct {
	// Bootstrap names the controller (Address is required).
	Bootstrap meshapi.Bootstrap
	// TLSConfig is the client configuration to the controller, with the
	// proxy's mesh certificate and the controller's verification:
	// identity.Identity.ControllerConfig("h2"). Required.
	TLSConfig *tls.Config
	// Trust receives each Bundle version before it is acknowledged; a
	// bundle it refuses is NACKed. Required.
	Trust BundleSink
	// Hello describes the proxy to the controller (APIVersion is filled).
	Hello meshapi.Hello
	// OnUpdate is called with every new Set, one call at a time, from
	// the stream's goroutine: the proxy compiles it into its routing
	// table. It must not block for long; the next version waits for it.
	OnUpdate func(*meshapi.Set)
	// Initial is the Set to start from (an empty one when nil).
	Initial *meshapi.Set

	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// between streams.
	MinBackoff, MaxBackoff time.Duration
	// Rand returns numbers in [0, 1); Now the time. For tests.
	Rand func() float64
	Now  func() time.Time
	// MaxAddresses bounds the addresses subscribed on demand
	// (DefaultMaxAddresses); past it Resolve fails with
	// ErrTooManyAddresses, so that an application that connects to
	// addresses without end cannot grow the proxy's subscription (and the
	// controller's work) without end.
	MaxAddresses int
	// DialContext dials the controller; nil uses a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Log         *slog.Logger
}

// Client is a discovery client. Its methods are safe for concurrent use.
type Client struct {
	opts      Options
	transport *http2.Transport
	set       atomic.Pointer[meshapi.Set]

	mu       sync.Mutex
	services map[string]bool // subscribed by name
	addrs    map[string]bool // subscribed by address
	stream   *stream         // the open stream, nil when disconnected
	// compiled is the last Set OnUpdate returned from: what Resolve
	// answers from, so that its callers find the answer in the table.
	compiled *meshapi.Set
	changed  chan struct{} // closed and replaced after each update
	st       stats
}

type stats struct {
	connected                  bool
	connectedSince, lastUpdate time.Time
	opened, nacks              uint64
	lastStreamError, lastNACK  string
}

// stream is one open discovery stream. Messages to the controller go
// through out, so that no caller (Resolve on the data path) ever blocks on
// the connection's flow control.
type stream struct {
	out  chan meshapi.ClientMessage
	done chan struct{}
}

// outQueue bounds the messages waiting to be written; a stream whose
// queue overflows is closed, and the next one resubscribes everything.
const outQueue = 1024

// New checks the options; Run connects.
func New(opts Options) (*Client, error) {
	if opts.Bootstrap.Address == "" {
		return nil, errors.New("discovery: bootstrap address is required")
	}
	if opts.TLSConfig == nil || opts.Trust == nil {
		return nil, errors.New("discovery: TLSConfig and Trust are required")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.MaxAddresses <= 0 {
		opts.MaxAddresses = DefaultMaxAddresses
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.OnUpdate == nil {
		opts.OnUpdate = func(*meshapi.Set) {}
	}
	opts.Hello.APIVersion = meshapi.APIVersion
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	c := &Client{
		opts:     opts,
		services: map[string]bool{},
		addrs:    map[string]bool{},
		changed:  make(chan struct{}),
	}
	c.transport = &http2.Transport{
		TLSClientConfig: opts.TLSConfig,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			return tc, nil
		},
		// A controller that went away without closing the connection
		// (its pod or node deleted at once) is found by PING within 15 s,
		// so that the proxy reconnects to another replica and catches up
		// with what changed meanwhile. A PING costs the controller only
		// on a stream that carried nothing for 10 s.
		ReadIdleTimeout: 10 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	initial := opts.Initial
	if initial == nil {
		initial = &meshapi.Set{}
	}
	c.set.Store(initial)
	c.compiled = initial
	return c, nil
}

// Set returns the Set held.
func (c *Client) Set() *meshapi.Set { return c.set.Load() }

// Connected reports whether a stream to the controller is open, so that a
// caller of Resolve can fail fast instead of waiting while the controller
// is away.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream != nil
}

// Subscribe adds services ("namespace/name") to the subscription; their
// Service and Endpoints resources follow on the stream.
func (c *Client) Subscribe(services ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var add []string
	for _, s := range services {
		if !c.services[s] {
			c.services[s] = true
			add = append(add, s)
		}
	}
	if len(add) > 0 {
		c.sendLocked(meshapi.ClientMessage{Subscribe: &meshapi.Subscription{Services: add}})
	}
}

// sendLocked queues a message on the open stream, if any; without one,
// the next stream's opening subscription carries it.
func (c *Client) sendLocked(m meshapi.ClientMessage) {
	if c.stream == nil {
		return
	}
	select {
	case c.stream.out <- m:
	default:
		c.opts.Log.Warn("discovery: the stream's send queue is full; reconnecting")
		c.closeStreamLocked()
	}
}

func (c *Client) closeStreamLocked() {
	if c.stream != nil {
		close(c.stream.done)
		c.stream = nil
		c.st.connected = false
	}
}

// Run keeps a discovery stream open until ctx ends, reconnecting with
// backoff, and returns ctx's error. Start it once the identity holds a
// certificate: the controller authenticates the stream by it.
func (c *Client) Run(ctx context.Context) error {
	failures := 0
	for {
		healthy, err := c.runStream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if healthy {
			failures = 0
		}
		failures++
		wait := c.backoff(failures)
		c.opts.Log.Warn("discovery stream ended", "controller", c.opts.Bootstrap.Address, "error", err, "retry_in", wait)
		c.mu.Lock()
		c.st.lastStreamError = err.Error()
		c.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the wait after the n-th stream in a row that failed or
// carried nothing: MinBackoff doubled per failure up to MaxBackoff, then
// drawn in [d/2, d), so that proxies that lost the controller together do
// not all come back at the same moment.
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinBackoff
	for i := 1; i < n && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	return d/2 + time.Duration(c.opts.Rand()*float64(d/2))
}

// runStream opens one stream and serves it until it ends. healthy says
// it carried at least one resource, which resets the backoff.
func (c *Client) runStream(ctx context.Context) (healthy bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.opts.Bootstrap.Address+meshapi.PathDiscovery, pr)
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", meshapi.ContentType)
	req.Header.Set("Accept", meshapi.ContentType)

	st := &stream{out: make(chan meshapi.ClientMessage, outQueue), done: make(chan struct{})}
	c.open(st)
	defer func() {
		c.mu.Lock()
		if c.stream == st {
			c.closeStreamLocked()
		}
		c.mu.Unlock()
	}()
	go func() {
		err := writeMessages(pw, st)
		pw.CloseWithError(err)
		cancel() // a stream that cannot send cannot ACK: start over
	}()

	// Each stream gets a connection of its own: one whose handshake came
	// before the proxy held a certificate, or a newer one, would carry
	// the old authentication into the next stream.
	defer c.transport.CloseIdleConnections()
	res, err := c.transport.RoundTrip(req)
	if err != nil {
		return false, fmt.Errorf("opening the discovery stream: %w", err)
	}
	defer res.Body.Close()
	// The transport does not watch ctx while it reads our request body
	// and we read its response: end both when ctx ends.
	stop := context.AfterFunc(ctx, func() {
		pw.CloseWithError(ctx.Err())
		res.Body.Close()
	})
	defer stop()
	if res.StatusCode != http.StatusOK {
		return false, fmt.Errorf("opening the discovery stream: %w", statusError(res))
	}
	c.mu.Lock()
	if c.stream == st {
		c.st.connected = true
		c.st.connectedSince = c.opts.Now()
		c.st.opened++
	}
	c.mu.Unlock()

	dec := meshapi.NewDecoder(res.Body, 0)
	for {
		var m meshapi.ServerMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the controller closed the stream")
			}
			select {
			case <-st.done:
				err = errors.New("the stream was closed: its send queue overflowed")
			default:
			}
			return healthy, fmt.Errorf("reading the discovery stream: %w", err)
		}
		healthy = true
		c.apply(st, &m)
	}
}

// open makes st the open stream and queues the hello and the whole
// subscription, ahead of anything Subscribe or Resolve queues later.
func (c *Client) open(st *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeStreamLocked()
	c.stream = st
	hello := c.opts.Hello
	st.out <- meshapi.ClientMessage{Hello: &hello}
	sub := meshapi.Subscription{}
	for s := range c.services {
		sub.Services = append(sub.Services, s)
	}
	for a := range c.addrs {
		sub.Addresses = append(sub.Addresses, a)
	}
	if len(sub.Services)+len(sub.Addresses) > 0 {
		slices.Sort(sub.Services)
		slices.Sort(sub.Addresses)
		st.out <- meshapi.ClientMessage{Subscribe: &sub}
	}
}

func writeMessages(w io.Writer, st *stream) error {
	for {
		select {
		case m := <-st.out:
			line, err := meshapi.Encode(m)
			if err != nil {
				return err
			}
			if _, err := w.Write(line); err != nil {
				return err
			}
		case <-st.done:
			return errors.New("stream closed")
		}
	}
}

// apply applies one resource version: ACK and OnUpdate when it applies,
// NACK and the last good Set kept when it does not.
func (c *Client) apply(st *stream, m *meshapi.ServerMessage) {
	ack := meshapi.Ack{Kind: m.Kind, Name: m.Name, Version: m.Version}
	next, err := c.set.Load().Apply(m)
	if err == nil && m.Kind == meshapi.KindBundle {
		if err = c.opts.Trust.SetBundle(*m.Bundle, m.Version); err != nil {
			err = fmt.Errorf("Bundle version %d: %w", m.Version, err)
		}
	}
	if err != nil {
		ack.Error = err.Error()
		c.opts.Log.Warn("discovery: refused a resource version", "kind", m.Kind, "name", m.Name, "version", m.Version, "error", err)
		c.mu.Lock()
		c.st.nacks++
		c.st.lastNACK = ack.Error
		c.queue(st, ack)
		c.mu.Unlock()
		return
	}
	c.set.Store(next)
	// The proxy compiles the Set before Resolve's callers wake, so that
	// the service they are told about is in the routing table they read.
	c.opts.OnUpdate(next)
	c.mu.Lock()
	c.st.lastUpdate = c.opts.Now()
	c.queue(st, ack)
	c.compiled = next
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// queue sends an ACK on the stream the version came on, if it is still
// the open one.
func (c *Client) queue(st *stream, ack meshapi.Ack) {
	if c.stream == st {
		c.sendLocked(meshapi.ClientMessage{Ack: &ack})
	}
}

// statusError reads a refused stream's meshapi.Error.
func statusError(res *http.Response) error {
	var e meshapi.Error
	dec := meshapi.NewDecoder(io.LimitReader(res.Body, 64<<10), 64<<10)
	if err := dec.Decode(&e); err != nil || e.Reason == "" {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return fmt.Errorf("status %d %s: %s", res.StatusCode, e.Reason, e.Error)
}

// Resolve returns the service that owns a virtual address the data path
// met and does not know, subscribing to the address on first use. It
// waits, bounded by ctx, for the controller's Resolution and, when a
// service owns the address, for that service's Service and Endpoints, so
// that on return OnUpdate has been called with a Set that holds them.
// "" with a nil error says no service owns the address: the answer is
// cached until the Resolution's next version. Concurrent callers for one
// address share one subscription.
func (c *Client) Resolve(ctx context.Context, addr netip.AddrPort) (string, error) {
	key := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()).String()
	for {
		c.mu.Lock()
		if svc, ok := answer(c.compiled, key); ok {
			c.mu.Unlock()
			return svc, nil
		}
		if !c.addrs[key] {
			if len(c.addrs) >= c.opts.MaxAddresses {
				c.mu.Unlock()
				return "", fmt.Errorf("resolving %s: %w", key, ErrTooManyAddresses)
			}
			c.addrs[key] = true
			c.sendLocked(meshapi.ClientMessage{Subscribe: &meshapi.Subscription{Addresses: []string{key}}})
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("resolving %s: %w", key, ctx.Err())
		}
	}
}

// answer is the Set's answer for an address, if it is complete.
func answer(s *meshapi.Set, key string) (string, bool) {
	r, ok := s.Resolutions[key]
	if !ok {
		return "", false
	}
	if r.Service == "" {
		return "", true
	}
	st := s.Services[r.Service]
	if st == nil || st.Service == nil || st.EndpointsVersion == 0 {
		return "", false
	}
	return r.Service, true
}
