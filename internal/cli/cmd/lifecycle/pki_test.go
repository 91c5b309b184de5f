package lifecycle

import "github.com/meshctl/mesh/internal/pki"

// pkiSource is the wall clock and crypto/rand: the tests need valid, not
// reproducible, certificates.
func pkiSource() pki.Source { return pki.Source{} }
