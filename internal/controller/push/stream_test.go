package push

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/controller/registry"
	"github.com/meshctl/mesh/internal/meshapi"
)

// These tests feed the Sink directly and speak to the handler over real
// TLS with HTTP/2, as proxies will; kube_test.go does the same with the
// registry fed by the real API server.

func hasService(name string) func(*meshapi.Set, []*meshapi.ServerMessage) bool {
	return func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		st := set.Services[name]
		return st != nil && st.Service != nil && st.Endpoints != nil
	}
}

func TestStreamByAddress(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{})
	srv := ca.serve(t, s.Handler())
	s.UpsertService("shop/web", webSvc)
	s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2"))

	p := ca.connect(t, srv, "client", nil)
	if err := p.subscribe(nil, []string{"10.96.0.12:80", "10.96.0.99:80"}); err != nil {
		t.Fatal(err)
	}
	err := p.wait(5*time.Second, "resolution, service, endpoints, mesh and bundle", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		return set.Resolutions["10.96.0.12:80"].Service == "shop/web" && hasService("shop/web")(set, nil) &&
			set.MeshVersion != 0 && set.BundleVersion != 0
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := p.set.Resolutions["10.96.0.99:80"]; !ok || r.Service != "" {
		t.Errorf("unowned address: %+v %v, want a resolution to no service", r, ok)
	}

	// The unowned address gets a service later: the proxy hears of it and
	// is subscribed to it.
	s.UpsertService("shop/api", &meshapi.Service{Namespace: "shop", Name: "api", Addresses: []string{"10.96.0.99"},
		Ports: []meshapi.ServicePort{{Name: "grpc", Port: 80, TargetPort: 9000, Protocol: meshapi.ProtocolGRPC}}})
	s.UpsertEndpoints("shop/api", eps("10.244.0.7"))
	if err := p.wait(5*time.Second, "the new owner", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		return set.Resolutions["10.96.0.99:80"].Service == "shop/api" && hasService("shop/api")(set, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if s.Metrics().Proxies() != 1 {
		t.Errorf("%d proxies connected, want 1", s.Metrics().Proxies())
	}
}

func TestStreamNACK(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{})
	srv := ca.serve(t, s.Handler())
	s.UpsertService("shop/web", webSvc)
	s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2"))

	var refused atomic.Bool
	p := ca.connect(t, srv, "client", func(p *proxy) {
		p.Refuse = func(m *meshapi.ServerMessage) string {
			if m.Kind == meshapi.KindEndpoints && refused.CompareAndSwap(false, true) {
				return "endpoints[0]: not today"
			}
			return ""
		}
	})
	p.subscribe([]string{"shop/web"}, nil)
	if err := p.wait(5*time.Second, "the service", func(set *meshapi.Set, ms []*meshapi.ServerMessage) bool {
		return set.Services["shop/web"] != nil && set.Services["shop/web"].Service != nil && refused.Load()
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Metrics().Nacks(meshapi.KindEndpoints) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Metrics().Nacks(meshapi.KindEndpoints); n != 1 {
		t.Fatalf("%d NACKs counted, want 1", n)
	}
	// The stream keeps serving: the next version arrives (in full, as the
	// proxy holds no endpoints to apply a delta to).
	s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2", "10.244.0.3"))
	if err := p.wait(5*time.Second, "the next version", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		st := set.Services["shop/web"]
		return st != nil && len(st.Endpoints) == 3
	}); err != nil {
		t.Fatal(err)
	}
}

func manyEndpoints(n, variant int) []meshapi.Endpoint {
	out := make([]meshapi.Endpoint, n)
	for i := range out {
		out[i] = ep(fmt.Sprintf("10.%d.%d.%d", 100+variant, i/250, i%250+1))
	}
	return out
}

// A proxy that stops reading fills its stream's flow-control window; the
// others keep getting every change at once, and when it reads again it
// gets the newest version rather than every one it missed.
func TestSlowSubscriber(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{})
	srv := ca.serve(t, s.Handler())
	s.UpsertService("shop/web", webSvc)
	s.UpsertEndpoints("shop/web", manyEndpoints(5000, 0))

	release := make(chan struct{})
	slow := ca.connect(t, srv, "slow", func(p *proxy) { p.Gate.Store(&release) })
	close(release) // let it read the first batch
	slow.subscribe([]string{"shop/web"}, nil)
	if err := slow.wait(10*time.Second, "the first version", hasService("shop/web")); err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	slow.Gate.Store(&stuck) // from the next message on, it reads nothing

	var fast []*proxy
	for i := range 3 {
		p := ca.connect(t, srv, fmt.Sprintf("fast-%d", i), nil)
		p.subscribe([]string{"shop/web"}, nil)
		if err := p.wait(10*time.Second, "the first version", hasService("shop/web")); err != nil {
			t.Fatal(err)
		}
		fast = append(fast, p)
	}

	// Each version replaces every endpoint (about 600 KB), so the slow
	// stream's window fills after a few.
	const versions = 20
	before := len(slow.messages())
	for v := 1; v <= versions; v++ {
		s.UpsertEndpoints("shop/web", manyEndpoints(5000, v))
		want := fmt.Sprintf("10.%d.0.1", 100+v)
		start := time.Now()
		for _, p := range fast {
			if err := p.wait(5*time.Second, fmt.Sprintf("version %d", v), func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
				return set.Services["shop/web"].Endpoints[0].Address == want
			}); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("version %d reached the fast proxies in %s", v, time.Since(start))
	}
	if got := len(slow.messages()) - before; got > 1 {
		t.Errorf("the stuck proxy read %d messages", got)
	}
	close(stuck)
	final := fmt.Sprintf("10.%d.0.1", 100+versions)
	if err := slow.wait(20*time.Second, "the newest version", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		st := set.Services["shop/web"]
		return st != nil && len(st.Endpoints) > 0 && st.Endpoints[0].Address == final
	}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range slow.messages() {
		if m.Kind == meshapi.KindEndpoints {
			n++
		}
	}
	if n >= versions+1 {
		t.Errorf("the slow proxy got %d endpoint versions of %d: nothing was coalesced", n, versions+1)
	}
	t.Logf("the slow proxy got %d of %d endpoint versions", n, versions+1)
}

// Local mode: the file registry feeds the same server.
func TestFileRegistryFeedsTheStream(t *testing.T) {
	dir := t.TempDir()
	const web = "namespace: shop\nname: web\naddresses: [10.96.0.12]\nports: [{name: http, port: 80, targetPort: 8080}]\n" +
		"endpoints:\n  - {address: 10.244.0.5, meshed: true, identity: \"spiffe://cluster.local/ns/shop/sa/web\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(web), 0o644); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	s := startServer(t, ca, Options{})
	reg := &registry.File{Dir: dir, PollInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reg.Run(ctx, s)
	srv := ca.serve(t, s.Handler())
	p := ca.connect(t, srv, "client", nil)
	p.subscribe(nil, []string{"10.96.0.12:80"})
	if err := p.wait(5*time.Second, "the file's service", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		st := set.Services["shop/web"]
		return st != nil && st.Service != nil && len(st.Endpoints) == 1 && st.Endpoints[0].Meshed
	}); err != nil {
		t.Fatal(err)
	}
}

// A proxy that reads nothing for the write timeout is disconnected rather
// than holding its stream for ever; the others keep theirs.
func TestStuckProxyIsDisconnected(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{WriteTimeout: 300 * time.Millisecond})
	srv := ca.serve(t, s.Handler())
	s.UpsertService("shop/web", webSvc)
	s.UpsertEndpoints("shop/web", manyEndpoints(5000, 0))

	release := make(chan struct{})
	stuckProxy := ca.connect(t, srv, "stuck", func(p *proxy) { p.Gate.Store(&release) })
	close(release)
	stuckProxy.subscribe([]string{"shop/web"}, nil)
	if err := stuckProxy.wait(10*time.Second, "the first version", hasService("shop/web")); err != nil {
		t.Fatal(err)
	}
	healthy := ca.connect(t, srv, "healthy", nil)
	healthy.subscribe([]string{"shop/web"}, nil)
	if err := healthy.wait(10*time.Second, "the first version", hasService("shop/web")); err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	defer close(stuck)
	stuckProxy.Gate.Store(&stuck)
	for v := 1; s.Metrics().Proxies() > 1; v++ {
		if v > 40 {
			t.Fatalf("the stuck proxy is still connected after %d versions of about 600 KB", v)
		}
		s.UpsertEndpoints("shop/web", manyEndpoints(5000, v))
		time.Sleep(100 * time.Millisecond)
	}
	want := "10.101.0.1"
	if err := healthy.wait(5*time.Second, "a newer version", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		st := set.Services["shop/web"]
		return st != nil && len(st.Endpoints) > 0 && st.Endpoints[0].Address >= want
	}); err != nil {
		t.Fatal(err)
	}
}

// The write timeout bounds one write, not the stream: a proxy that reads
// everything keeps its stream through a quiet spell longer than the
// timeout. (HTTP/2 resets a stream whose write deadline passes, even
// while its handler waits for something to write.)
func TestQuietStreamOutlivesTheWriteTimeout(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{WriteTimeout: 300 * time.Millisecond})
	srv := ca.serve(t, s.Handler())
	s.UpsertService("shop/web", webSvc)
	s.UpsertEndpoints("shop/web", eps("10.244.0.1"))
	p := ca.connect(t, srv, "quiet", nil)
	p.subscribe([]string{"shop/web"}, nil)
	if err := p.wait(5*time.Second, "the first version", hasService("shop/web")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := s.Metrics().Proxies(); n != 1 {
		t.Fatalf("%d proxies connected after a quiet second, want 1", n)
	}
	s.UpsertEndpoints("shop/web", eps("10.244.0.2"))
	if err := p.wait(5*time.Second, "the update after the quiet spell", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
		st := set.Services["shop/web"]
		return st != nil && len(st.Endpoints) == 1 && st.Endpoints[0].Address == "10.244.0.2"
	}); err != nil {
		t.Fatal(err)
	}
}
