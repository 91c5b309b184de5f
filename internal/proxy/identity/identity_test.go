// The tests run against controllertest, a small controller in this
// repository that speaks the meshapi contract (certificate issuance from a
// test CA of internal/pki, the discovery stream), over TLS 1.3 and HTTP/2
// on loopback. The real controller is being built in parallel; the
// end-to-end tests against it come when both are merged.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/controllertest"
)

const td = "cluster.local"

var (
	idDefault = controllertest.DefaultID(td)
	idWeb     = "spiffe://cluster.local/ns/shop/sa/web"
	idAPI     = "spiffe://cluster.local/ns/shop/sa/api"
)

func newController(t testing.TB, opts controllertest.Options) *controllertest.Controller {
	if opts.Tokens == nil {
		opts.Tokens = map[string]string{
			controllertest.DefaultToken: idDefault,
			"token-web":                 idWeb,
			"token-api":                 idAPI,
		}
	}
	return controllertest.New(t, opts)
}

// newIdentity makes an identity for the workload the token names, with a
// token file of its own.
func newIdentity(t testing.TB, c *controllertest.Controller, id, token string, mod func(*Options)) *Identity {
	t.Helper()
	b := c.Bootstrap()
	b.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(b.TokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := Options{Bootstrap: b, ID: id, MinBackoff: time.Second, MaxBackoff: 4 * time.Second}
	if mod != nil {
		mod(&opts)
	}
	i, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func issued(t testing.TB, c *controllertest.Controller, id, token string) *Identity {
	t.Helper()
	i := newIdentity(t, c, id, token, nil)
	if err := i.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	return i
}

func TestIssue(t *testing.T) {
	c := newController(t, controllertest.Options{})
	i := newIdentity(t, c, "", controllertest.DefaultToken, func(o *Options) {
		// The id is built from the namespace and ServiceAccount, in the
		// controller's trust domain.
		o.Namespace, o.ServiceAccount = "default", "default"
	})
	if i.ID() != idDefault {
		t.Fatalf("ID() = %q, want %q", i.ID(), idDefault)
	}
	select {
	case <-i.Ready():
		t.Fatal("ready before the first certificate")
	default:
	}
	if err := i.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-i.Ready()
	leaf := i.Certificate()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idDefault {
		t.Errorf("URI SANs = %v", leaf.URIs)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("key is %T, want ECDSA", leaf.PublicKey)
	}
	s := i.State()
	if !s.Ready || s.RenewalsTotal != 1 || s.ConsecutiveFailures != 0 || s.NotAfter.IsZero() || s.LastRenewal.IsZero() {
		t.Errorf("state = %+v", s)
	}
	if s.Trust.TrustDomain != td || len(s.Trust.Anchors) != 1 || s.Trust.Version != 0 {
		t.Errorf("trust = %+v, want the certificate's bundle", s.Trust)
	}
	// The key ids tell issuers and anchors apart during a rotation, where
	// old and new have the same names.
	if want := hex.EncodeToString(c.CA.Issuer().SubjectKeyId); want == "" || s.IssuerKeyID != want {
		t.Errorf("issuerKeyID = %q, want the issuer's subject key id %q", s.IssuerKeyID, want)
	}
	if want := hex.EncodeToString(c.CA.TrustAnchors[0].SubjectKeyId); want == "" || len(s.Trust.Anchors) != 1 || s.Trust.Anchors[0].KeyID != want {
		t.Errorf("anchors = %+v, want the key id %q", s.Trust.Anchors, want)
	}
}

func TestIssueOverHTTP1(t *testing.T) {
	c := newController(t, controllertest.Options{HTTP1Only: true})
	i := newIdentity(t, c, idWeb, "token-web", nil)
	if err := i.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestRenewsAtSeventyPercentOfLifetime(t *testing.T) {
	clock := newFakeClock(time.Now().Truncate(time.Second)) // certificates count whole seconds
	c := newController(t, controllertest.Options{Clock: clock.Now, Lifetime: time.Hour})
	i := newIdentity(t, c, idWeb, "token-web", func(o *Options) {
		o.Clock, o.Rand = clock, func() float64 { return 0.5 } // no jitter
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- i.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if d := <-clock.waiting; d != 42*time.Minute {
		t.Fatalf("first renewal in %s, want 42m (70%% of 1h)", d)
	}
	first := i.Certificate()
	if s := i.State(); !s.RenewAt.Equal(clock.Now().Add(42 * time.Minute).UTC()) {
		t.Errorf("RenewAt = %s", s.RenewAt)
	}
	clock.Advance(42 * time.Minute)
	if d := <-clock.waiting; d != 42*time.Minute {
		t.Fatalf("second renewal in %s, want 42m", d)
	}
	second := i.Certificate()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the certificate was not replaced")
	}
	if first.PublicKey.(*ecdsa.PublicKey).Equal(second.PublicKey) {
		t.Error("the renewal kept the key; each certificate should get a new one")
	}
	if c.Issued() != 2 || i.State().RenewalsTotal != 2 {
		t.Errorf("issued %d, renewals %d, want 2", c.Issued(), i.State().RenewalsTotal)
	}
}

func TestRenewalJitterStaysNearSeventyPercent(t *testing.T) {
	now := time.Now()
	leaf := &x509.Certificate{NotBefore: now, NotAfter: now.Add(100 * time.Hour)}
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{{0, 65 * time.Hour}, {0.5, 70 * time.Hour}, {0.9999999, 75 * time.Hour}} {
		i := &Identity{opts: Options{RenewFraction: 0.7}, clock: fixedClock(now), rand: func() float64 { return tc.r }}
		if got := i.renewDelay(leaf); got.Round(time.Minute) != tc.want {
			t.Errorf("rand %v: renewal in %s, want %s", tc.r, got, tc.want)
		}
	}
}

// The controller backdates NotBefore by five minutes (pki), which must not
// count as lifetime: a one-minute certificate renews after about 42 s, not
// at once.
func TestRenewalIgnoresTheBackdate(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		life, want time.Duration
	}{{time.Minute, 42 * time.Second}, {3 * time.Minute, 126 * time.Second}, {24 * time.Hour, 16*time.Hour + 48*time.Minute}} {
		leaf := &x509.Certificate{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(tc.life)}
		i := &Identity{opts: Options{RenewFraction: 0.7}, clock: fixedClock(now), rand: func() float64 { return 0.5 }}
		if got := i.renewDelay(leaf).Round(time.Millisecond); got != tc.want {
			t.Errorf("lifetime %s: renewal in %s, want %s", tc.life, got, tc.want)
		}
	}
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time                         { return time.Time(c) }
func (c fixedClock) After(d time.Duration) <-chan time.Time { return nil }

func TestBackoffIsBoundedAndJittered(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.999} {
		i := &Identity{opts: Options{MinBackoff: time.Second, MaxBackoff: time.Minute}, rand: func() float64 { return r }}
		for n, d := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 50: time.Minute} {
			got := i.backoff(n)
			if got < d/2 || got >= d {
				t.Errorf("rand %v, failure %d: backoff %s, want in [%s, %s)", r, n, got, d/2, d)
			}
		}
	}
}

func TestControllerDownDuringRenewal(t *testing.T) {
	clock := newFakeClock(time.Now().Truncate(time.Second)) // certificates count whole seconds
	c := newController(t, controllertest.Options{Clock: clock.Now, Lifetime: time.Hour})
	i := newIdentity(t, c, idWeb, "token-web", func(o *Options) {
		o.Clock, o.Rand = clock, func() float64 { return 0.5 }
		o.MinBackoff, o.MaxBackoff = 4*time.Second, 16*time.Second
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- i.Run(ctx) }()
	defer func() { cancel(); <-done }()

	<-clock.waiting
	old := i.Certificate()
	c.Stop()
	clock.Advance(42 * time.Minute)

	// Failures back off exponentially, jittered, up to MaxBackoff.
	for n, want := range []time.Duration{3 * time.Second, 6 * time.Second, 12 * time.Second, 12 * time.Second} {
		d := <-clock.waiting
		if d != want {
			t.Fatalf("failure %d: retry in %s, want %s", n+1, d, want)
		}
		s := i.State()
		if s.ConsecutiveFailures != n+1 || s.FailuresTotal[ReasonUnreachable] != uint64(n+1) || s.LastError == "" {
			t.Fatalf("failure %d: state %+v", n+1, s)
		}
		// The old certificate is still served.
		if got := serve(t, i); got != nil {
			t.Fatalf("failure %d: the old certificate is no longer served: %v", n+1, got)
		}
		if i.Certificate() != old || !s.Ready {
			t.Fatalf("failure %d: the certificate changed or is not ready", n+1)
		}
		if n == 3 {
			c.Start() // back before the next retry
		}
		clock.Advance(d)
	}
	if d := <-clock.waiting; d != 42*time.Minute {
		t.Fatalf("after recovery: next renewal in %s, want 42m", d)
	}
	s := i.State()
	if s.ConsecutiveFailures != 0 || s.LastError != "" || s.RenewalsTotal != 2 || i.Certificate() == old {
		t.Fatalf("after recovery: state %+v", s)
	}
}

func TestExpiredCertificateIsNotServed(t *testing.T) {
	clock := newFakeClock(time.Now().Truncate(time.Second)) // certificates count whole seconds
	c := newController(t, controllertest.Options{Clock: clock.Now, Lifetime: time.Hour})
	i := newIdentity(t, c, idWeb, "token-web", func(o *Options) { o.Clock = clock })
	if err := i.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(61 * time.Minute)
	if i.State().Ready {
		t.Error("ready with an expired certificate")
	}
	if _, err := i.getCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("getCertificate: %v, want ErrNoCertificate", err)
	}
}

// serve makes one mutual handshake with i as the server and a peer from
// the same controller as the client.
func serve(t *testing.T, i *Identity) error {
	t.Helper()
	peer := &Identity{id: idAPI, clock: i.clock, trust: i.trust}
	peer.cert.Store(i.cert.Load()) // the same workload dialing itself
	peer.configs.server = peer.newServerConfig()
	_, _, err := handshake(peer.ClientConfig(i.ID(), meshapi.ALPNHTTP1), i.ServerConfig())
	return err
}

func TestReasonsOfRefusals(t *testing.T) {
	c := newController(t, controllertest.Options{})
	i := newIdentity(t, c, idWeb, "token-web", nil)

	c.FailCertificates(meshapi.ReasonInternal)
	err := i.Renew(t.Context())
	if ReasonOf(err) != meshapi.ReasonInternal || !strings.Contains(err.Error(), "failing as the test asked") {
		t.Errorf("controller failing: %v (reason %s)", err, ReasonOf(err))
	}
	c.FailCertificates("")

	// The token is read for every request.
	os.WriteFile(i.bootstrap.TokenFile, []byte("expired"), 0o600)
	if err := i.Renew(t.Context()); ReasonOf(err) != meshapi.ReasonUnauthenticated {
		t.Errorf("bad token: %v", err)
	}
	os.WriteFile(i.bootstrap.TokenFile, []byte("token-api"), 0o600)
	if err := i.Renew(t.Context()); ReasonOf(err) != meshapi.ReasonWrongIdentity {
		t.Errorf("another workload's token: %v", err)
	}
	os.Remove(i.bootstrap.TokenFile)
	if err := i.Renew(t.Context()); ReasonOf(err) != ReasonToken {
		t.Errorf("no token: %v", err)
	}
	os.WriteFile(i.bootstrap.TokenFile, []byte("token-web\n"), 0o600)
	if err := i.Renew(t.Context()); err != nil {
		t.Errorf("token refreshed: %v", err)
	}
	s := i.State()
	want := map[string]uint64{meshapi.ReasonInternal: 1, meshapi.ReasonUnauthenticated: 1, meshapi.ReasonWrongIdentity: 1, ReasonToken: 1}
	for r, n := range want {
		if s.FailuresTotal[r] != n {
			t.Errorf("failures[%s] = %d, want %d (%v)", r, s.FailuresTotal[r], n, s.FailuresTotal)
		}
	}
	if s.ConsecutiveFailures != 0 || s.RenewalsTotal != 1 {
		t.Errorf("state = %+v", s)
	}
}

func TestRefusesAControllerWithTheWrongIdentity(t *testing.T) {
	c := newController(t, controllertest.Options{PresentIdentity: "spiffe://cluster.local/ns/default/sa/impostor"})
	i := newIdentity(t, c, idWeb, "token-web", nil)
	err := i.Renew(t.Context())
	if err == nil || ReasonOf(err) != ReasonUnreachable || !strings.Contains(err.Error(), "impostor") {
		t.Fatalf("Renew = %v, want the impostor refused", err)
	}
	if c.Issued() != 0 {
		t.Error("the request (and its token) reached the impostor")
	}
}

func TestRefusesAControllerOfAnotherCA(t *testing.T) {
	c := newController(t, controllertest.Options{})
	other := newController(t, controllertest.Options{})
	i := newIdentity(t, c, idWeb, "token-web", func(o *Options) {
		o.Bootstrap.TrustAnchors = other.Bootstrap().TrustAnchors
	})
	if err := i.Renew(t.Context()); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("Renew = %v, want the controller refused", err)
	}
}

// handshake runs a client and a server handshake over loopback TCP and
// returns both sides' states. The server then writes a byte that the
// client reads, so that the client has processed the session tickets that
// precede it.
func handshake(client, server *tls.Config) (tls.ConnectionState, tls.ConnectionState, error) {
	a, b := tcpPair()
	defer a.Close()
	defer b.Close()
	cc, sc := tls.Client(a, client), tls.Server(b, server)
	errc := make(chan error, 1)
	go func() {
		err := sc.Handshake()
		if err == nil {
			_, err = sc.Write([]byte{1})
		}
		if err != nil {
			b.Close()
		}
		errc <- err
	}()
	cerr := cc.Handshake()
	if cerr == nil {
		_, cerr = io.ReadFull(cc, make([]byte, 1))
	}
	if cerr != nil {
		a.Close()
	}
	serr := <-errc
	return cc.ConnectionState(), sc.ConnectionState(), errors.Join(cerr, serr)
}

var loopback = sync.OnceValue(func() net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	return l
})

