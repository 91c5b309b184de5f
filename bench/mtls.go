package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/proxy/controllertest"
	"github.com/meshctl/mesh/internal/testenv/netns"
	"github.com/meshctl/mesh/internal/wellknown"
)

// The mTLS setups put TLS 1.3 with client certificates between the client
// pod's proxy and the server pod's: meshproxy gets its identity and its
// peers from a controller, HAProxy gets files issued by the same CA.

const trustDomain = "cluster.local"

// Identities of the two pods, as a meshed pod's ServiceAccount makes them.
var (
	clientID = "spiffe://" + trustDomain + "/ns/bench/sa/client"
	serverID = "spiffe://" + trustDomain + "/ns/bench/sa/server"
)

// newCA makes the mesh's identity CA for one run: a trust anchor and an
// issuer, as `meshctl install` makes them.
func newCA() (*pki.IdentityBundle, error) {
	return pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: trustDomain})
}

// meshController is the controller a meshproxy of an mTLS setup talks to:
// internal/proxy/controllertest, which speaks the mesh API's identity and
// discovery contract in full, run in the bench process. It authenticates
// the proxy's token by a table instead of a TokenReview (there is no API
// server here); everything the proxy does with what it gets back — its key,
// CSR, certificate, renewal timers, the discovery stream, the routing table
// and mesh TLS — is the real thing.
//
// Each pod gets its own controller on the pod's loopback, both issuing
// from the run's CA: the pods' network has no route to the bench process,
// and loopback is never intercepted.
type meshController struct {
	ctl *controllertest.Controller
	tb  *controllerTB
}

// startController starts a controller in pod p for the identity id. With
// echo set it also serves the service the client calls: the VIP, and the
// server pod as its one meshed endpoint presenting serverID, its port of
// protocol proto. Inbound mTLS is strict, as HAProxy's verify required.
func startController(p *netns.Pod, ca *pki.IdentityBundle, dir, id string, echo bool, server netip.Addr, proto meshapi.Protocol) (*meshController, error) {
	m := &meshController{tb: &controllerTB{dir: dir}}
	token := "bench-" + p.Name
	err := p.Do(func() (err error) {
		defer m.tb.recover(&err)
		m.ctl = controllertest.New(m.tb, controllertest.Options{
			TrustDomain: trustDomain,
			CA:          ca,
			Tokens:      map[string]string{token: id},
			Lifetime:    24 * time.Hour,
		})
		return nil
	})
	if err != nil {
		m.close()
		return nil, fmt.Errorf("starting the controller of pod %s: %w", p.Name, err)
	}
	m.ctl.SetToken(token)
	// The proxy runs as the proxy user and reads its token itself.
	if err := os.Chown(m.ctl.TokenFile, wellknown.ProxyUID, wellknown.ProxyUID); err != nil {
		m.close()
		return nil, err
	}
	m.ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindMesh, Version: 2, Mesh: &meshapi.MeshSettings{TrustDomain: trustDomain, InboundMTLS: meshapi.MTLSStrict}})
	if echo {
		vip := serviceVIP.String()
		m.ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindService, Name: "bench/echo", Version: 3, Service: &meshapi.Service{
			Namespace: "bench", Name: "echo", Addresses: []string{vip},
			Ports: []meshapi.ServicePort{{Port: servicePort, TargetPort: appPort, Protocol: proto}}}})
		m.ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: "bench/echo", Version: 4, Endpoints: &meshapi.Endpoints{Endpoints: []meshapi.Endpoint{
			{Address: server.String(), Meshed: true, Identity: serverID}}}})
		addr := fmt.Sprintf("%s:%d", vip, servicePort)
		m.ctl.Publish(meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: addr, Version: 5, Resolution: &meshapi.Resolution{Address: addr, Service: "bench/echo"}})
	}
	if err := m.tb.failed(); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

func (m *meshController) close() {
	if m != nil {
		m.tb.close()
	}
}

// controllerTB is the testing.TB that controllertest.New takes, for a
// process that is not a test: Fatal panics (recovered by startController
// into an error), Error records, Cleanup runs at close. The embedded nil
// TB makes any other method panic; controllertest calls none of them.
type controllerTB struct {
	testing.TB
	dir string

	mu       sync.Mutex
	errs     []error
	cleanups []func()
}

type fatal struct{ msg string }

func (c *controllerTB) Helper() {}

func (c *controllerTB) Fatal(args ...any) { panic(fatal{fmt.Sprint(args...)}) }

func (c *controllerTB) Fatalf(format string, args ...any) {
	panic(fatal{fmt.Sprintf(format, args...)})
}

func (c *controllerTB) Error(args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, errors.New(fmt.Sprint(args...)))
}

func (c *controllerTB) Errorf(format string, args ...any) {
	c.Error(fmt.Sprintf(format, args...))
}

func (c *controllerTB) Cleanup(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cleanups = append(c.cleanups, f)
}

func (c *controllerTB) TempDir() string {
	d, err := os.MkdirTemp(c.dir, "controller-")
	if err == nil {
		// The proxy user reads the token file in it.
		err = os.Chmod(d, 0o755)
	}
	if err != nil {
		c.Fatal(err)
	}
	return d
}

func (c *controllerTB) recover(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(fatal)
		if !ok {
			panic(r)
		}
		*err = errors.New(f.msg)
	}
}

func (c *controllerTB) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}

func (c *controllerTB) close() {
	c.mu.Lock()
	fs := c.cleanups
	c.cleanups = nil
	c.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// haproxyCerts writes what an HAProxy of an mTLS setup needs into dir: its
// certificate for id with the issuer's, and its key, in one PEM file
// (crt), and the trust anchors (ca). The key is the same kind the mesh's
// proxies make (ECDSA P-256), issued by the same issuer.
func haproxyCerts(ca *pki.IdentityBundle, dir, id string) (crt, anchors string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	wc, err := ca.IssueServer(key.Public(), id, nil, 24*time.Hour)
	if err != nil {
		return "", "", fmt.Errorf("issuing HAProxy's certificate: %w", err)
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		return "", "", err
	}
	crt, anchors = filepath.Join(dir, "tls.pem"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(crt, append(append([]byte{}, wc.ChainPEM...), keyPEM...), 0o600); err != nil {
		return "", "", err
	}
	if err := os.Chown(crt, wellknown.ProxyUID, wellknown.ProxyUID); err != nil {
		return "", "", err
	}
	return crt, anchors, os.WriteFile(anchors, ca.TrustAnchorsPEM, 0o644)
}
