package identity

import (
	"crypto/tls"
	"crypto/x509"
	"syscall"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/controllertest"
)

// cpuTime is the process's user and system CPU time: a handshake's cost
// is CPU on both ends, which wall time on a shared machine hides.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMutualHandshake measures one mutual TLS 1.3 handshake, client
// and server (ECDSA P-256, a leaf and its issuer on each side), over
// loopback TCP, and reports the CPU of both ends per handshake:
//
//   - new-peer: the configs the data path uses, the server issuing no
//     tickets, so every handshake is a full one, and the verified-chain
//     cache emptied before each, as when meeting a peer certificate for
//     the first time;
//   - known-peer: the same with the verified-chain cache warm, as for
//     every later connection to or from that peer;
//   - resumed: the same with tickets, so the client resumes;
//   - built: a client config built for each handshake, with its pool
//     parsed from the bundle and no verified-chain cache, as a data path
//     that cached nothing would; compare with new-peer.
func BenchmarkMutualHandshake(b *testing.B) {
	c := newController(b, controllertest.Options{})
	web := issued(b, c, idWeb, "token-web")
	api := issued(b, c, idAPI, "token-api")
	noTickets := api.ServerConfig().Clone()
	noTickets.SessionTicketsDisabled = true
	bundle, _ := web.Trust().Bundle()

	run := func(b *testing.B, client func() *tls.Config, server *tls.Config, wantResumed bool) {
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			cs, _, err := handshake(client(), server)
			if err != nil {
				b.Fatal(err)
			}
			if cs.DidResume != wantResumed {
				b.Fatalf("resumed %v, want %v", cs.DidResume, wantResumed)
			}
		}
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
	b.Run("new-peer", func(b *testing.B) {
		run(b, func() *tls.Config {
			web.trust.load().verified.Clear()
			api.trust.load().verified.Clear()
			return web.ClientConfig(idAPI, meshapi.ALPNHTTP2)
		}, noTickets, false)
	})
	b.Run("known-peer", func(b *testing.B) {
		run(b, func() *tls.Config { return web.ClientConfig(idAPI, meshapi.ALPNHTTP2) }, noTickets, false)
	})
	b.Run("resumed", func(b *testing.B) {
		cfg := web.ClientConfig(idAPI, meshapi.ALPNHTTP1)
		handshake(cfg, api.ServerConfig()) // a first one to get a ticket
		run(b, func() *tls.Config { return cfg }, api.ServerConfig(), true)
	})
	b.Run("built", func(b *testing.B) {
		run(b, func() *tls.Config {
			api.trust.load().verified.Clear() // compare with new-peer
			return buildNaive(web, bundle, idAPI, meshapi.ALPNHTTP2)
		}, noTickets, false)
	})
}

// buildNaive is what a data path without the cache would do for each
// connection: parse the bundle into a pool and build a config.
func buildNaive(id *Identity, bundle meshapi.Bundle, expected, alpn string) *tls.Config {
	pool := x509.NewCertPool()
	for _, a := range bundle.Anchors {
		pool.AppendCertsFromPEM([]byte(a))
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true,
		GetClientCertificate: id.getClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := verifyChain(cs.PeerCertificates, pool, id.now(), x509.ExtKeyUsageServerAuth)
			if err == nil && got.id != expected {
				err = tls.AlertError(42)
			}
			return err
		},
		NextProtos: []string{alpn},
	}
}

// BenchmarkClientConfig is the cost of getting the config for a
// connection: the cached lookup against building one.
func BenchmarkClientConfig(b *testing.B) {
	c := newController(b, controllertest.Options{})
	web := issued(b, c, idWeb, "token-web")
	bundle, _ := web.Trust().Bundle()
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			web.ClientConfig(idAPI, meshapi.ALPNHTTP2)
		}
	})
	b.Run("built", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buildNaive(web, bundle, idAPI, meshapi.ALPNHTTP2)
		}
	})
}
