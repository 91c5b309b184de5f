package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// targetKey carries a stream's upstream.Target to the HTTP/2 transport's
// dial, through the request's context (the transport dials with the
// context of the request that needs a connection).
type targetKey struct{}

// newH2Transport multiplexes streams over pooled connections per endpoint
// address, opening another connection when the upstream's stream limit is
// reached. Every connection is dialed by d: h2c to a plain endpoint, mesh
// TLS (ALPN meshapi.ALPNHTTP2) to a meshed one.
func newH2Transport(d *upstream.Dialer) *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			t, ok := ctx.Value(targetKey{}).(upstream.Target)
			if !ok || t.Addr != addr {
				t = upstream.Target{Addr: addr, Protocol: "http2"}
			}
			return d.Dial(ctx, t)
		},
		DisableCompression: true,
		// Find dead upstream connections by PING instead of waiting for
		// the kernel to give up.
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
	}
}
