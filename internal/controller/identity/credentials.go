package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/mounted"
	"github.com/meshctl/mesh/internal/pki"
)

// File names of the mounted identity Secret (kubernetes.io/tls) and of the
// trust-anchors ConfigMap, as templates/templates/identity.yaml writes them.
const (
	IssuerCertFile   = "tls.crt"
	IssuerKeyFile    = "tls.key"
	TrustAnchorsFile = "ca-bundle.crt"
)

// Credentials holds the issuer and the trust anchors read from two
// mounted directories, and re-reads them when package mounted says the
// files changed. A set that fails to load (a new issuer not
// yet matched by its key, an issuer that does not chain to the anchors)
// leaves the previous good set in service and is retried at the next
// check. It is safe for concurrent use.
type Credentials struct {
	issuerDir, anchorsDir string
	clock                 pki.Clock

	mu      sync.Mutex
	files   *mounted.Files // the paths, in that order
	bundle  *pki.IdentityBundle
	lastErr error
}

// NewCredentials returns Credentials for the issuer in issuerDir
// (IssuerCertFile, IssuerKeyFile) and the anchors in anchorsDir
// (TrustAnchorsFile), and tries a first load. clock, nil for the wall
// clock, decides validity when loading and is the bundle's clock for
// issuing.
func NewCredentials(issuerDir, anchorsDir string, clock pki.Clock) *Credentials {
	if clock == nil {
		clock = time.Now
	}
	c := &Credentials{issuerDir: issuerDir, anchorsDir: anchorsDir, clock: clock}
	p := c.paths()
	c.files = mounted.New(p[:]...)
	c.Check()
	return c
}

func (c *Credentials) paths() [3]string {
	return [3]string{
		filepath.Join(c.anchorsDir, TrustAnchorsFile),
		filepath.Join(c.issuerDir, IssuerCertFile),
		filepath.Join(c.issuerDir, IssuerKeyFile),
	}
}

// Check re-reads the files if they changed since the last good read and
// returns the error of the last attempt, nil when the set in service is
// the newest. It costs three stat calls when nothing changed.
func (c *Credentials) Check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed, err := c.files.Changed()
	if err != nil {
		c.lastErr = fmt.Errorf("loading the identity issuer: %w", err)
		return c.lastErr
	}
	if !changed {
		return c.lastErr
	}
	paths := c.paths()
	var data [3][]byte
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			c.lastErr = fmt.Errorf("loading the identity issuer: %w", err)
			return c.lastErr
		}
		data[i] = b
	}
	b, err := pki.LoadIdentity(data[0], data[1], data[2], c.clock())
	if err != nil {
		c.lastErr = fmt.Errorf("loading the identity issuer from %s and the trust anchors from %s: %w", c.issuerDir, c.anchorsDir, err)
		return c.lastErr
	}
	b.Source = pki.Source{Clock: c.clock}
	c.files.Accept()
	c.bundle, c.lastErr = b, nil
	return nil
}

// Bundle checks the files and returns the set in service. A returned
// bundle is never modified: a reload replaces it.
func (c *Credentials) Bundle() (*pki.IdentityBundle, error) {
	err := c.Check()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bundle == nil {
		if err == nil {
			err = errors.New("no identity issuer loaded")
		}
		return nil, err
	}
	return c.bundle, nil
}

// Loaded reports, for readiness, whether an issuer is in service and valid
// now, and if not, why.
func (c *Credentials) Loaded() error {
	b, err := c.Bundle()
	if err != nil {
		return err
	}
	return pki.CheckValidity(b.Issuer(), c.clock())
}

// IssuerNotAfter is the expiry of the issuer in service; zero when none
// is.
func (c *Credentials) IssuerNotAfter() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bundle == nil {
		return time.Time{}
	}
	return c.bundle.Issuer().NotAfter
}