// tcpPair returns both ends of a loopback TCP connection. net.Pipe would
// do without the kernel, but it has no buffer, and TLS 1.3 has moments
// where both ends write at once.
func tcpPair() (net.Conn, net.Conn) {
	l := loopback()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		panic(err)
	}
	b, err := l.Accept()
	if err != nil {
		panic(err)
	}
	return a, b
}

func TestMutualTLSChecksTheExpectedIdentity(t *testing.T) {
	c := newController(t, controllertest.Options{})
	web := issued(t, c, idWeb, "token-web")
	api := issued(t, c, idAPI, "token-api")

	cs, ss, err := handshake(web.ClientConfig(idAPI, meshapi.ALPNHTTP2), api.ServerConfig())
	if err != nil {
		t.Fatalf("web -> api expecting api: %v", err)
	}
	if PeerIdentity(cs) != idAPI || PeerIdentity(ss) != idWeb {
		t.Errorf("peer identities: client sees %q, server sees %q", PeerIdentity(cs), PeerIdentity(ss))
	}
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != meshapi.ALPNHTTP2 {
		t.Errorf("version %x, ALPN %q", cs.Version, cs.NegotiatedProtocol)
	}

	_, _, err = handshake(web.ClientConfig(idDefault, meshapi.ALPNHTTP2), api.ServerConfig())
	if err == nil || !strings.Contains(err.Error(), `want "`+idDefault+`"`) {
		t.Fatalf("web -> api expecting another identity: %v, want refused", err)
	}
	// A resumed session is checked again: a ticket from the first
	// handshake does not let a client expecting another identity through.
	cfg := web.ClientConfig(idAPI, meshapi.ALPNHTTP2)
	if _, _, err := handshake(cfg, api.ServerConfig()); err != nil {
		t.Fatal(err)
	}
	cs, _, err = handshake(cfg, api.ServerConfig())
	if err != nil || !cs.DidResume {
		t.Fatalf("second handshake: resumed %v, %v", cs.DidResume, err)
	}
}

