package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
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
// connections per endpoint and identity: one transport (which pools by
// address) per identity the streams' targets name, so that a connection
// made to one identity never carries a stream meant for another at the
// same address. Every connection is dialed by the one dial path: h2c to a
// plain endpoint, mesh TLS (ALPN meshapi.ALPNHTTP2) to a meshed one.
type h2Transports struct {
	d  *upstream.Dialer
	mu sync.Mutex
	m  map[string]*http2.Transport // by identity; "" for plain endpoints
}

// The windows the proxy grants an upstream. The stream window bounds what
// the proxy reads ahead of a client that does not read (or whose own
// window is shut): a stalled stream holds at most upstreamStreamWindow of
// the upstream's data, where the library's default (4 MiB) let 50 stalled
// streams pin 200 MB. It is Envoy's setting for untrusted peers. The
// connection window is large on purpose: an upstream connection is shared
// by the streams of every client, and a small one would let a few
// stalled clients stop everyone else's streams on it; the memory bound
// comes from the stream windows and the streams a client may open.
const (
	upstreamStreamWindow = 64 << 10
	upstreamConnWindow   = 1 << 30
)

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

// newTransport is an x/net HTTP/2 transport, which dials one connection
// at a time per address and shares it among concurrent streams (net/http's
// transport dials one per waiting request at first). Its receive windows
// can be set only through the net/http transport it is configured from;
// that one is otherwise unused, and the HTTP/2 transport gets back the
// ordinary pool that dials (ConfigureTransports gives it one that does
// not). TestHTTP2StalledClientsAreBounded fails if the windows do not
// take.
func (ts *h2Transports) newTransport() *http2.Transport {
	t1 := &http.Transport{
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     upstreamStreamWindow,
			MaxReceiveBufferPerConnection: upstreamConnWindow,
		},
	}
	tr, err := http2.ConfigureTransports(t1)
	if err != nil {
		// Only a TLSNextProto already holding "h2" fails, and t1 has
		// none.
		panic(fmt.Sprintf("configuring the HTTP/2 transport: %v", err))
	}
	tr.ConnPool = nil
	tr.AllowHTTP = true
	tr.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		t, ok := ctx.Value(targetKey{}).(upstream.Target)
		if !ok || t.Addr != addr {
			t = upstream.Target{Addr: addr, Protocol: "http2"}
		}
		return ts.d.Dial(ctx, t)
	}
	tr.DisableCompression = true
	// Find dead upstream connections by PING instead of waiting for the
	// kernel to give up, and close those left idle (endpoints a push
	// removed) as the HTTP/1 pool does.
	tr.ReadIdleTimeout = 30 * time.Second
	tr.PingTimeout = 15 * time.Second
	tr.IdleConnTimeout = 90 * time.Second
	return tr
}

// CloseIdleConnections closes the idle connections of every transport.
func (ts *h2Transports) CloseIdleConnections() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, tr := range ts.m {
		tr.CloseIdleConnections()
	}
}
