package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Target is where one upstream connection goes.
type Target struct {
	// Addr is "ip:port".
	Addr string
	// Identity is the SPIFFE id the server must present when Meshed.
	Identity string
	// Meshed says a proxy serves the address: the connection uses mesh
	// TLS when the dialer has a TLS hook.
	Meshed bool
	// Protocol is the application protocol the connection will carry
	// (ProtocolHTTP1, ProtocolHTTP2 or ProtocolOpaque), which mesh TLS
	// names by ALPN so that the server's proxy skips detection.
	Protocol meshapi.Protocol
}

// ALPN returns the mesh ALPN protocol that names p.
func ALPN(p meshapi.Protocol) string {
	switch p {
	case meshapi.ProtocolHTTP1:
		return meshapi.ALPNHTTP1
	case meshapi.ProtocolHTTP2, meshapi.ProtocolGRPC:
		return meshapi.ALPNHTTP2
	}
	return meshapi.ALPNOpaque
}

// Options configure a Dialer.
type Options struct {
	// Dial opens TCP connections. Default: a net.Dialer with 30 s
	// keep-alives. Tests inject their own (a network namespace, a pipe).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ConnectTimeout returns the bound of a dial, TLS handshake included
	// (0: none). It is called at every dial, so that a reload changes it
	// for every upstream connection made after.
	ConnectTimeout func() time.Duration
	// ClientTLS returns the configuration of mesh TLS to an endpoint that
	// must present identity, for a connection that will carry the ALPN
	// protocol alpn. The configuration must verify the server's
	// certificate and identity; when its NextProtos is empty the dialer
	// sets it to alpn. A nil hook, or a nil configuration, dials meshed
	// endpoints in plaintext: the proxy holds no certificate yet (the
	// identity component sets the hook).
	ClientTLS func(identity, alpn string) *tls.Config
}

// Dialer is the one path by which the proxy connects to upstreams:
// HTTP/1, HTTP/2 and TCP forwarding all dial through it, so connect
// timeouts and mesh TLS apply the same way to each.
type Dialer struct {
	o Options
}

// NewDialer returns a dialer.
func NewDialer(o Options) *Dialer {
	if o.Dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		o.Dial = d.DialContext
	}
	return &Dialer{o: o}
}

// Dial connects to t within the connect timeout and, for a meshed target
// with a TLS configuration, completes the TLS handshake. A failure is a
// *DialError.
func (d *Dialer) Dial(ctx context.Context, t Target) (net.Conn, error) {
	if d.o.ConnectTimeout != nil {
		if timeout := d.o.ConnectTimeout(); timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
	}
	c, err := d.o.Dial(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, &DialError{Err: err}
	}
	if !t.Meshed || d.o.ClientTLS == nil {
		return c, nil
	}
	alpn := ALPN(t.Protocol)
	cfg := d.o.ClientTLS(t.Identity, alpn)
	if cfg == nil {
		return c, nil
	}
	if len(cfg.NextProtos) == 0 {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{alpn}
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &DialError{Err: fmt.Errorf("mesh TLS to %s: %w", t.Identity, err), TLS: true}
	}
	return tc, nil
}

// DialError is a failure to connect (or to complete mesh TLS), as opposed
// to a failure of an established connection.
type DialError struct {
	Err error
	// TLS says the TCP connection was made and the handshake failed.
	TLS bool
}

func (e *DialError) Error() string { return "dialing upstream: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// IsDialError reports whether err is, or wraps, a DialError.
func IsDialError(err error) bool {
	var de *DialError
	return errors.As(err, &de)
}
