package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// targetKey carries a stream's upstream.Target to the HTTP/2 transport,
// through the request's context (the transport dials with the context of
// the request that needs a connection).
type targetKey struct{}

// h2Transports forwards HTTP/2 streams over pooled, multiplexed
// connections per endpoint and identity: one http2.Transport (which pools
// by address) per identity the streams' targets name, so that a
// connection made to one identity never carries a stream meant for
// another at the same address. Every connection is dialed by the one dial
// path: h2c to a plain endpoint, mesh TLS (ALPN meshapi.ALPNHTTP2) to a
// meshed one.
type h2Transports struct {
	d  *upstream.Dialer
	mu sync.Mutex
	m  map[string]*http2.Transport // by identity; "" for plain endpoints
}

func newH2Transports(d *upstream.Dialer) *h2Transports {
	return &h2Transports{d: d, m: map[string]*http2.Transport{}}
}

// RoundTrip sends the request over the transport of its target's
// identity.
func (ts *h2Transports) RoundTrip(r *http.Request) (*http.Response, error) {
	t, _ := r.Context().Value(targetKey{}).(upstream.Target)
	return ts.transport(t.Identity).RoundTrip(r)
}

func (ts *h2Transports) transport(identity string) *http2.Transport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	tr := ts.m[identity]
	if tr == nil {
		tr = ts.newTransport()
		ts.m[identity] = tr
	}
	return tr
}

func (ts *h2Transports) newTransport() *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			t, ok := ctx.Value(targetKey{}).(upstream.Target)
			if !ok || t.Addr != addr {
				t = upstream.Target{Addr: addr, Protocol: "http2"}
			}
			return ts.d.Dial(ctx, t)
		},
		DisableCompression: true,
		// Find dead upstream connections by PING instead of waiting for
		// the kernel to give up, and close those left idle (endpoints a
		// push removed) as the HTTP/1 pool does.
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
		IdleConnTimeout: 90 * time.Second,
	}
}

// CloseIdleConnections closes the idle connections of every transport.
func (ts *h2Transports) CloseIdleConnections() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, tr := range ts.m {
		tr.CloseIdleConnections()
	}
}
