// Package identity is the proxy's mesh identity: a private key that never
// leaves memory, the workload certificate the controller issues for it
// (renewed before it expires), the trust bundle, and the TLS
// configurations that use them to originate and terminate mesh TLS.
//
// The certificate and the bundle are swapped atomically; the tls.Configs
// read them at each handshake, so rotation needs no new configuration and
// connections already open are not disturbed. A proxy that cannot reach
// the controller keeps serving with the certificate it holds until that
// expires, and keeps trying.
package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Clock is the time source of renewal and verification; tests drive it.
type Clock interface {
	Now() time.Time
	// After behaves as time.After.
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Defaults of Options.
const (
	DefaultRenewFraction  = 0.7
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = 2 * time.Minute
	DefaultRequestTimeout = 15 * time.Second
)

// renewJitter spreads renewals over ±5 % of the lifetime around
// RenewFraction, so that proxies started together (a rollout) do not ask
// the controller all at once forever after.
const renewJitter = 0.1

// Options configure New.
type Options struct {
	// Bootstrap is how to reach the controller (required).
	Bootstrap meshapi.Bootstrap
	// ID is the workload's SPIFFE id. When empty it is built from
	// TrustDomain (default: the trust domain of Bootstrap.ServerIdentity),
	// Namespace and ServiceAccount.
	ID                                     string
	TrustDomain, Namespace, ServiceAccount string

	// RenewFraction is the share of a certificate's lifetime after which
	// it is renewed (DefaultRenewFraction), with ±5 % of jitter.
	RenewFraction float64
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// between failed requests.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds one certificate request.
	RequestTimeout time.Duration

	// Clock defaults to the wall clock; Rand, which returns numbers in
	// [0, 1), to math/rand/v2.Float64.
	Clock Clock
	Rand  func() float64
	// DialContext dials the controller; nil uses a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Log         *slog.Logger
}

// Identity holds the proxy's key, certificate and trust bundle. Its methods
// are safe for concurrent use.
type Identity struct {
	id        string
	idURL     *url.URL
	bootstrap meshapi.Bootstrap
	opts      Options
	clock     Clock
	rand      func() float64
	log       *slog.Logger
	client    *http.Client

	// cert is the certificate held with its key (tls.Certificate.Leaf set).
	cert    atomic.Pointer[tls.Certificate]
	trust   *Trust
	configs tlsConfigs

	ready     chan struct{}
	readyOnce sync.Once

	mu    sync.Mutex // guards state
	state state
}

// state is the metadata State reports; never key material.
type state struct {
	renewAt, lastRenewal time.Time
	consecutiveFailures  int
	lastError            string
	renewals             uint64
	failures             map[string]uint64
}

// New checks the options and prepares the identity; it makes no request.
// Run obtains and renews the certificate.
func New(opts Options) (*Identity, error) {
	b := opts.Bootstrap
	if b.Address == "" || b.ServerIdentity == "" || b.TokenFile == "" {
		return nil, errors.New("bootstrap: address, serverIdentity and tokenFile are required")
	}
	server, err := parseSPIFFEID(b.ServerIdentity)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: serverIdentity: %w", err)
	}
	id := opts.ID
	if id == "" {
		td := opts.TrustDomain
		if td == "" {
			td = server.Host
		}
		if id, err = SPIFFEID(td, opts.Namespace, opts.ServiceAccount); err != nil {
			return nil, err
		}
	}
	idURL, err := parseSPIFFEID(id)
	if err != nil {
		return nil, fmt.Errorf("workload identity: %w", err)
	}
	trust, err := newTrust(b.TrustAnchors)
	if err != nil {
		return nil, err
	}
	if opts.RenewFraction <= 0 || opts.RenewFraction >= 1 {
		opts.RenewFraction = DefaultRenewFraction
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	i := &Identity{
		id:        id,
		idURL:     idURL,
		bootstrap: b,
		opts:      opts,
		clock:     opts.Clock,
		rand:      opts.Rand,
		log:       opts.Log,
		trust:     trust,
		ready:     make(chan struct{}),
		state:     state{failures: map[string]uint64{}},
	}
	if i.clock == nil {
		i.clock = wallClock{}
	}
	if i.rand == nil {
		i.rand = rand.Float64
	}
	if i.log == nil {
		i.log = slog.New(slog.DiscardHandler)
	}
	i.configs.server = i.newServerConfig()
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	i.client = &http.Client{
		Transport: &http.Transport{
			DialContext:         dial,
			TLSClientConfig:     i.certificateRequestConfig("h2", "http/1.1"),
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 1,
			// A renewal every few hours needs no idle connection.
			IdleConnTimeout: time.Minute,
		},
		Timeout: opts.RequestTimeout,
	}
	return i, nil
}

// ID returns the workload's SPIFFE id.
func (id *Identity) ID() string { return id.id }

// Trust returns the trust bundle holder, which discovery feeds.
func (id *Identity) Trust() *Trust { return id.trust }

// Ready is closed once a first certificate is held.
func (id *Identity) Ready() <-chan struct{} { return id.ready }

// Certificate returns the leaf certificate held (public data), or nil.
func (id *Identity) Certificate() *x509.Certificate {
	if c := id.cert.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

func (id *Identity) now() time.Time { return id.clock.Now() }

// Run obtains a certificate, then renews it at about RenewFraction of its
// lifetime, retrying failures with jittered exponential backoff, until ctx
// ends. It returns ctx's error.
func (id *Identity) Run(ctx context.Context) error {
	failures := 0
	for {
		err := id.Renew(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var wait time.Duration
		if err != nil {
			failures++
			wait = id.backoff(failures)
			id.log.Warn("certificate request failed", "identity", id.id, "error", err, "attempt", failures, "retry_in", wait)
		} else {
			failures = 0
			wait = id.renewDelay(id.cert.Load().Leaf)
		}
		id.mu.Lock()
		id.state.renewAt = id.now().Add(wait)
		id.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-id.clock.After(wait):
		}
	}
}

// renewDelay is how long from now until the renewal of a certificate just
// obtained: RenewFraction of its lifetime, jittered. The lifetime counts
// from now, not from NotBefore, which the controller backdates by a few
// minutes for clocks that lag: with a lifetime of minutes, counting the
// backdate would renew at once and forever.
func (id *Identity) renewDelay(leaf *x509.Certificate) time.Duration {
	start := leaf.NotBefore
	if now := id.now(); now.After(start) {
		start = now
	}
	life := leaf.NotAfter.Sub(start)
	f := id.opts.RenewFraction + renewJitter*(id.rand()-0.5)
	return max(start.Add(time.Duration(float64(life)*f)).Sub(id.now()), 0)
}

// backoff is the wait after the n-th consecutive failure: MinBackoff
// doubled per failure up to MaxBackoff, then drawn in [d/2, d) so that
// proxies cut off together do not come back together.
func (id *Identity) backoff(n int) time.Duration {
	d := id.opts.MinBackoff
	for i := 1; i < n && d < id.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, id.opts.MaxBackoff)
	return d/2 + time.Duration(id.rand()*float64(d/2))
}

// Renew makes one certificate request now and installs the certificate it
// gets. Run calls it; it is exported for the proxy's start-up, which may
// want the first certificate before it opens its listeners.
func (id *Identity) Renew(ctx context.Context) error {
	cert, resp, err := id.request(ctx)
	if err == nil {
		err = id.install(cert, resp)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	if err != nil {
		id.state.consecutiveFailures++
		id.state.lastError = err.Error()
		id.state.failures[ReasonOf(err)]++
		return err
	}
	id.state.consecutiveFailures = 0
	id.state.lastError = ""
	id.state.renewals++
	id.state.lastRenewal = id.now()
	return nil
}

func (id *Identity) install(cert *tls.Certificate, resp *meshapi.CertificateResponse) error {
	if err := id.trust.setFromCertificate(resp.Bundle); err != nil {
		return &RequestError{Reason: ReasonInvalidResponse, Err: err}
	}
	id.cert.Store(cert)
	id.readyOnce.Do(func() { close(id.ready) })
	id.log.Info("certificate obtained", "identity", id.id, "not_after", cert.Leaf.NotAfter, "serial", cert.Leaf.SerialNumber.Text(16))
	return nil
}

// String and LogValue name the identity by its SPIFFE id, so that logging
// or printing an *Identity shows nothing else.
func (id *Identity) String() string { return id.id }

// LogValue implements slog.LogValuer.
func (id *Identity) LogValue() slog.Value { return slog.StringValue(id.id) }
