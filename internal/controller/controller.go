// Package controller is the control plane process (cmd/meshcontroller):
// it runs the mesh's control-plane components side by side and serves their
// readiness, liveness and metrics on one admin endpoint.
//
// Today the components are the MeshConfig watcher (meshconfigwatch), the
// proxy injector's admission webhook (webhook) with its reloading serving
// certificate (servingcert), identity issuance (identity) and discovery:
// the Kubernetes registry (registry) feeding the discovery stream server
// (push), both on the mesh API server (meshapiserver).
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshctl/mesh/internal/controller/admin"
	"github.com/meshctl/mesh/internal/controller/identity"
	"github.com/meshctl/mesh/internal/controller/meshapiserver"
	"github.com/meshctl/mesh/internal/controller/meshconfigwatch"
	"github.com/meshctl/mesh/internal/controller/push"
	"github.com/meshctl/mesh/internal/controller/registry"
	"github.com/meshctl/mesh/internal/controller/servingcert"
	"github.com/meshctl/mesh/internal/controller/webhook"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/promtext"
	"github.com/meshctl/mesh/internal/version"
)

// Options configure a Controller. All but the durations are required.
type Options struct {
	// MeshNamespace is the control plane's namespace, which holds the
	// MeshConfig.
	MeshNamespace string
	// WebhookAddress and AdminAddress are the TCP addresses to listen on,
	// e.g. ":15143"; port 0 picks a free port (see Controller.WebhookAddr).
	WebhookAddress string
	AdminAddress   string
	// WebhookTLSDir holds the webhook's serving certificate as tls.crt and
	// tls.key (a mounted kubernetes.io/tls Secret); changes are picked up.
	WebhookTLSDir string
	// Kube reaches the API server.
	Kube *rest.Config
	// Inject injects one pod for the webhook.
	Inject webhook.Injector
	// TrustDomain names the endpoints' identities in discovery; empty
	// means "cluster.local", the MeshConfig's default.
	TrustDomain string
	// Logger receives the structured logs of every component.
	Logger *slog.Logger
	// ShutdownDelay is how long, once told to stop, the controller keeps
	// serving with readiness failing, so that endpoints stop routing to it
	// before its listeners close. Zero closes at once.
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests after that;
	// zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// MeshAPIAddress, when set, turns on identity issuance and the mesh
	// API (TLS) on that address, e.g. ":15112". IdentityIssuerDir holds the
	// mounted identity Secret (tls.crt, tls.key), TrustAnchorsDir the
	// mounted trust-anchors ConfigMap (ca-bundle.crt); both are re-read
	// when they change.
	MeshAPIAddress    string
	IdentityIssuerDir string
	TrustAnchorsDir   string
	// Clock decides certificate validity; nil means time.Now.
	Clock func() time.Time
}

// DefaultShutdownTimeout covers the longest webhook timeout the API server
// allows (30 s) minus a margin for the pod's termination grace period.
const DefaultShutdownTimeout = 20 * time.Second

// Timeouts of the webhook's HTTP server. The API server's own webhook
// timeout is at most 30 s; a request that has not arrived in full by then
// is of no use to it.
const (
	webhookReadHeaderTimeout = 10 * time.Second
	webhookReadTimeout       = 30 * time.Second
	webhookWriteTimeout      = 30 * time.Second
	webhookIdleTimeout       = 90 * time.Second
	maxHeaderBytes           = 64 << 10
)

// Controller is a control plane process, its listeners bound.
type Controller struct {
	opts      Options
	log       *slog.Logger
	watcher   *meshconfigwatch.Watcher
	cert      *servingcert.Reloader
	admin     *admin.Admin
	webhookLn net.Listener
	adminLn   net.Listener
	webhook   *http.Server
	adminSrv  *http.Server
	kube      *rest.Config
	meshAPI   *meshapiserver.Server
	creds     *identity.Credentials
	registry  *registry.Kube
	push      *push.Server
	// meshSettings and bundle feed the push server what every proxy gets.
	meshSettings chan meshapi.MeshSettings
	bundle       chan meshapi.Bundle
}