func TestRefusesAPeerOfAnotherCA(t *testing.T) {
	c := newController(t, controllertest.Options{})
	other := newController(t, controllertest.Options{Tokens: map[string]string{"token-api": idAPI}})
	web := issued(t, c, idWeb, "token-web")
	forged := issued(t, other, idAPI, "token-api") // the right name, the wrong CA
	api := issued(t, c, idAPI, "token-api")

	if _, _, err := handshake(web.ClientConfig(idAPI, ""), forged.ServerConfig()); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("client meeting a server of another CA: %v, want refused", err)
	}
	if _, _, err := handshake(forged.ClientConfig(idAPI, ""), api.ServerConfig()); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("server meeting a client of another CA: %v, want refused", err)
	}
	// A server refuses a client without a certificate.
	if _, _, err := handshake(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, api.ServerConfig()); err == nil {
		t.Error("server accepted a client without a certificate")
	}
}

func TestBundleRotationReachesTheConfigsInUse(t *testing.T) {
	c := newController(t, controllertest.Options{})
	other := newController(t, controllertest.Options{Tokens: map[string]string{"token-api": idAPI}})
	web := issued(t, c, idWeb, "token-web")
	moved := issued(t, other, idAPI, "token-api") // api moved to the new anchor
	cfg := web.ClientConfig(idAPI, "")

	if _, _, err := handshake(cfg, moved.ServerConfig()); err == nil {
		t.Fatal("accepted before the new anchor was in the bundle")
	}
	both := meshapi.Bundle{TrustDomain: td, Anchors: append(c.Bundle().Anchors, other.Bundle().Anchors...)}
	for _, i := range []*Identity{web, moved} {
		if err := i.Trust().SetBundle(both, 7); err != nil {
			t.Fatal(err)
		}
	}
	if web.ClientConfig(idAPI, "") != cfg {
		t.Error("the cached config was rebuilt for a bundle change")
	}
	if _, _, err := handshake(cfg, moved.ServerConfig()); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	if s := web.State(); s.Trust.Version != 7 || len(s.Trust.Anchors) != 2 {
		t.Errorf("trust state %+v", s.Trust)
	}
	// A later certificate's bundle does not undo discovery's.
	if err := web.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, v := web.Trust().Bundle(); v != 7 {
		t.Errorf("bundle version %d after a renewal, want discovery's 7", v)
	}
	// An invalid bundle is refused and the one in force stays.
	if err := web.Trust().SetBundle(meshapi.Bundle{TrustDomain: td, Anchors: []string{"junk"}}, 8); err == nil {
		t.Error("accepted a junk bundle")
	}
	if _, v := web.Trust().Bundle(); v != 7 {
		t.Errorf("bundle version %d after a junk bundle, want 7", v)
	}
}

