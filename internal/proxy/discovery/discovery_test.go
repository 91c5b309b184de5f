// The tests run against controllertest, a small controller in this
// repository that speaks the meshapi contract (certificate issuance from a
// test CA of internal/pki, the discovery stream), over TLS 1.3 and HTTP/2
// on loopback. The real controller is being built in parallel; the
// end-to-end tests against it come when both are merged.
package discovery

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/controllertest"
	"github.com/meshctl/mesh/internal/proxy/identity"
)

const (
	idWeb = "spiffe://cluster.local/ns/shop/sa/web"
	idAPI = "spiffe://cluster.local/ns/shop/sa/api"
)

type fixture struct {
	// compiled is what OnUpdate last stored, after a delay that stands
	// for the proxy's compile.
	compiled atomic.Pointer[meshapi.Set]
	c        *controllertest.Controller
	id       *identity.Identity
	client   *Client
	updates  chan *meshapi.Set
	cancel   context.CancelFunc
	done     chan error
}

func newController(t testing.TB) *controllertest.Controller {
	return controllertest.New(t, controllertest.Options{Tokens: map[string]string{"token-web": idWeb, "token-api": idAPI}})
}

func newIdentity(t testing.TB, c *controllertest.Controller, id, token string) *identity.Identity {
	t.Helper()
	b := c.Bootstrap()
	b.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(b.TokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	i, err := identity.New(identity.Options{Bootstrap: b, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := i.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	return i
}

// start makes the web workload's identity and discovery client against c;
// before, if set, runs before the client's Run.
func start(t testing.TB, c *controllertest.Controller, before func(*Client)) *fixture {
	t.Helper()
	f := &fixture{c: c, updates: make(chan *meshapi.Set, 1000), done: make(chan error, 1)}
	f.id = newIdentity(t, c, idWeb, "token-web")
	var err error
	f.client, err = New(Options{
		Bootstrap: c.Bootstrap(),
		TLSConfig: f.id.ControllerConfig("h2"),
		Trust:     f.id.Trust(),
		Hello:     meshapi.Hello{ProxyVersion: "test", Namespace: "shop", Pod: "web-1"},
		OnUpdate: func(s *meshapi.Set) {
			time.Sleep(time.Millisecond)
			f.compiled.Store(s)
			f.updates <- s
		},
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(f.client)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- f.client.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	})
	return f
}

// waitAck waits for the ACK or NACK of one version.
func (f *fixture) waitAck(t testing.TB, kind meshapi.Kind, name string, version uint64) meshapi.Ack {
	t.Helper()
	var got meshapi.Ack
	f.c.WaitFor(t, string(kind)+" "+name+" ack", func(recs []controllertest.Record) bool {
		for _, a := range controllertest.Acks(recs, kind, name) {
			if a.Version == version {
				got = a
				return true
			}
		}
		return false
	})
	return got
}

func waitState(t *testing.T, c *Client, what string, cond func(adminapi.Discovery) bool) adminapi.Discovery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := c.State()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; state %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func service(name string, addr string, port uint16) meshapi.ServerMessage {
	ns, n, _ := strings.Cut(name, "/")
	return meshapi.ServerMessage{Kind: meshapi.KindService, Name: name, Version: 1, Service: &meshapi.Service{
		Namespace: ns, Name: n, Addresses: []string{addr}, Ports: []meshapi.ServicePort{{Port: port, TargetPort: 8080}},
	}}
}

func endpoints(name string, version uint64, addrs ...string) meshapi.ServerMessage {
	m := meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: name, Version: version, Endpoints: &meshapi.Endpoints{Endpoints: []meshapi.Endpoint{}}}
	for _, a := range addrs {
		m.Endpoints.Endpoints = append(m.Endpoints.Endpoints, meshapi.Endpoint{Address: a, Meshed: true, Identity: idAPI})
	}
	return m
}

func addresses(s *meshapi.Set, name string) []string {
	st := s.Services[name]
	if st == nil {
		return nil
	}
	var out []string
	for _, e := range st.Endpoints {
		out = append(out, e.Address)
	}
	slices.Sort(out)
	return out
}

func TestHelloSubscribeApplyAck(t *testing.T) {
	c := newController(t)
	c.Publish(service("shop/api", "10.96.0.12", 80))
	c.Publish(endpoints("shop/api", 1, "10.0.0.1"))
	f := start(t, c, func(cl *Client) { cl.Subscribe("shop/api") })

	for _, a := range []struct {
		kind meshapi.Kind
		name string
	}{{meshapi.KindMesh, ""}, {meshapi.KindBundle, ""}, {meshapi.KindService, "shop/api"}, {meshapi.KindEndpoints, "shop/api"}} {
		if ack := f.waitAck(t, a.kind, a.name, 1); ack.Error != "" {
			t.Fatalf("%s %s NACKed: %s", a.kind, a.name, ack.Error)
		}
	}
	recs := c.Records()
	if h := recs[0].Msg.Hello; h == nil || h.APIVersion != meshapi.APIVersion || h.Pod != "web-1" {
		t.Fatalf("first message %+v, want the hello", recs[0].Msg)
	}
	if s := recs[1].Msg.Subscribe; s == nil || !slices.Equal(s.Services, []string{"shop/api"}) {
		t.Fatalf("second message %+v, want the subscription", recs[1].Msg)
	}
	if recs[0].Peer != idWeb {
		t.Errorf("the controller saw %q, want the mesh certificate's %q", recs[0].Peer, idWeb)
	}
	set := f.client.Set()
	if set.Mesh.TrustDomain != "cluster.local" || set.BundleVersion != 1 || !slices.Equal(addresses(set, "shop/api"), []string{"10.0.0.1"}) {
		t.Fatalf("set %+v", set)
	}

	// A new version, then a delta from it.
	c.Publish(endpoints("shop/api", 2, "10.0.0.1", "10.0.0.2"))
	f.waitAck(t, meshapi.KindEndpoints, "shop/api", 2)
	c.Send(meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: "shop/api", Version: 3, EndpointsDelta: &meshapi.EndpointsDelta{
		Base: 2, Remove: []string{"10.0.0.1"}, Upsert: []meshapi.Endpoint{{Address: "10.0.0.3"}},
	}})
	if ack := f.waitAck(t, meshapi.KindEndpoints, "shop/api", 3); ack.Error != "" {
		t.Fatalf("delta NACKed: %s", ack.Error)
	}
	if got := addresses(f.client.Set(), "shop/api"); !slices.Equal(got, []string{"10.0.0.2", "10.0.0.3"}) {
		t.Fatalf("after the delta: %v", got)
	}
	// Every applied version reached OnUpdate, the last one last.
	var last *meshapi.Set
	for len(f.updates) > 0 {
		last = <-f.updates
	}
	if last != f.client.Set() {
		t.Error("OnUpdate did not get the last set")
	}
	s := f.client.State()
	if !s.Connected || s.Controller != c.Bootstrap().Address || s.LastUpdate.IsZero() || s.NACKsTotal != 0 {
		t.Errorf("state %+v", s)
	}
	want := []adminapi.Resource{{Kind: "Bundle", Version: 1}, {Kind: "Endpoints", Name: "shop/api", Version: 3}, {Kind: "Mesh", Version: 1}, {Kind: "Service", Name: "shop/api", Version: 1}}
	if !slices.Equal(s.Resources, want) {
		t.Errorf("resources %+v, want %+v", s.Resources, want)
	}
}

func TestBadVersionsAreNACKedAndTheLastGoodSetKept(t *testing.T) {
	c := newController(t)
	c.Publish(service("shop/api", "10.96.0.12", 80))
	c.Publish(endpoints("shop/api", 2, "10.0.0.1"))
	f := start(t, c, func(cl *Client) { cl.Subscribe("shop/api") })
	f.waitAck(t, meshapi.KindEndpoints, "shop/api", 2)
	good := f.client.Set()

	c.Send(endpoints("shop/api", 3, "not-an-address"))
	ack := f.waitAck(t, meshapi.KindEndpoints, "shop/api", 3)
	if !strings.Contains(ack.Error, "not an IP address") {
		t.Fatalf("invalid endpoints: ack %+v, want a NACK saying why", ack)
	}
	c.Send(meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: "shop/api", Version: 4, EndpointsDelta: &meshapi.EndpointsDelta{Base: 3, Upsert: []meshapi.Endpoint{{Address: "10.0.0.9"}}}})
	ack = f.waitAck(t, meshapi.KindEndpoints, "shop/api", 4)
	if !strings.Contains(ack.Error, meshapi.ErrDeltaBase.Error()) {
		t.Fatalf("delta from a version not held: ack %+v, want a NACK", ack)
	}
	if f.client.Set() != good {
		t.Fatal("a refused version changed the set")
	}
	s := f.client.State()
	if s.NACKsTotal != 2 || !strings.Contains(s.LastNACK, "delta") || !s.Connected {
		t.Errorf("state %+v", s)
	}
	// The controller answers a NACK with the whole set; it applies.
	c.Publish(endpoints("shop/api", 5, "10.0.0.9"))
	if ack := f.waitAck(t, meshapi.KindEndpoints, "shop/api", 5); ack.Error != "" {
		t.Fatal(ack.Error)
	}
}