// New checks opts, builds the components and binds the listeners, so that
// a port already in use is reported before anything runs. A missing or bad
// certificate is not an error here: the controller is then not ready until
// the files appear.
func New(opts Options) (*Controller, error) {
	switch {
	case opts.MeshNamespace == "":
		return nil, errors.New("starting the controller: the mesh namespace is required")
	case opts.WebhookTLSDir == "":
		return nil, errors.New("starting the controller: the webhook TLS directory is required")
	case opts.Kube == nil:
		return nil, errors.New("starting the controller: no API server configuration")
	case opts.Inject == nil:
		return nil, errors.New("starting the controller: no injector")
	case opts.Logger == nil:
		return nil, errors.New("starting the controller: no logger")
	case opts.MeshAPIAddress != "" && (opts.IdentityIssuerDir == "" || opts.TrustAnchorsDir == ""):
		return nil, errors.New("starting the controller: the mesh API needs the identity issuer and trust anchors directories")
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	kube := rest.CopyConfig(opts.Kube)
	kube.UserAgent = "meshproxy-controller/" + version.Get().Version
	dyn, err := dynamic.NewForConfig(kube)
	if err != nil {
		return nil, fmt.Errorf("building the API client: %w", err)
	}
	clientset, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return nil, fmt.Errorf("building the API client: %w", err)
	}
	c := &Controller{opts: opts, log: opts.Logger, kube: kube,
		meshSettings: make(chan meshapi.MeshSettings), bundle: make(chan meshapi.Bundle)}
	trustDomain := opts.TrustDomain
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	// Discovery: the registry feeds the push server.
	c.registry = registry.NewKube(clientset, trustDomain, opts.Logger.With("component", "discovery"))
	c.push = push.New(push.Options{Logger: opts.Logger.With("component", "push"), Mesh: c.meshSettings, Bundle: c.bundle})
	c.watcher = meshconfigwatch.New(dyn, opts.MeshNamespace, opts.Logger.With("component", "meshconfig"))
	c.cert = servingcert.New(opts.WebhookTLSDir)
	if err := c.cert.Loaded(); err != nil {
		c.log.Warn("webhook certificate not loaded; not ready until it is", "component", "webhook", "error", err)
	}

	metrics := &webhook.Metrics{}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, &webhook.Handler{
		Inject:  opts.Inject,
		Config:  c.watcher.Current,
		Logger:  opts.Logger.With("component", "webhook"),
		Metrics: metrics,
	})
	c.webhook = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.cert.GetCertificate},
		ReadHeaderTimeout: webhookReadHeaderTimeout,
		ReadTimeout:       webhookReadTimeout,
		WriteTimeout:      webhookWriteTimeout,
		IdleTimeout:       webhookIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(opts.Logger.With("component", "webhook").Handler(), slog.LevelWarn),
	}

	c.admin = &admin.Admin{
		Checks: []admin.Check{
			{Name: "meshconfig", Err: c.watcher.Loaded},
			{Name: "webhook certificate", Err: func() error {
				c.cert.Check() // picks up files that appeared since
				return c.cert.Loaded()
			}},
			{Name: "discovery", Err: c.registry.Synced},
		},
		Metrics: []admin.MetricsWriter{buildInfo{}, metrics, c.watcher, certificateExpiry{c.cert}, c.push.Metrics()},
		Logger:  opts.Logger.With("component", "admin"),
	}
	c.adminSrv = &http.Server{
		Handler:           c.admin.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       webhookIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(opts.Logger.With("component", "admin").Handler(), slog.LevelWarn),
	}

	if c.webhookLn, err = net.Listen("tcp", opts.WebhookAddress); err != nil {
		return nil, fmt.Errorf("listening for the webhook: %w", err)
	}
	if c.adminLn, err = net.Listen("tcp", opts.AdminAddress); err != nil {
		c.webhookLn.Close()
		return nil, fmt.Errorf("listening for the admin endpoint: %w", err)
	}
	if opts.MeshAPIAddress != "" {
		checks, metrics, err := c.newMeshAPI()
		if err != nil {
			c.webhookLn.Close()
			c.adminLn.Close()
			return nil, err
		}
		c.admin.Checks = append(c.admin.Checks, checks...)
		c.admin.Metrics = append(c.admin.Metrics, metrics...)
	}
	return c, nil
}