// The last step of an anchor rotation removes the old anchor once every
// proxy holds a certificate of the new issuer. A TLS session from before,
// resumed now, carries the peers' old certificates, which the new bundle
// no longer verifies: such a session must not be offered or accepted, or
// the first connection after the rotation fails. The connection is made
// afresh instead, with the certificates in force.
func TestResumptionDoesNotOutliveTheAnchorOfItsCertificates(t *testing.T) {
	oldCA := newController(t, controllertest.Options{})
	newCA := newController(t, controllertest.Options{})
	both := meshapi.Bundle{TrustDomain: td, Anchors: append(oldCA.Bundle().Anchors, newCA.Bundle().Anchors...)}
	web := issued(t, oldCA, idWeb, "token-web")
	api := issued(t, oldCA, idAPI, "token-api")
	for _, i := range []*Identity{web, api} {
		if err := i.Trust().SetBundle(both, 2); err != nil {
			t.Fatal(err)
		}
	}
	cfg := web.ClientConfig(idAPI, meshapi.ALPNHTTP2)
	if _, _, err := handshake(cfg, api.ServerConfig()); err != nil {
		t.Fatal(err)
	}
	if cs, _, err := handshake(cfg, api.ServerConfig()); err != nil || !cs.DidResume {
		t.Fatalf("a session of the overlap: resumed %v, %v", cs.DidResume, err)
	}

	// Both renew with the new issuer (its certificates installed as a
	// renewal installs them), then the old anchor goes.
	web.cert.Store(issued(t, newCA, idWeb, "token-web").cert.Load())
	api.cert.Store(issued(t, newCA, idAPI, "token-api").cert.Load())
	only := meshapi.Bundle{TrustDomain: td, Anchors: newCA.Bundle().Anchors}
	for _, i := range []*Identity{web, api} {
		if err := i.Trust().SetBundle(only, 3); err != nil {
			t.Fatal(err)
		}
	}
	cs, ss, err := handshake(cfg, api.ServerConfig())
	if err != nil {
		t.Fatalf("first connection after the old anchor went: %v", err)
	}
	if cs.DidResume || !cs.PeerCertificates[0].Equal(api.Certificate()) || !ss.PeerCertificates[0].Equal(web.Certificate()) {
		t.Errorf("resumed %v; the peers did not see each other's new certificates", cs.DidResume)
	}
	// Sessions of the new bundle resume again.
	if cs, _, err := handshake(cfg, api.ServerConfig()); err != nil || !cs.DidResume {
		t.Errorf("a session of the new bundle: resumed %v, %v", cs.DidResume, err)
	}

	// A server that a client resumes with an old session (a client of
	// another implementation, or one that has not yet seen the new
	// bundle) declines the ticket and makes a full handshake.
	for _, i := range []*Identity{web, api} {
		if err := i.Trust().SetBundle(both, 4); err != nil {
			t.Fatal(err)
		}
	}
	plain := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(1),
		GetClientCertificate: web.getClientCertificate, NextProtos: []string{meshapi.ALPNHTTP2}}
	if _, _, err := handshake(plain, api.ServerConfig()); err != nil {
		t.Fatal(err)
	}
	if err := api.Trust().SetBundle(only, 5); err != nil {
		t.Fatal(err)
	}
	web.cert.Store(issued(t, oldCA, idWeb, "token-web").cert.Load()) // then refused in full
	if cs, _, err := handshake(plain, api.ServerConfig()); err == nil || cs.DidResume {
		t.Errorf("a session from the previous bundle: resumed %v, %v; want a full handshake that refuses the old certificate", cs.DidResume, err)
	}
}