func TestResolveOnDemand(t *testing.T) {
	c := newController(t)
	c.Publish(service("shop/api", "10.96.0.12", 80))
	c.Publish(endpoints("shop/api", 1, "10.0.0.1"))
	c.Publish(meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: "10.96.0.12:80", Version: 1, Resolution: &meshapi.Resolution{Address: "10.96.0.12:80", Service: "shop/api"}})
	f := start(t, c, nil)
	f.waitAck(t, meshapi.KindBundle, "", 1)

	// Concurrent callers share one subscription and all get the answer,
	// after OnUpdate was given a set that holds the service.
	c.HoldResolutions(true)
	addr := netip.MustParseAddrPort("10.96.0.12:80")
	var wg sync.WaitGroup
	results := make(chan string, 5)
	for range 5 {
		wg.Go(func() {
			svc, err := f.client.Resolve(t.Context(), addr)
			if err != nil {
				t.Error(err)
			}
			if addresses(f.compiled.Load(), svc) == nil {
				t.Error("Resolve returned before the proxy compiled the service's endpoints")
			}
			results <- svc
		})
	}
	waitState(t, f.client, "the address pending", func(s adminapi.Discovery) bool {
		return slices.Equal(s.PendingAddresses, []string{"10.96.0.12:80"})
	})
	time.Sleep(20 * time.Millisecond) // let every caller reach its wait
	c.HoldResolutions(false)
	wg.Wait()
	close(results)
	for svc := range results {
		if svc != "shop/api" {
			t.Errorf("Resolve = %q, want shop/api", svc)
		}
	}
	if n := addressSubscriptions(c.Records(), "10.96.0.12:80"); n != 1 {
		t.Errorf("%d subscriptions for the address, want 1", n)
	}

	// No service owns this one: a negative answer, cached.
	other := netip.MustParseAddrPort("10.96.0.99:443")
	for range 2 {
		svc, err := f.client.Resolve(t.Context(), other)
		if err != nil || svc != "" {
			t.Fatalf("Resolve(unowned) = %q, %v", svc, err)
		}
	}
	if n := addressSubscriptions(c.Records(), "10.96.0.99:443"); n != 1 {
		t.Errorf("%d subscriptions for the unowned address, want 1", n)
	}
	// Until the resolution's next version says otherwise.
	c.Publish(meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: "10.96.0.99:443", Version: 2, Resolution: &meshapi.Resolution{Address: "10.96.0.99:443", Service: "shop/api"}})
	f.waitAck(t, meshapi.KindResolution, "10.96.0.99:443", 2)
	if svc, err := f.client.Resolve(t.Context(), other); err != nil || svc != "shop/api" {
		t.Fatalf("after the new version: %q, %v", svc, err)
	}

	// A caller's context bounds the wait; the subscription stays.
	c.HoldResolutions(true)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	slow := netip.MustParseAddrPort("[fd00::1]:80")
	if _, err := f.client.Resolve(ctx, slow); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resolve with a short deadline = %v", err)
	}
	c.HoldResolutions(false)
	if svc, err := f.client.Resolve(t.Context(), slow); err != nil || svc != "" {
		t.Fatalf("Resolve(%s) later = %q, %v", slow, svc, err)
	}
}

