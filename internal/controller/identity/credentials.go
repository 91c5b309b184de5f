package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

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
// mounted directories, and re-reads them when the files change, as
// servingcert does: Kubernetes swaps a symlink, so a file's identity, size
// or modification time changes. A set that fails to load (a new issuer not
// yet matched by its key, an issuer that does not chain to the anchors)
// leaves the previous good set in service and is retried at the next
// check. It is safe for concurrent use.
type Credentials struct {
	issuerDir, anchorsDir string
	clock                 pki.Clock

	mu      sync.Mutex
	bundle  *pki.IdentityBundle
	seen    [3]os.FileInfo
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
	paths := c.paths()
	var now [3]os.FileInfo
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			c.lastErr = fmt.Errorf("loading the identity issuer: %w", err)
			return c.lastErr
		}
		now[i] = fi
	}
	if c.seen[0] != nil && unchanged(c.seen[0], now[0]) && unchanged(c.seen[1], now[1]) && unchanged(c.seen[2], now[2]) {
		return c.lastErr
	}
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
	c.seen, c.bundle, c.lastErr = now, b, nil
	return nil
}

func unchanged(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
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