// A proxy whose certificate the controller no longer trusts (its anchor
// was removed before it renewed) still renews with its token: the
// certificate request offers no client certificate.
func TestRenewsWhenTheControllerNoLongerTrustsItsCertificate(t *testing.T) {
	c := newController(t, controllertest.Options{})
	other := newController(t, controllertest.Options{Tokens: map[string]string{"token-web": idWeb}})
	web := issued(t, c, idWeb, "token-web")
	web.cert.Store(issued(t, other, idWeb, "token-web").cert.Load()) // of an anchor c does not trust
	web.client.CloseIdleConnections()                                // a renewal hours later makes a new connection
	if err := web.Renew(t.Context()); err != nil {
		t.Fatalf("renewing while holding a certificate the controller does not trust: %v", err)
	}
	if got := web.Certificate(); got.CheckSignatureFrom(c.CA.Issuer()) != nil {
		t.Error("the certificate held is not the controller's")
	}
}

func TestStateAndMetricsCarryNoKey(t *testing.T) {
	c := newController(t, controllertest.Options{})
	i := issued(t, c, idWeb, "token-web")
	c.FailCertificates(meshapi.ReasonInternal)
	i.Renew(t.Context()) // a failure, so LastError is filled too
	key := i.cert.Load().PrivateKey.(*ecdsa.PrivateKey)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(key)
	d := key.D.Bytes()
	secrets := map[string]string{
		"PEM header":   "PRIVATE KEY",
		"PKCS #8":      base64.StdEncoding.EncodeToString(der),
		"SEC 1":        base64.StdEncoding.EncodeToString(ecDER),
		"D, hex":       hex.EncodeToString(d),
		"D, base64":    base64.StdEncoding.EncodeToString(d),
		"D, base64url": base64.RawURLEncoding.EncodeToString(d),
		"D, decimal":   key.D.String(),
		"token":        "token-web",
	}
	state, err := json.Marshal(i.State())
	if err != nil {
		t.Fatal(err)
	}
	gauges, _ := json.Marshal(i.Gauges())
	for what, s := range secrets {
		for doc, out := range map[string][]byte{"state": state, "gauges": gauges} {
			if strings.Contains(string(out), s) {
				t.Errorf("the %s JSON contains the %s", doc, what)
			}
		}
	}
	// What is there: public metadata.
	for _, want := range []string{`"identity":"` + idWeb + `"`, `"notAfter"`, `"serialNumber"`, `"failuresTotal":{"internal":1}`} {
		if !strings.Contains(string(state), want) {
			t.Errorf("state lacks %s: %s", want, state)
		}
	}
}

