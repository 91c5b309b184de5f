package controlplane

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/controllertest"
)

// The link against the meshapi test controller (the real one is tested end
// to end in test/e2e): not ready until it holds a certificate, then every
// push and every address resolved on demand lands in the routing table;
// while the controller is away, Resolve fails at once and the table in
// force stays.
func TestLinkCompilesPushesIntoTheTable(t *testing.T) {
	ctl := controllertest.New(t, controllertest.Options{})
	store := &config.Store{}
	tbl, err := config.Parse([]byte("version: test\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store.Swap(tbl)
	l, err := New(Options{Bootstrap: ctl.Bootstrap(), Namespace: "default", ServiceAccount: "default", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	// The controller is away at first: no certificate, not ready.
	ctl.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if ok, reason := l.Ready(); ok || reason != "no mesh certificate" {
		t.Fatalf("ready without a certificate: %v %q", ok, reason)
	}
	// The test controller publishes its mesh settings and bundle from the
	// start: once it is back, the link gets both and is ready.
	ctl.Start()
	waitFor(t, "readiness", func() bool { ok, _ := l.Ready(); return ok })
	ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindMesh, Version: 2, Mesh: &meshapi.MeshSettings{TrustDomain: "cluster.local", InboundMTLS: meshapi.MTLSStrict}})
	waitFor(t, "the pushed mesh-wide mTLS mode", func() bool { return store.Load().InboundMTLS(8080) == meshapi.MTLSStrict })

	const vip = "10.96.0.12"
	ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindService, Name: "shop/web", Version: 3, Service: &meshapi.Service{
		Namespace: "shop", Name: "web", Addresses: []string{vip}, Ports: []meshapi.ServicePort{{Port: 80, TargetPort: 8080}}}})
	ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: "shop/web", Version: 4, Endpoints: &meshapi.Endpoints{Endpoints: []meshapi.Endpoint{
		{Address: "10.0.0.5", Meshed: true, Identity: "spiffe://cluster.local/ns/shop/sa/web"}}}})
	ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: vip + ":80", Version: 5, Resolution: &meshapi.Resolution{Address: vip + ":80", Service: "shop/web"}})
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	dst := netip.MustParseAddrPort(vip + ":80")
	svc, err := l.Resolve(rctx, dst)
	if err != nil || svc != "shop/web" {
		t.Fatalf("Resolve: %q %v", svc, err)
	}
	tg := store.Load().Target(dst)
	if tg == nil || len(tg.Endpoints) != 1 || tg.Endpoints[0].Address() != "10.0.0.5:8080" || !tg.Endpoints[0].Meshed {
		t.Fatalf("the resolved service is not in the table: %+v", tg)
	}

	ctl.Stop()
	waitFor(t, "the disconnection", func() bool { return !l.Discovery().Connected })
	if _, err := l.Resolve(rctx, netip.MustParseAddrPort("10.96.0.13:80")); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Resolve while the controller is away: %v, want ErrDisconnected at once", err)
	}
	if store.Load().Target(dst) == nil {
		t.Error("the table lost the service when the controller went away")
	}
	if ok, _ := l.Ready(); !ok {
		t.Error("losing the controller made the proxy unready")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
