package identity

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Why InsecureSkipVerify with VerifyConnection rather than the standard
// verification or VerifyPeerCertificate:
//
//   - a mesh peer is named by the SPIFFE id in its URI SAN, not by a DNS
//     name, so the standard verification (which checks ServerName) cannot
//     be used as it is, and the pools it takes are fixed per tls.Config
//     while the bundle rotates;
//   - VerifyConnection runs on every handshake, resumed ones included,
//     where VerifyPeerCertificate does not run on resumption. A session
//     ticket from before a bundle rotation is thus checked against the
//     bundle in force, and the expected identity is checked again.
//
// The chain is verified against the current bundle's pool, built once per
// bundle version (Trust), with the clock the Identity was given.

// sessionCacheSize bounds the client sessions kept per (identity, ALPN):
// one per endpoint address is what resumption needs.
const sessionCacheSize = 256

// MeshALPN are the protocols a mesh server accepts, in the server's order
// of preference.
var MeshALPN = []string{meshapi.ALPNHTTP2, meshapi.ALPNHTTP1, meshapi.ALPNOpaque}

type configKey struct{ identity, alpn string }

// tlsConfigs caches the mesh tls.Configs. A config reads the certificate
// and the bundle in force at each handshake (GetClientCertificate,
// GetCertificate, VerifyConnection load them atomically), so one config
// serves every certificate and bundle generation and is built once per
// (identity, ALPN) for the process's life.
type tlsConfigs struct {
	client sync.Map // configKey -> *tls.Config
	server *tls.Config
}

// ClientConfig returns the configuration to dial a meshed endpoint that must
// present expectedIdentity, offering alpn (one of the meshapi.ALPN*
// values; empty offers none). The configuration is cached and shared:
// callers must not change it. Its session cache lets a later connection
// to the same address resume.
func (id *Identity) ClientConfig(expectedIdentity, alpn string) *tls.Config {
	k := configKey{expectedIdentity, alpn}
	if c, ok := id.configs.client.Load(k); ok {
		return c.(*tls.Config)
	}
	c, _ := id.configs.client.LoadOrStore(k, id.newClientConfig(expectedIdentity, alpn))
	return c.(*tls.Config)
}

func (id *Identity) newClientConfig(expectedIdentity, alpn string) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is VerifyConnection's, see above.
		InsecureSkipVerify:   true,
		GetClientCertificate: id.getClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return id.verifyPeer(cs, expectedIdentity, x509.ExtKeyUsageServerAuth)
		},
		ClientSessionCache: &sessionCache{lru: tls.NewLRUClientSessionCache(sessionCacheSize), trust: id.trust},
	}
	if alpn != "" {
		c.NextProtos = []string{alpn}
	}
	return c
}

// ServerConfig returns the configuration of the inbound side: our
// certificate, a client certificate required and verified against the
// bundle (any mesh identity passes here; authorization by identity is the
// caller's, with PeerIdentity), and MeshALPN. The configuration is shared:
// callers must not change it.
func (id *Identity) ServerConfig() *tls.Config {
	return id.configs.server
}

func (id *Identity) newServerConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: id.getCertificate,
		// RequireAnyClientCert asks for and requires a certificate;
		// VerifyConnection verifies it against the bundle in force.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return id.verifyPeer(cs, "", x509.ExtKeyUsageClientAuth)
		},
		NextProtos: MeshALPN,
	}
	// Tickets carry the anchors' generation they were issued under, and
	// one of another generation is declined (a full handshake follows):
	// see sessionCache.
	c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, generationTag(id.trust.load().gen))
		return c.EncryptTicket(cs, ss)
	}
	c.UnwrapSession = func(ticket []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := c.DecryptTicket(ticket, cs)
		if ss == nil || err != nil {
			return ss, err
		}
		tag := generationTag(id.trust.load().gen)
		if !slices.ContainsFunc(ss.Extra, func(e []byte) bool { return bytes.Equal(e, tag) }) {
			return nil, nil
		}
		return ss, nil
	}
	return c
}

// sessionCache is a client session cache bound to the trust anchors: a
// session resumed carries the certificates of its first handshake, and
// VerifyConnection checks those against the bundle in force. After an
// anchor rotation removed the anchor they chain to, resuming would fail
// the connection though both peers hold certificates of the new anchor;
// so a session is only offered under the anchors' generation it was made
// in, and the server side declines tickets of another generation.
//
// A ticket that arrives just as the anchors change may be filed under
// the new generation; the peer's check of its own ticket then catches
// it, unless both sides changed in the same instant.
type sessionCache struct {
	lru   tls.ClientSessionCache
	trust *Trust
}

