package controller

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/meshctl/mesh/internal/controller/admin"
	"github.com/meshctl/mesh/internal/controller/identity"
	"github.com/meshctl/mesh/internal/controller/meshapiserver"
	"github.com/meshctl/mesh/internal/meshapi"
)

// newMeshAPI builds identity issuance and the mesh API server that serves
// it, binds its listener, and returns what joins the admin endpoint.
func (c *Controller) newMeshAPI() ([]admin.Check, []admin.MetricsWriter, error) {
	opts := c.opts
	log := opts.Logger.With("component", "identity")
	creds := identity.NewCredentials(opts.IdentityIssuerDir, opts.TrustAnchorsDir, opts.Clock)
	if err := creds.Loaded(); err != nil {
		log.Warn("identity issuer not loaded; not ready until it is", "error", err)
	}
	reviewer, err := identity.NewTokenReviewer(c.kube)
	if err != nil {
		return nil, nil, err
	}
	metrics := &identity.Metrics{IssuerNotAfter: creds.IssuerNotAfter}
	srv, err := meshapiserver.New(meshapiserver.Options{
		Address:       opts.MeshAPIAddress,
		MeshNamespace: opts.MeshNamespace,
		Credentials:   creds,
		Config:        c.watcher.Current,
		Clock:         opts.Clock,
		Logger:        opts.Logger.With("component", "meshapi"),
	})
	if err != nil {
		return nil, nil, err
	}
	srv.Handle(meshapi.PathCertificate, &identity.Handler{
		Reviewer:    reviewer,
		Credentials: creds,
		Config:      c.watcher.Current,
		Logger:      log,
		Metrics:     metrics,
	})
	srv.Handle(meshapi.PathDiscovery, c.push.Handler())
	c.meshAPI, c.creds = srv, creds
	log.Info("identity issuance on the mesh API", "meshAPIAddress", srv.Addr().String(),
		"identityIssuerDir", opts.IdentityIssuerDir, "trustAnchorsDir", opts.TrustAnchorsDir)
	checks := []admin.Check{
		{Name: "identity issuer", Err: creds.Loaded},
		{Name: "mesh API certificate", Err: srv.Ready},
	}
	return checks, []admin.MetricsWriter{metrics, srv}, nil
}

// MeshAPI is the mesh API server, for components that mount their
// handlers on it (Handle) before Run; nil when Options.MeshAPIAddress is
// empty.
func (c *Controller) MeshAPI() *meshapiserver.Server { return c.meshAPI }

// MeshAPIAddr is the mesh API's bound address; nil when it is off.
func (c *Controller) MeshAPIAddr() net.Addr {
	if c.meshAPI == nil {
		return nil
	}
	return c.meshAPI.Addr()
}

// feedMeshSettings gives the push server the mesh settings and the trust
// bundle, and again whenever they change: the MeshConfig's trust domain,
// and the trust anchors as mounted (an anchor rotation edits the mounted
// ConfigMap, and proxies get the new bundle within a second), and the
// MeshConfig's inbound mTLS mode (spec.mtls.mode), which a workload's own
// configuration overrides.
func (c *Controller) feedMeshSettings(ctx context.Context) error {
	var mesh meshapi.MeshSettings
	var bundle meshapi.Bundle
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if spec, err := c.watcher.Current(); err == nil {
			m := meshapi.MeshSettings{TrustDomain: spec.TrustDomain, InboundMTLS: meshapi.MTLSMode(spec.MTLS.InboundMTLS())}
			if m != mesh && send(ctx, c.meshSettings, m) {
				mesh = m
			}
			if c.creds != nil {
				if b, err := c.creds.Bundle(); err == nil {
					nb := identity.BundleOf(b, spec.TrustDomain)
					if !slices.Equal(nb.Anchors, bundle.Anchors) || nb.TrustDomain != bundle.TrustDomain {
						if send(ctx, c.bundle, nb) {
							bundle = nb
						}
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func send[T any](ctx context.Context, ch chan<- T, v T) bool {
	select {
	case ch <- v:
		return true
	case <-ctx.Done():
		return false
	}
}