func TestResolveIsBounded(t *testing.T) {
	c := newController(t)
	f := start(t, c, func(cl *Client) { cl.opts.MaxAddresses = 2 })
	for _, a := range []string{"10.96.0.1:80", "10.96.0.2:80"} {
		if _, err := f.client.Resolve(t.Context(), netip.MustParseAddrPort(a)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.client.Resolve(t.Context(), netip.MustParseAddrPort("10.96.0.3:80")); !errors.Is(err, ErrTooManyAddresses) {
		t.Fatalf("a third address: %v, want ErrTooManyAddresses", err)
	}
	// Addresses already held still answer.
	if _, err := f.client.Resolve(t.Context(), netip.MustParseAddrPort("10.96.0.1:80")); err != nil {
		t.Fatal(err)
	}
}

func addressSubscriptions(recs []controllertest.Record, addr string) int {
	n := 0
	for _, r := range recs {
		if s := r.Msg.Subscribe; s != nil && slices.Contains(s.Addresses, addr) {
			n++
		}
	}
	return n
}

func TestReconnectKeepsTheSetAndResubscribes(t *testing.T) {
	c := newController(t)
	c.Publish(service("shop/api", "10.96.0.12", 80))
	c.Publish(endpoints("shop/api", 1, "10.0.0.1"))
	f := start(t, c, func(cl *Client) { cl.Subscribe("shop/api") })
	f.waitAck(t, meshapi.KindEndpoints, "shop/api", 1)
	if svc, err := f.client.Resolve(t.Context(), netip.MustParseAddrPort("10.96.0.50:80")); err != nil || svc != "" {
		t.Fatal(svc, err)
	}

	c.Stop()
	s := waitState(t, f.client, "disconnected", func(s adminapi.Discovery) bool { return !s.Connected && s.LastStreamError != "" })
	if got := addresses(f.client.Set(), "shop/api"); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("the set was lost with the controller: %v", got)
	}
	// Subscriptions made while disconnected go with the next stream.
	f.client.Subscribe("shop/db")
	c.Publish(endpoints("shop/api", 2, "10.0.0.2")) // changed while the proxy was away
	c.Start()

	recs := c.WaitFor(t, "the second stream's subscription", func(recs []controllertest.Record) bool {
		for _, r := range recs {
			if r.Stream == 2 && r.Msg.Subscribe != nil {
				return true
			}
		}
		return false
	})
	var second []meshapi.ClientMessage
	for _, r := range recs {
		if r.Stream == 2 {
			second = append(second, r.Msg)
		}
	}
	if second[0].Hello == nil {
		t.Fatalf("the second stream opened with %+v, want a hello", second[0])
	}
	sub := second[1].Subscribe
	if !slices.Equal(sub.Services, []string{"shop/api", "shop/db"}) || !slices.Equal(sub.Addresses, []string{"10.96.0.50:80"}) {
		t.Fatalf("resubscription %+v", sub)
	}
	f.waitAck(t, meshapi.KindEndpoints, "shop/api", 2)
	if got := addresses(f.client.Set(), "shop/api"); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("after reconnecting: %v", got)
	}
	s = waitState(t, f.client, "connected", func(s adminapi.Discovery) bool { return s.Connected })
	if s.Reconnects != 1 {
		t.Errorf("reconnects %d, want 1", s.Reconnects)
	}
}

