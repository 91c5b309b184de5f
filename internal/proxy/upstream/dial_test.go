package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

func TestALPNNamesTheApplicationProtocol(t *testing.T) {
	for p, want := range map[meshapi.Protocol]string{
		meshapi.ProtocolHTTP1:  meshapi.ALPNHTTP1,
		meshapi.ProtocolHTTP2:  meshapi.ALPNHTTP2,
		meshapi.ProtocolGRPC:   meshapi.ALPNHTTP2,
		meshapi.ProtocolOpaque: meshapi.ALPNOpaque,
		meshapi.ProtocolDetect: meshapi.ALPNOpaque,
	} {
		if got := ALPN(p); got != want {
			t.Errorf("ALPN(%q) = %q, want %q", p, got, want)
		}
	}
}

// The connect timeout bounds every dial, whatever dialer is injected, and
// a failure is a DialError.
func TestDialAppliesConnectTimeout(t *testing.T) {
	d := NewDialer(Options{ConnectTimeout: func() time.Duration { return 20 * time.Millisecond }, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	start := time.Now()
	_, err := d.Dial(context.Background(), Target{Addr: "10.0.0.1:80"})
	if !IsDialError(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

// Without a hook, or with a hook that has no configuration yet, a meshed
// endpoint is dialed in plaintext; a plain endpoint never asks the hook.
func TestDialPlaintextWithoutTLSConfig(t *testing.T) {
	asked := 0
	pipe := func(context.Context, string, string) (net.Conn, error) { c, _ := net.Pipe(); return c, nil }
	for _, tc := range []struct {
		hook  func(string, string) *tls.Config
		t     Target
		asked int
	}{
		{nil, Target{Addr: "a:1", Meshed: true, Identity: "spiffe://td/x"}, 0},
		{func(string, string) *tls.Config { asked++; return nil }, Target{Addr: "a:1", Meshed: true, Identity: "spiffe://td/x"}, 1},
		{func(string, string) *tls.Config { asked++; return nil }, Target{Addr: "a:1"}, 0},
	} {
		asked = 0
		c, err := NewDialer(Options{Dial: pipe, ClientTLS: tc.hook}).Dial(context.Background(), tc.t)
		if err != nil {
			t.Fatal(err)
		}
		if _, isTLS := c.(*tls.Conn); isTLS || asked != tc.asked {
			t.Errorf("%+v: TLS %v, hook asked %d times", tc.t, isTLS, asked)
		}
		c.Close()
	}
}
