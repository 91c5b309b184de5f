package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Trust holds the trust bundle that peers and the controller are verified
// against. The x509.CertPools are built once per bundle version, when the
// bundle changes, and read by every handshake through one atomic load:
// building a pool parses nothing but still allocates, and a handshake is
// the data path's hot path.
type Trust struct {
	mu        sync.Mutex // serialises writers; readers only load cur
	bootstrap []*x509.Certificate
	cur       atomic.Pointer[trustState]
	gens      uint64 // generations built, under mu
}

// trustState is one version of the bundle; never changed once stored.
type trustState struct {
	bundle meshapi.Bundle
	// version is the Bundle resource's version from discovery, zero for a
	// bundle that came with a certificate.
	version uint64
	// gen changes with the anchors (not with a version alone): TLS
	// sessions are bound to the generation they were made under.
	gen     uint64
	anchors []*x509.Certificate
	// peers verifies workload certificates: the bundle's anchors.
	peers *x509.CertPool
	// controller verifies the controller: the bootstrap anchors and the
	// bundle's, so that the controller can move to a new anchor while this
	// proxy lives (the bundle came from the controller, authenticated by
	// the bootstrap anchors, so trusting it adds nothing unauthenticated).
	controller *x509.CertPool
	// verified caches the peer chains verified against peers.
	verified  sync.Map // verifiedKey -> verified
	nverified atomic.Int32
}

// newTrust starts from the bootstrap's anchors, which also serve as the
// peer bundle until the controller sends one.
func newTrust(bootstrapPEM []string) (*Trust, error) {
	if len(bootstrapPEM) == 0 {
		return nil, errors.New("bootstrap: trustAnchors: at least one is required")
	}
	t := &Trust{}
	for i, a := range bootstrapPEM {
		c, err := meshapi.ParseAnchor(a)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: trustAnchors[%d]: %w", i, err)
		}
		t.bootstrap = append(t.bootstrap, c)
	}
	t.cur.Store(t.build(meshapi.Bundle{Anchors: slices.Clone(bootstrapPEM)}, 0, t.bootstrap))
	return t, nil
}

func (t *Trust) build(b meshapi.Bundle, version uint64, anchors []*x509.Certificate) *trustState {
	peers := x509.NewCertPool()
	controller := x509.NewCertPool()
	for _, c := range anchors {
		peers.AddCert(c)
		controller.AddCert(c)
	}
	for _, c := range t.bootstrap {
		controller.AddCert(c) // AddCert ignores duplicates
	}
	t.gens++
	return &trustState{bundle: b, version: version, gen: t.gens, anchors: anchors, peers: peers, controller: controller}
}

// SetBundle installs a Bundle resource of the given version from discovery.
// An invalid bundle is refused and the one in force stays (the caller
// NACKs it). Connections already established are not affected; the next
// handshake, and the next resumption, verify against the new bundle.
func (t *Trust) SetBundle(b meshapi.Bundle, version uint64) error {
	return t.set(b, version, true)
}

// setFromCertificate installs the bundle that came with a certificate,
// unless discovery already gave one: discovery's bundle is versioned and
// wins, the certificate's only bootstraps the proxy that has none yet.
func (t *Trust) setFromCertificate(b meshapi.Bundle) error {
	return t.set(b, 0, false)
}

func (t *Trust) set(b meshapi.Bundle, version uint64, fromDiscovery bool) error {
	anchors, err := parseBundle(b)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	if !fromDiscovery && old.version != 0 {
		return nil
	}
	if old.bundle.TrustDomain == b.TrustDomain && slices.Equal(old.bundle.Anchors, b.Anchors) {
		if old.version == version {
			return nil
		}
		// Same anchors under a new version: keep the pools, record the
		// version.
		t.cur.Store(&trustState{bundle: old.bundle, version: version, gen: old.gen, anchors: old.anchors, peers: old.peers, controller: old.controller})
		return nil
	}
	b.Anchors = slices.Clone(b.Anchors)
	t.cur.Store(t.build(b, version, anchors))
	return nil
}

func parseBundle(b meshapi.Bundle) ([]*x509.Certificate, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	anchors := make([]*x509.Certificate, 0, len(b.Anchors))
	for _, a := range b.Anchors {
		c, _ := meshapi.ParseAnchor(a) // Validate parsed each one already
		anchors = append(anchors, c)
	}
	return anchors, nil
}

// Bundle returns the bundle in force and its version.
func (t *Trust) Bundle() (meshapi.Bundle, uint64) {
	s := t.cur.Load()
	return s.bundle, s.version
}

func (t *Trust) load() *trustState { return t.cur.Load() }

// maxVerified bounds the verified-chain cache of one bundle version; past
// it the cache starts over.
const maxVerified = 4096

// verified is a chain verified against the bundle: its leaf's id and the
// window in which every certificate of the chain is valid.
type verified struct {
	id                  string
	notBefore, notAfter time.Time
}

type verifiedKey struct {
	leaf  [sha256.Size]byte
	usage x509.ExtKeyUsage
}

// verifyPeer verifies a peer's chain against the bundle, remembering the
// chains it verified. Chain verification is two ECDSA verifications per
// side (leaf and issuer) of the three a mesh handshake does; a proxy meets
// the same few peer certificates over and over, so a repeat costs a hash
// instead. The handshake itself still verifies the peer's signature with
// the leaf's key, which proves possession. The cache belongs to one
// bundle version, so a rotation starts it empty.
func (s *trustState) verifyPeer(certs []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("identity: the peer sent no certificate")
	}
	k := verifiedKey{sha256.Sum256(certs[0].Raw), usage}
	if e, ok := s.verified.Load(k); ok {
		v := e.(verified)
		if !now.Before(v.notBefore) && !now.After(v.notAfter) {
			return v.id, nil
		}
	}
	v, err := verifyChain(certs, s.peers, now, usage)
	if err != nil {
		return "", err
	}
	if s.nverified.Add(1) > maxVerified {
		s.verified.Clear()
		s.nverified.Store(1)
	}
	s.verified.Store(k, v)
	return v.id, nil
}