func TestAStreamWithoutACertificateIsRefusedThenRetried(t *testing.T) {
	c := newController(t)
	b := c.Bootstrap()
	b.TokenFile = filepath.Join(t.TempDir(), "token")
	os.WriteFile(b.TokenFile, []byte("token-web"), 0o600)
	id, err := identity.New(identity.Options{Bootstrap: b, ID: idWeb})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := New(Options{Bootstrap: b, TLSConfig: id.ControllerConfig("h2"), Trust: id.Trust(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitState(t, cl, "the refusal", func(s adminapi.Discovery) bool {
		return strings.Contains(s.LastStreamError, meshapi.ReasonUnauthenticated)
	})
	if err := id.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The next stream, with the certificate, gets the mesh settings and
	// the bundle.
	waitState(t, cl, "connected", func(s adminapi.Discovery) bool { return s.Connected && len(s.Resources) == 2 })
}

func TestBundleRotationReachesTheTrustPool(t *testing.T) {
	c := newController(t)
	other := controllertest.New(t, controllertest.Options{Tokens: map[string]string{"token-api": idAPI}})
	f := start(t, c, nil)
	f.waitAck(t, meshapi.KindBundle, "", 1)
	api := newIdentity(t, other, idAPI, "token-api") // a workload under the new anchor

	if err := dial(f.id, api); err == nil {
		t.Fatal("a peer of the new anchor was accepted before the bundle had it")
	}
	both := meshapi.Bundle{TrustDomain: "cluster.local", Anchors: append(c.Bundle().Anchors, other.Bundle().Anchors...)}
	c.Publish(meshapi.ServerMessage{Kind: meshapi.KindBundle, Version: 2, Bundle: &both})
	if ack := f.waitAck(t, meshapi.KindBundle, "", 2); ack.Error != "" {
		t.Fatal(ack.Error)
	}
	if b, v := f.id.Trust().Bundle(); v != 2 || len(b.Anchors) != 2 {
		t.Fatalf("trust holds version %d with %d anchors", v, len(b.Anchors))
	}
	api.Trust().SetBundle(both, 2) // the peer's own discovery would do this
	if err := dial(f.id, api); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}

	// A bundle the trust refuses is NACKed and the one in force stays.
	bad := meshapi.Bundle{TrustDomain: "cluster.local", Anchors: []string{string(c.CA.IssuerCertPEM) + string(c.CA.IssuerCertPEM)}}
	c.Publish(meshapi.ServerMessage{Kind: meshapi.KindBundle, Version: 3, Bundle: &bad})
	if ack := f.waitAck(t, meshapi.KindBundle, "", 3); ack.Error == "" {
		t.Fatal("a bundle with two certificates in one anchor was ACKed")
	}
	if _, v := f.id.Trust().Bundle(); v != 2 {
		t.Fatalf("trust version %d after a refused bundle, want 2", v)
	}
}

// dial makes a mesh TLS connection from client to server over loopback.
func dial(client, server *identity.Identity) error {
	l, err := tlsListen(server)
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err == nil {
			conn.Write([]byte{1})
			conn.Close()
		}
	}()
	return tlsDial(l.Addr().String(), client.ClientConfig(server.ID(), meshapi.ALPNHTTP1))
}
