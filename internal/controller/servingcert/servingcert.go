// Package servingcert serves a TLS certificate kept in a directory of files,
// tls.crt and tls.key, as Kubernetes mounts a Secret of type
// kubernetes.io/tls, and picks up a new pair when the files change.
//
// The pair is re-read when package mounted says either file changed. A pair that fails to
// load (say, read between the two writes of a non-atomic update) leaves the
// previous good pair in service and is retried on the next check.
package servingcert

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/mounted"
)

// File names in the directory, the keys of a kubernetes.io/tls Secret.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Reloader holds the current pair of one directory. It is safe for
// concurrent use.
type Reloader struct {
	dir string

	mu       sync.Mutex
	files    *mounted.Files // CertFile and KeyFile
	cert     *tls.Certificate
	notAfter time.Time
	lastErr  error
}

// New returns a Reloader for dir and tries a first load; the error of that
// load is also what Err reports until a pair loads.
func New(dir string) *Reloader {
	r := &Reloader{dir: dir, files: mounted.New(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))}
	r.Check()
	return r
}

// Check re-reads the pair if the files changed since the last read and
// returns the error of the last attempt, nil when the current pair is good.
// The caller decides how often to check; GetCertificate checks on every
// handshake, which costs two stat calls.
func (r *Reloader) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed, err := r.files.Changed()
	if err != nil {
		r.lastErr = fmt.Errorf("loading the serving certificate: %w", err)
		return r.lastErr
	}
	if !changed {
		return r.lastErr
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(r.dir, CertFile), filepath.Join(r.dir, KeyFile))
	if err != nil {
		r.lastErr = fmt.Errorf("loading the serving certificate from %s: %w", r.dir, err)
		return r.lastErr
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		r.lastErr = fmt.Errorf("parsing the serving certificate in %s: %w", r.dir, err)
		return r.lastErr
	}
	pair.Leaf = leaf
	// Only a good read is remembered, so a failed one is retried.
	r.files.Accept()
	r.cert, r.notAfter, r.lastErr = &pair, leaf.NotAfter, nil
	return nil
}

// GetCertificate is a tls.Config.GetCertificate that serves the current
// pair, checking the files first.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	err := r.Check()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert == nil {
		return nil, err
	}
	return r.cert, nil
}

// Loaded reports whether a pair is in service and, if not, why.
func (r *Reloader) Loaded() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert == nil {
		if r.lastErr != nil {
			return r.lastErr
		}
		return fmt.Errorf("no serving certificate loaded from %s", r.dir)
	}
	return nil
}

// NotAfter is the expiry of the pair in service; zero when none is.
func (r *Reloader) NotAfter() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notAfter
}