// WebhookAddr and AdminAddr are the bound addresses.
func (c *Controller) WebhookAddr() net.Addr { return c.webhookLn.Addr() }
func (c *Controller) AdminAddr() net.Addr   { return c.adminLn.Addr() }

// Ready reports, as GET /ready does, whether the controller is ready.
func (c *Controller) Ready() error { return c.admin.Ready() }

// Run serves until ctx is done or a component fails, then shuts down in
// order: readiness fails at once; after ShutdownDelay the webhook stops
// accepting and finishes in-flight requests (up to ShutdownTimeout); then
// the watchers and the push server stop, which ends the discovery
// streams, the mesh API finishes its certificate requests, and the admin
// endpoint closes last, so probes are answered throughout. It returns nil after a requested shutdown.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("starting the controller", "version", version.Get().Version, "meshNamespace", c.opts.MeshNamespace,
		"webhookAddress", c.WebhookAddr().String(), "adminAddress", c.AdminAddr().String(), "webhookTLSDir", c.opts.WebhookTLSDir)
	watchCtx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	failed := make(chan error, 6)
	var wg sync.WaitGroup
	goRun := func(name string, run func() error) {
		wg.Go(func() {
			if err := run(); err != nil {
				failed <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	goRun("meshconfig watcher", func() error { return c.watcher.Run(watchCtx) })
	goRun("discovery", func() error { return c.registry.Run(watchCtx, c.push) })
	goRun("push server", func() error { return c.push.Run(watchCtx) })
	goRun("mesh settings", func() error { return c.feedMeshSettings(watchCtx) })
	goRun("admin endpoint", func() error { return serve(c.adminSrv.Serve(c.adminLn)) })
	goRun("webhook", func() error { return serve(c.webhook.ServeTLS(c.webhookLn, "", "")) })
	if c.meshAPI != nil {
		goRun("mesh API", c.meshAPI.Serve)
	}

	var runErr error
	select {
	case <-ctx.Done():
		c.log.Info("shutting down", "delay", c.opts.ShutdownDelay.String())
	case runErr = <-failed:
		c.log.Error("shutting down after a component failed", "error", runErr)
	}
	c.admin.Drain()
	if runErr == nil && c.opts.ShutdownDelay > 0 {
		select {
		case <-time.After(c.opts.ShutdownDelay):
		case runErr = <-failed:
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), c.opts.ShutdownTimeout)
	defer cancel()
	if err := c.webhook.Shutdown(shutdownCtx); err != nil {
		c.log.Warn("in-flight webhook requests did not finish in time", "error", err)
		c.webhook.Close()
	}
	// Discovery streams never finish by themselves: stopping the push
	// server ends them, so that proxies reconnect to another replica at
	// once and the mesh API's shutdown waits only for certificate
	// requests in flight.
	stopWatching()
	if c.meshAPI != nil {
		if err := c.meshAPI.Shutdown(shutdownCtx); err != nil {
			c.log.Warn("mesh API requests did not finish in time", "error", err)
		}
	}
	if err := c.adminSrv.Shutdown(shutdownCtx); err != nil {
		c.adminSrv.Close()
	}
	wg.Wait()
	c.log.Info("stopped")
	return runErr
}

// serve turns the error of a server stopped by Shutdown into nil.
func serve(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type buildInfo struct{}

func (buildInfo) WriteMetrics(w io.Writer) error {
	v := version.Get()
	pw := promtext.NewWriter(w)
	pw.Header("meshctl_controller_build_info", promtext.Gauge, "The controller's build; always 1.")
	pw.SampleInt("meshctl_controller_build_info", 1, "version", v.Version, "commit", v.Commit, "go_version", v.GoVersion)
	return pw.Flush()
}

type certificateExpiry struct{ r *servingcert.Reloader }

func (c certificateExpiry) WriteMetrics(w io.Writer) error {
	var secs int64
	if t := c.r.NotAfter(); !t.IsZero() {
		secs = t.Unix()
	}
	pw := promtext.NewWriter(w)
	pw.Header("meshctl_controller_webhook_certificate_expiry_timestamp_seconds", promtext.Gauge, "Expiry of the webhook's serving certificate in service (Unix time); 0 when none is loaded.")
	pw.SampleInt("meshctl_controller_webhook_certificate_expiry_timestamp_seconds", secs)
	return pw.Flush()
}
