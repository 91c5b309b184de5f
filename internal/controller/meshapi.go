package controller

import (
	"net"

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
	c.meshAPI = srv
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
