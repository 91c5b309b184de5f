package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshctl/mesh/internal/proxy/config"
)

// boundedDial applies limits.connectTimeout to every upstream dial, whatever
// dialer was injected.
func boundedDial(dial func(context.Context, string, string) (net.Conn, error), timeout time.Duration) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

// newH2Transport multiplexes h2c streams over pooled connections per
// endpoint address, opening another connection when the upstream's stream
// limit is reached.
func newH2Transport(dial func(context.Context, string, string) (net.Conn, error), l config.Limits) *http2.Transport {
	d := boundedDial(dial, l.ConnectTimeout.D())
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return d(ctx, network, addr)
		},
		DisableCompression: true,
		// Find dead upstream connections by PING instead of waiting for
		// the kernel to give up.
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
	}
}
