// Package controlplane is the sidecar's link to the controller: it holds
// the proxy's mesh identity (internal/proxy/identity), runs the discovery
// client (internal/proxy/discovery), and compiles every Set the controller
// pushes into the routing table. The data path calls it for mesh TLS
// (ClientTLS, ServerTLS) and to resolve a virtual address it does not know
// (Resolve).
//
// A proxy that loses the controller keeps its last table and its
// certificate until that expires; the discovery client reconnects on its
// own.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/discovery"
	"github.com/meshctl/mesh/internal/proxy/identity"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// Options configure a Link.
type Options struct {
	// Bootstrap is how to reach the controller (the configuration file's
	// controller key).
	Bootstrap meshapi.Bootstrap
	// Namespace and ServiceAccount make the workload's SPIFFE id; Pod is
	// for the controller's diagnosis only.
	Namespace, ServiceAccount, Pod string
	// ProxyVersion is sent in the discovery stream's hello.
	ProxyVersion string
	// Store receives every pushed Set, compiled with the local settings
	// of the table in force.
	Store *config.Store
	Log   *slog.Logger
}

// Link is a running connection to the controller.
type Link struct {
	store *config.Store
	log   *slog.Logger
	id    *identity.Identity
	disc  *discovery.Client

	mu     sync.Mutex
	pushed bool // a Set with the mesh settings and bundle has been applied
}

// New builds the identity and the discovery client; Run starts them.
func New(o Options) (*Link, error) {
	if o.Store == nil || o.Store.Load() == nil {
		return nil, errors.New("linking to the controller: no configuration loaded")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, err := identity.New(identity.Options{
		Bootstrap:      o.Bootstrap,
		Namespace:      o.Namespace,
		ServiceAccount: o.ServiceAccount,
		Log:            log.With("component", "identity"),
	})
	if err != nil {
		return nil, fmt.Errorf("linking to the controller: %w", err)
	}
	l := &Link{store: o.Store, log: log, id: id}
	l.disc, err = discovery.New(discovery.Options{
		Bootstrap: o.Bootstrap,
		TLSConfig: id.ControllerConfig("h2"),
		Trust:     id.Trust(),
		Hello:     meshapi.Hello{ProxyVersion: o.ProxyVersion, Namespace: o.Namespace, Pod: o.Pod},
		OnUpdate:  l.apply,
		Log:       log.With("component", "discovery"),
	})
	if err != nil {
		return nil, fmt.Errorf("linking to the controller: %w", err)
	}
	return l, nil
}

// apply compiles a pushed Set into the routing table. The services of the
// configuration file are replaced by the pushed ones: with a controller,
// discovery is the source of truth.
func (l *Link) apply(set *meshapi.Set) {
	t := l.store.Push(set, "controller")
	l.mu.Lock()
	first := !l.pushed && set.MeshVersion > 0 && set.BundleVersion > 0
	if first {
		l.pushed = true
	}
	l.mu.Unlock()
	if first {
		l.log.Info("received the mesh configuration", "trust_domain", set.Mesh.TrustDomain, "inbound_mtls", string(t.InboundMTLS(0)))
	}
}

// Run obtains and renews the certificate and keeps the discovery stream
// open until ctx ends. Discovery starts once the first certificate is
// held, since the stream is authenticated by it.
func (l *Link) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- l.id.Run(ctx) }()
	select {
	case <-l.id.Ready():
	case <-ctx.Done():
		return <-errc
	}
	go func() { errc <- l.disc.Run(ctx) }()
	err := <-errc
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Ready reports whether the proxy can take part in the mesh: it holds a
// valid certificate and the controller's mesh settings and bundle.
func (l *Link) Ready() (bool, string) {
	if !l.id.State().Ready {
		return false, "no mesh certificate"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.pushed {
		return false, "no configuration from the controller"
	}
	return true, ""
}

// ClientTLS is the mesh TLS configuration to a server that must present
// identity, with the ALPN protocol alpn (proxy.Options.ClientTLS).
func (l *Link) ClientTLS(identity, alpn string) *tls.Config {
	return l.id.ClientConfig(identity, alpn)
}

// ServerTLS is the inbound mesh TLS configuration (proxy.Options.ServerTLS).
func (l *Link) ServerTLS() *tls.Config { return l.id.ServerConfig() }

// Resolve asks the controller which service owns a virtual address the
// proxy met and does not know, and waits until that service's endpoints
// are in the routing table (proxy.Options.Resolve).
// While the controller is away it fails at once: the proxy then treats the
// address as unknown (passes it through) rather than delaying every new
// destination.
func (l *Link) Resolve(ctx context.Context, addr netip.AddrPort) (string, error) {
	if !l.disc.Connected() {
		return "", ErrDisconnected
	}
	return l.disc.Resolve(ctx, addr)
}

// ErrDisconnected is Resolve's answer while no stream to the controller
// is open.
var ErrDisconnected = errors.New("not connected to the controller")

// Set is the last Set the controller pushed.
func (l *Link) Set() *meshapi.Set { return l.disc.Set() }

// Identity and Discovery are the admin API's documents.
func (l *Link) Identity() adminapi.Identity   { return l.id.State() }
func (l *Link) Discovery() adminapi.Discovery { return l.disc.State() }

// Gauges are the identity's and the discovery client's metrics.
func (l *Link) Gauges() []metrics.Gauge {
	return append(l.id.Gauges(), l.disc.Gauges()...)
}