func TestVerifiedChainsDoNotOutliveTheirBundleOrValidity(t *testing.T) {
	clock := newFakeClock(time.Now().Truncate(time.Second))
	c := newController(t, controllertest.Options{Clock: clock.Now, Lifetime: time.Hour})
	other := newController(t, controllertest.Options{Clock: clock.Now, Lifetime: time.Hour})
	web := newIdentity(t, c, idWeb, "token-web", func(o *Options) { o.Clock = clock })
	api := newIdentity(t, c, idAPI, "token-api", func(o *Options) { o.Clock = clock })
	for _, i := range []*Identity{web, api} {
		if err := i.Renew(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := handshake(web.ClientConfig(idAPI, ""), api.ServerConfig()); err != nil {
		t.Fatal(err)
	}
	// The bundle moves to another anchor: the chains verified under the
	// old one are not trusted any more.
	if err := web.Trust().SetBundle(*other.Bundle(), 2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(web.ClientConfig(idAPI, ""), api.ServerConfig()); err == nil {
		t.Fatal("a chain verified under the old bundle was still accepted")
	}
	if err := web.Trust().SetBundle(*c.Bundle(), 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(web.ClientConfig(idAPI, ""), api.ServerConfig()); err != nil {
		t.Fatal(err)
	}
	// A verified chain expires with its certificate: api renews, web
	// does not and is refused once its certificate is past NotAfter.
	clock.Advance(59 * time.Minute)
	if err := api.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := verifyAs(api, web); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	clock.Advance(2 * time.Minute)
	if err := verifyAs(api, web); err == nil {
		t.Fatal("an expired client certificate was accepted from the cache")
	}
}

// verifyAs runs the server's check of client's certificate directly: a
// handshake cannot offer an expired certificate, since GetClientCertificate
// refuses to.
func verifyAs(server, client *Identity) error {
	leaf := client.cert.Load().Leaf
	issuer, _ := x509.ParseCertificate(client.cert.Load().Certificate[1])
	return server.verifyPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, issuer}}, "", x509.ExtKeyUsageClientAuth)
}