func (c *sessionCache) key(k string) string {
	return strconv.FormatUint(c.trust.load().gen, 10) + "/" + k
}

func (c *sessionCache) Get(k string) (*tls.ClientSessionState, bool) { return c.lru.Get(c.key(k)) }
func (c *sessionCache) Put(k string, cs *tls.ClientSessionState)     { c.lru.Put(c.key(k), cs) }

// generationTag is the tls.SessionState.Extra entry of a generation,
// prefixed as that field's contract asks.
func generationTag(gen uint64) []byte {
	return strconv.AppendUint([]byte("meshctl.dev/anchors-generation="), gen, 10)
}

// ControllerConfig returns a configuration to reach the controller: the
// server must chain to the bootstrap's anchors (or the bundle's) and
// present the bootstrap's ServerIdentity; our certificate is offered when
// we hold one (the discovery stream needs it, the certificate request
// does not). nextProtos are the HTTP versions to offer ("h2",
// "http/1.1"). A new configuration is returned for each call: HTTP
// transports keep and modify theirs.
func (id *Identity) ControllerConfig(nextProtos ...string) *tls.Config {
	c := id.certificateRequestConfig(nextProtos...)
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if c := id.current(); c != nil {
			return c, nil
		}
		return &tls.Certificate{}, nil // none yet: send no certificate
	}
	return c
}

// certificateRequestConfig is ControllerConfig without a client
// certificate, for certificate requests, which the token authenticates.
// Offering the certificate held would make the request fail whenever the
// controller no longer trusts it: after an anchor rotation that removed
// its anchor too early, the proxy could then not renew until it expired.
func (id *Identity) certificateRequestConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verification is VerifyConnection's, see above
		VerifyConnection:   id.verifyController,
		NextProtos:         append([]string(nil), nextProtos...),
	}
}

// current returns the certificate held if it is valid now.
func (id *Identity) current() *tls.Certificate {
	c := id.cert.Load()
	if c == nil || id.now().After(c.Leaf.NotAfter) {
		return nil
	}
	return c
}

// ErrNoCertificate is returned to a handshake when no valid certificate is
// held: before the first issuance, or after the last one expired.
var ErrNoCertificate = errors.New("identity: no valid certificate held")

func (id *Identity) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := id.current(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

func (id *Identity) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := id.current(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// verifyPeer verifies a mesh peer's chain against the bundle in force and,
// when expected is not empty, that its identity is expected.
func (id *Identity) verifyPeer(cs tls.ConnectionState, expected string, usage x509.ExtKeyUsage) error {
	got, err := id.trust.load().verifyPeer(cs.PeerCertificates, id.now(), usage)
	if err != nil {
		return err
	}
	if expected != "" && got != expected {
		return fmt.Errorf("identity: peer is %q, want %q", got, expected)
	}
	return nil
}

func (id *Identity) verifyController(cs tls.ConnectionState) error {
	v, err := verifyChain(cs.PeerCertificates, id.trust.load().controller, id.now(), x509.ExtKeyUsageServerAuth)
	if err != nil {
		return fmt.Errorf("verifying the controller: %w", err)
	}
	if v.id != id.bootstrap.ServerIdentity {
		return fmt.Errorf("verifying the controller: it is %q, want %q", v.id, id.bootstrap.ServerIdentity)
	}
	return nil
}

// verifyChain verifies a peer's chain (leaf first) against roots at now
// and returns the leaf's SPIFFE id and the window in which the whole
// chain is valid.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) (verified, error) {
	if len(certs) == 0 {
		return verified{}, errors.New("identity: the peer sent no certificate")
	}
	leaf := certs[0]
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return verified{}, fmt.Errorf("identity: verifying the peer's certificate: %w", err)
	}
	id, err := uriSAN(leaf)
	if err != nil {
		return verified{}, err
	}
	v := verified{id: id, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for _, c := range chains[0][1:] {
		if c.NotBefore.After(v.notBefore) {
			v.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(v.notAfter) {
			v.notAfter = c.NotAfter
		}
	}
	return v, nil
}

// PeerIdentity returns the SPIFFE id of the peer of a connection made with
// ClientConfig or ServerConfig (which verified it), or "" when the peer
// sent no certificate or one that does not carry exactly one SPIFFE id.
func PeerIdentity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	id, err := uriSAN(cs.PeerCertificates[0])
	if err != nil {
		return ""
	}
	return id
}
